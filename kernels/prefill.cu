// Helpers of the prefill step (T > 1 tokens): the bf16 operand of a cuBLAS GEMM, and the append of a
// chunk's k / v rows to the KV caches. Parameters: GemmPrologueParams, KvAppendParams
// (kernels/params.cuh).
//
// gemm_prologue_f32: cuBLAS's tensor-core GEMM takes both operands in bf16, while braid's activations
//   are f32. One block per row r < m writes xb[r, :] = bf16(prologue(x[r, :])), the prologue as the
//   GEMV kernels compute it (kernels/gemv.cu): pro 0 x as is, pro 1 rms_norm(x, norm_w, eps) (HF
//   Qwen3RMSNorm, in f32), pro 2 silu(x[r, :k]) * x[r, k:2k] (HF Qwen3MLP's SwiGLU). With a residual,
//   the block also copies resid's row (row 0 of a one-row bias) into the GEMM's output c, which the
//   GEMM then adds to (beta = 1): c = x · Wᵀ + resid. The bf16 rounding of x is the one difference
//   from the interpreter's f32 arithmetic (relative error ~2^-9 per element, as transformers' bf16).
// kv_append_{bf16,f16,f32}: cache rows pos + i (i < t) = the chunk's k / v rows i, rounded to the
//   cache dtype (as the decode attention kernel stores its row, and as braid_ir::interp stores it).
//   Grid-stride over t * row elements.

#include "common.cuh"

extern "C" __global__ void gemm_prologue_f32(const GemmPrologueParams p) {
    __shared__ float scratch[32];
    pdl_wait();
    pdl_launch();
    const int r = blockIdx.x;
    if (r >= p.m) return;
    const int k = p.k;
    const float* __restrict__ xr = p.x + (size_t)r * (p.pro == 2 ? 2 * k : k);
    u16* __restrict__ xb = (u16*)p.xb + (size_t)r * k;
    float inv = 1.0f;
    if (p.pro == 1) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < k; i += blockDim.x) ss += xr[i] * xr[i];
        ss = block_sum(ss, scratch);
        inv = 1.0f / sqrtf(ss / (float)k + p.eps);
    }
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        float v;
        if (p.pro == 1) {
            v = p.norm_w[i] * (xr[i] * inv);
        } else if (p.pro == 2) {
            v = silu_f32(xr[i]) * xr[k + i];
        } else {
            v = xr[i];
        }
        xb[i] = f32_to_bf16(v);
    }
    if (p.resid != nullptr) {
        const float* __restrict__ rr = p.resid + (size_t)(p.resid_rows == 1 ? 0 : r) * p.n;
        float* __restrict__ cr = p.c + (size_t)r * p.n;
        for (int i = threadIdx.x; i < p.n; i += blockDim.x) cr[i] = rr[i];
    }
}

template <typename CT>
__device__ __forceinline__ void kv_append_impl(const KvAppendParams& p) {
    typedef typename CT::T T;
    T* __restrict__ kc = (T*)p.kc;
    T* __restrict__ vc = (T*)p.vc;
    pdl_wait();
    pdl_launch();
    const int p0 = max(*p.pos, 0);
    const long long total = (long long)p.t * p.row;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(i / p.row), e = (int)(i % p.row);
        const int at = p0 + t;
        if (at >= p.max_ctx) continue;
        kc[(size_t)at * p.row + e] = CT::from_f32(p.k[(size_t)t * p.k_ld + e]);
        vc[(size_t)at * p.row + e] = CT::from_f32(p.v[(size_t)t * p.v_ld + e]);
    }
}

#define KV_APPEND_KERNEL(SUFFIX, CT) \
    extern "C" __global__ void kv_append_##SUFFIX(const KvAppendParams p) { kv_append_impl<CT>(p); }

KV_APPEND_KERNEL(bf16, BF16)
KV_APPEND_KERNEL(f16, F16)
KV_APPEND_KERNEL(f32, F32)

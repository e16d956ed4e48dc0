// Causal prefill attention (T query tokens) with GQA over a KV cache: flash-style tiles with an
// online softmax in f32. Parameters: PrefillAttentionParams (kernels/params.cuh).
//
// Inputs: q [t, h, D] f32 (after rope; token i at q + i * q_ld), the caches k_cache / v_cache
// [max_ctx, kvh, D] in bf16, f16 or f32, which already hold this chunk's rows (kv_append in
// kernels/prefill.cu runs first), and the first token's position p read from device memory. Query
// token i (position p + i) attends over cache rows 0 ..= p + i: a bottom-right-aligned causal mask,
// so a chunk may follow tokens already in the cache. Query head j uses KV head j / (h / kvh) (HF
// repeat_kv); scores are scaled by `scale` (HF: head_dim^-0.5). Output [t, h, D] f32:
// softmax(scale · q · K[0..=p+i]ᵀ) · V[0..=p+i] per token and head (HF eager_attention_forward; the
// reference is braid_ir::interp). Everything after the cache load is f32, as the interpreter.
//
// Grid (ceil(t / BQ), kvh), PA_THREADS = 128 threads. A block takes BQ = PA_ROWS / GM consecutive
// tokens of one KV head and its g = h / kvh query heads: PA_ROWS = 64 query rows (row r is token
// t0 + r / g, head kh * g + r % g; rows past the chunk's end are padding), held in shared memory
// pre-scaled by scale · log2(e). It walks the cache in tiles of PA_KEYS = 32 rows, from row 0 to the
// block's last token's row, each tile converted to f32 in shared memory. Threads are a 16 x 8 grid:
// thread (ty, tx) holds query rows 4 ty .. 4 ty + 3 and, of each tile, keys tx + 8 j (j < 4), so
// neither the q nor the k reads of a warp conflict in shared-memory banks. Per tile:
//   S = Q · Kᵀ (4 x 4 scores per thread), keys past a row's position masked to -inf;
//   online softmax per row (m = running max, l = running sum; the 8 threads of a row reduce with
//   shuffles): P = exp2(S - m_new), acc *= exp2(m_old - m_new);
//   acc += P · V (the same thread keeps the same 4 rows, columns (c * 8 + tx) * VEC ..).
// The output is acc / l. Blocks are issued last tile first: the heaviest (latest tokens, most
// keys) start first. No partials cross blocks: the result does not depend on timing.
//
// PDL: nothing is read before pdl_wait() (q and the chunk's cache rows come from earlier kernels).

#include "common.cuh"

#ifndef PA_D
#error "attention_prefill.cu is compiled one variant at a time: the host defines PA_SUFFIX, PA_CT, PA_D, PA_GM"
#endif
#define PA_LOG2E 1.4426950408889634f

__device__ __forceinline__ float pa_lane(const float4& v, int i) {
    return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

// VEC consecutive floats of shared memory (16- or 8-byte aligned) into registers.
template <int VEC>
__device__ __forceinline__ void pa_load(const float* p, float* out) {
    if constexpr (VEC == 4) {
        const float4 v = *reinterpret_cast<const float4*>(p);
        out[0] = v.x;
        out[1] = v.y;
        out[2] = v.z;
        out[3] = v.w;
    } else if constexpr (VEC == 2) {
        const float2 v = *reinterpret_cast<const float2*>(p);
        out[0] = v.x;
        out[1] = v.y;
    } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] = p[i];
    }
}

template <typename CT, int D, int GM>
__device__ __forceinline__ void prefill_attention_impl(const PrefillAttentionParams& p) {
    constexpr int BQ = PA_ROWS / GM;          // tokens per block
    constexpr int QS = D + 4;                 // row stride of the q / k / v tiles (floats)
    constexpr int PS = PA_KEYS + 4;           // row stride of the probability tile
    constexpr int VEC = D >= 32 ? 4 : D / 8;  // contiguous output columns per chunk
    constexpr int NC = D / (8 * VEC);         // chunks per thread
    constexpr int EPT = NC * VEC;             // output columns per thread
    constexpr int KJ = PA_KEYS / 8;           // keys per thread per tile
    constexpr int CV = CT::VEC;               // cache elements per 16-byte load
    static_assert(PA_THREADS == 128 && PA_ROWS == 64 && PA_KEYS == 32,
                  "the thread layout assumes 16 x 8 threads, 4 rows and 4 keys each");
    static_assert(D % 16 == 0 && D % CV == 0, "head_dim must be a multiple of 16");
    typedef typename CT::T T;

    extern __shared__ float4 pa_smem4[];
    float* sq = reinterpret_cast<float*>(pa_smem4);  // [PA_ROWS][QS]
    float* sk = sq + PA_ROWS * QS;                    // [PA_KEYS][QS]
    float* sv = sk + PA_KEYS * QS;                    // [PA_KEYS][QS]
    float* sp = sv + PA_KEYS * QS;                    // [PA_ROWS][PS]

    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3;
    const int g = p.h / p.kvh;
    const int tile = gridDim.x - 1 - blockIdx.x;
    const int kh = blockIdx.y;
    const int t0 = tile * BQ;
    const T* __restrict__ kc = (const T*)p.kc;
    const T* __restrict__ vc = (const T*)p.vc;
    const size_t rs = (size_t)p.kvh * D;

    pdl_wait();
    pdl_launch();
    const int pos = max(*p.pos, 0);
    const int ntok = min(BQ, p.t - t0);
    const int rows = ntok * g;
    const float qscale = p.scale * PA_LOG2E;
    for (int i = tid; i < PA_ROWS * D; i += PA_THREADS) {
        const int r = i / D, e = i - r * D;
        float v = 0.0f;
        if (r < rows) {
            const int t = t0 + r / g, head = kh * g + r % g;
            v = p.q[(size_t)t * p.q_ld + (size_t)head * D + e] * qscale;
        }
        sq[r * QS + e] = v;
    }

    int limit[4];  // the last cache row each of this thread's rows attends (-1: a padding row)
    float m[4], l[4], acc[4][EPT];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = ty * 4 + i;
        limit[i] = r < rows ? pos + t0 + r / g : -1;
        m[i] = -BRAID_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPT; ++e) acc[i][e] = 0.0f;
    }
    const int last_key = pos + t0 + ntok - 1;
    const int ntiles = last_key / PA_KEYS + 1;
    for (int kt = 0; kt < ntiles; ++kt) {
        const int k0 = kt * PA_KEYS;
        __syncthreads();  // q is stored; the previous tile's k, v and p are no longer read
        for (int i = tid; i < PA_KEYS * (D / CV); i += PA_THREADS) {
            const int c = i / (D / CV), e = (i - c * (D / CV)) * CV;
            const int key = k0 + c;
            float kf[CV], vf[CV];
            if (key <= last_key) {
                const size_t at = (size_t)key * rs + (size_t)kh * D + e;
                CT::unpack(*reinterpret_cast<const uint4*>(kc + at), kf);
                CT::unpack(*reinterpret_cast<const uint4*>(vc + at), vf);
            } else {
#pragma unroll
                for (int j = 0; j < CV; ++j) {
                    kf[j] = 0.0f;
                    vf[j] = 0.0f;
                }
            }
#pragma unroll
            for (int j = 0; j < CV; j += 4) {
                *reinterpret_cast<float4*>(sk + c * QS + e + j) = make_float4(kf[j], kf[j + 1], kf[j + 2], kf[j + 3]);
                *reinterpret_cast<float4*>(sv + c * QS + e + j) = make_float4(vf[j], vf[j + 1], vf[j + 2], vf[j + 3]);
            }
        }
        __syncthreads();

        // Scores of rows 4 ty + i with keys k0 + tx + 8 j.
        float s[4][KJ];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < KJ; ++j) s[i][j] = 0.0f;
#pragma unroll 4
        for (int e = 0; e < D; e += 4) {
            float4 k4[KJ];
#pragma unroll
            for (int j = 0; j < KJ; ++j) k4[j] = *reinterpret_cast<const float4*>(sk + (tx + 8 * j) * QS + e);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float4 q4 = *reinterpret_cast<const float4*>(sq + (ty * 4 + i) * QS + e);
#pragma unroll
                for (int j = 0; j < KJ; ++j) {
                    float a = s[i][j];
                    a = fmaf(q4.x, k4[j].x, a);
                    a = fmaf(q4.y, k4[j].y, a);
                    a = fmaf(q4.z, k4[j].z, a);
                    a = fmaf(q4.w, k4[j].w, a);
                    s[i][j] = a;
                }
            }
        }

        // Causal mask, then the online-softmax update of each row.
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float mx = -BRAID_INF;
#pragma unroll
            for (int j = 0; j < KJ; ++j) {
                if (k0 + tx + 8 * j > limit[i]) s[i][j] = -BRAID_INF;
                mx = fmaxf(mx, s[i][j]);
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m[i], mx);
            const bool none = mn == -BRAID_INF;  // no key yet: a padding row
            const float corr = none ? 1.0f : exp2f(m[i] - mn);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < KJ; ++j) {
                const float pe = none ? 0.0f : exp2f(s[i][j] - mn);
                sp[(ty * 4 + i) * PS + tx + 8 * j] = pe;
                sum += pe;
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            l[i] = l[i] * corr + sum;
#pragma unroll
            for (int e = 0; e < EPT; ++e) acc[i][e] *= corr;
            m[i] = mn;
        }
        __syncwarp();  // a row's probabilities are written and read by the same 8 lanes

        // acc += P · V.
#pragma unroll 2
        for (int kk = 0; kk < PA_KEYS; kk += 4) {
            float4 p4[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) p4[i] = *reinterpret_cast<const float4*>(sp + (ty * 4 + i) * PS + kk);
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const float* vr = sv + (kk + u) * QS;
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    float vv[VEC];
                    pa_load<VEC>(vr + (c * 8 + tx) * VEC, vv);
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const float pu = pa_lane(p4[i], u);
#pragma unroll
                        for (int w = 0; w < VEC; ++w) acc[i][c * VEC + w] = fmaf(pu, vv[w], acc[i][c * VEC + w]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = ty * 4 + i;
        if (r >= rows) continue;
        const int t = t0 + r / g, head = kh * g + r % g;
        const float inv = 1.0f / l[i];
        float* o = p.out + ((size_t)t * p.h + head) * D;
#pragma unroll
        for (int c = 0; c < NC; ++c)
#pragma unroll
            for (int w = 0; w < VEC; ++w) o[(c * 8 + tx) * VEC + w] = acc[i][c * VEC + w] * inv;
    }
}

// PA_KERNEL_ expands its arguments first, so the variant comes from the -D macros the host passes
// (crates/backend-cuda/src/lower/attention.rs `prefill_kernel`).
#define PA_KERNEL(SUFFIX, CT, D, GM) PA_KERNEL_(SUFFIX, CT, D, GM)
#define PA_KERNEL_(SUFFIX, CT, D, GM)                                                              \
    extern "C" __global__ void __launch_bounds__(PA_THREADS)                                         \
        attention_prefill_##SUFFIX##_d##D##_g##GM(const PrefillAttentionParams p) {                \
        prefill_attention_impl<CT, D, GM>(p);                                                        \
    }

PA_KERNEL(PA_SUFFIX, PA_CT, PA_D, PA_GM)

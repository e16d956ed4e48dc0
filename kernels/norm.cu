// Row-wise norms and rotary embeddings over f32 rows. Parameters: RmsNormParams / NormRopeParams
// (kernels/params.cuh).
//
// rms_norm_f32: out = w * x / sqrt(mean(x²) + eps) per row of x [rows, d] (HF Qwen3RMSNorm), with
//   w f32 [d]. One warp per row, 8 warps per block.
// norm_rope_f32: optional rms_norm then optional rotary embedding (HF apply_rotary_pos_emb, default
//   rope type, rotate-half layout) of up to two tensors in one launch: rows [0, rows1) of x1 and rows
//   [0, rows2) of x2, both [rows, d] with d even. Row r is head r % heads of token r / heads (read at
//   x + (r / heads) * ld + (r % heads) * d, so a strided view of a wider tensor works too), rotated at
//   position pos + r / heads: one token for a decode step (heads = rows), T tokens at consecutive
//   positions for a prefill chunk [T, heads, d]. Serves `rope` (one tensor, no norm) and
//   `fused_qk_norm_rope` (q and k, both normed). The frequencies inv_freq_i = 1 / theta^(2i/d) come as
//   a table [d/2] computed on the host in f32 as HF (and braid_ir::interp) compute them; angle =
//   pos * inv_freq_i in f32. The position is read from device memory.

#include "common.cuh"

extern "C" __global__ void rms_norm_f32(const RmsNormParams p) {
    const float* __restrict__ x = p.x;
    const float* __restrict__ w = p.w;
    float* __restrict__ out = p.out;
    const int rows = p.rows, d = p.d;
    const float eps = p.eps;
    pdl_wait();
    pdl_launch();
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const float* xr = x + (size_t)row * d;
    float* o = out + (size_t)row * d;
    float ss = 0.0f;
    for (int i = lane; i < d; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)d + eps);
    for (int i = lane; i < d; i += 32) o[i] = w[i] * (xr[i] * inv);
}

__device__ __forceinline__ void norm_rope_row(const float* __restrict__ xr, const float* __restrict__ w,
                                              float* __restrict__ o, int d, float eps, int do_norm,
                                              int do_rope, float pos, const float* __restrict__ inv_freq) {
    const int lane = threadIdx.x & 31;
    const int half = d / 2;
    float inv = 1.0f;
    if (do_norm) {
        float ss = 0.0f;
        for (int i = lane; i < d; i += 32) ss += xr[i] * xr[i];
        ss = warp_sum(ss);
        inv = 1.0f / sqrtf(ss / (float)d + eps);
    }
    for (int i = lane; i < half; i += 32) {
        float a = xr[i], b = xr[i + half];
        if (do_norm) {
            a = w[i] * (a * inv);
            b = w[i + half] * (b * inv);
        }
        if (do_rope) {
            const float angle = pos * inv_freq[i];
            float s, c;
            sincosf(angle, &s, &c);
            o[i] = a * c - b * s;
            o[i + half] = b * c + a * s;
        } else {
            o[i] = a;
            o[i + half] = b;
        }
    }
}

extern "C" __global__ void norm_rope_f32(const NormRopeParams p) {
    pdl_wait();
    pdl_launch();
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int d = p.d;
    const float at = p.do_rope ? (float)max(*p.pos, 0) : 0.0f;
    if (row < p.rows1) {
        const int tok = row / p.heads1, head = row % p.heads1;
        norm_rope_row(p.x1 + (size_t)tok * p.ld1 + (size_t)head * d, p.w1, p.out1 + (size_t)row * d, d, p.eps,
                      p.do_norm, p.do_rope, at + (float)tok, p.inv_freq);
    } else if (row < p.rows1 + p.rows2) {
        const int r = row - p.rows1;
        const int tok = r / p.heads2, head = r % p.heads2;
        norm_rope_row(p.x2 + (size_t)tok * p.ld2 + (size_t)head * d, p.w2, p.out2 + (size_t)r * d, d, p.eps,
                      p.do_norm, p.do_rope, at + (float)tok, p.inv_freq);
    }
}

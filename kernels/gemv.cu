// Batch-1 matrix-vector products `y[m] = prologue(x[m]) · Wᵀ (+ residual[m])` with W [n, k] stored
// row-major as in HF `nn.Linear` (bf16, f16 or f32), f32 activations and f32 accumulation.
//
// One kernel family per weight dtype serves matmul, fused_rms_norm_matmul, fused_matmul_add and
// fused_gated_mlp through a runtime `pro` (prologue) argument and a nullable `resid` (epilogue):
//   pro 0: x [m, k] as is;
//   pro 1: rms_norm(x [m, k], norm_w [k], eps) (HF Qwen3RMSNorm);
//   pro 2: silu(x[m, :k]) * x[m, k:2k] with x [m, 2k] (the SwiGLU of HF Qwen3MLP);
// resid [m, n] (nullable) is added to the result. Grid (blocks, m), 256 threads = 8 warps; each lane
// reads 16-byte weight vectors and dots them with the matching x elements; warp shuffles (and shared
// memory when several warps share a row) reduce a row. The host picks the variant
// (crates/backend-cuda/src/lower/gemv.rs):
//   gemv_direct4: each lane reads its own x elements from global memory (L1); `wpr` warps share a row
//     (narrow matrices), 4 vectors per lane in flight; no block barrier except for the norm weights.
//   gemv_direct2: two rows per warp, both in flight, for matrices with more rows than a wave of warps;
//     gemv_direct2_glu pairs gate row j with up row i + j and writes silu(gate) * up (a SwiGLU epilogue).
//   gemv (staged): the prologue's x staged once per block in shared memory; for tall matrices (an LM
//     head) whose warps each walk many rows; gemv_argmax also picks the argmax of its output.
//   gemv_scalar: any k and alignment.
// PDL: every variant loads its first weight vectors before `pdl_wait()` (weights never change during
// a step), so weight traffic overlaps the tail of the previous kernel.
// L2 prefetch (optional, off by default): [pf, pf + pf_bytes) is split between the blocks and pulled
// into L2 first (common.cuh), for the weights of a later kernel.

#include "common.cuh"

#define GEMV_U 8

// Stages the prologue output for x row `m` into xs. With `planar`, element i of 16-byte chunk c
// (VEC elements per chunk) goes to plane (i % VEC) / 4 at float offset c * 4 + i % 4: each lane's two
// float4 reads of a chunk are then contiguous across the warp (no shared-memory bank conflicts).
template <int VEC>
__device__ __forceinline__ void gemv_stage_x(const float* __restrict__ x, const float* __restrict__ norm_w,
                                             float* xs, float* scratch, int m, int k, int pro, float eps,
                                             bool planar) {
    const int kv = k / VEC;
    const float* xr = x + (size_t)m * (pro == 2 ? 2 * k : k);
    float inv = 1.0f;
    if (pro == 1) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < k; i += blockDim.x) ss += xr[i] * xr[i];
        ss = block_sum(ss, scratch);
        inv = 1.0f / sqrtf(ss / (float)k + eps);
    }
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        float v;
        if (pro == 1) {
            v = norm_w[i] * (xr[i] * inv);
        } else if (pro == 2) {
            v = silu_f32(xr[i]) * xr[k + i];
        } else {
            v = xr[i];
        }
        int at = i;
        if (planar) {
            const int c = i / VEC, r = i % VEC;
            at = (r >> 2) * (kv * 4) + c * 4 + (r & 3);
        }
        xs[at] = v;
    }
}

template <typename WT>
__device__ __forceinline__ float gemv_dot_chunk(const uint4& v, const float* xs, int c, int kv) {
    float wv[WT::VEC];
    WT::unpack(v, wv);
    const float4 a = *reinterpret_cast<const float4*>(xs + c * 4);
    float s = wv[0] * a.x;
    s = fmaf(wv[1], a.y, s);
    s = fmaf(wv[2], a.z, s);
    s = fmaf(wv[3], a.w, s);
    if (WT::VEC == 8) {
        const float4 b = *reinterpret_cast<const float4*>(xs + kv * 4 + c * 4);
        s = fmaf(wv[4], b.x, s);
        s = fmaf(wv[5], b.y, s);
        s = fmaf(wv[6], b.z, s);
        s = fmaf(wv[7], b.w, s);
    }
    return s;
}

// Vectorized path: k % WT::VEC == 0 and W 16-byte aligned. ARGMAX (gemv_argmax_*; one x row): also
// am_out[0] = argmax(y) over the n outputs (argmax_finish, common.cuh; am_v / am_i hold a partial per
// block, am_counter starts at 0), the greedy pick after an LM head without a launch of its own.
template <typename WT, bool ARGMAX>
__device__ __forceinline__ void gemv_vec(const typename WT::T* __restrict__ w, const float* __restrict__ x,
                                         const float* __restrict__ norm_w, const float* __restrict__ resid,
                                         float* __restrict__ y, int n, int k, int pro, float eps, int wpr,
                                         const void* pf, unsigned long long pf_bytes, int* __restrict__ am_out,
                                         float* __restrict__ am_v, int* __restrict__ am_i,
                                         unsigned* __restrict__ am_counter) {
    extern __shared__ float smem[];
    float* scratch = smem;
    float* red = smem + 32;  // [2][GEMV_WARPS] row partials, double-buffered across row groups
    float* xs = smem + 48;
    l2_prefetch_share(pf, pf_bytes);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int rpb = nw / wpr;  // rows per block per group
    const int kv = k / WT::VEC;
    const int m = blockIdx.y;
    const int part = warp % wpr;
    const int rib = warp / wpr;
    const int seg = 32 * wpr;  // chunks per warp-interleaved step
    const uint4* w4 = reinterpret_cast<const uint4*>(w);

    // Weights never change during a step: fetch the first row's first vectors before waiting on the
    // producer of x. `v` then always holds the next batch to multiply (loaded one batch ahead).
    int grp = blockIdx.x;
    uint4 v[GEMV_U];
    {
        const int row = grp * rpb + rib;
        if (row < n) {
            const uint4* wr = w4 + (size_t)row * kv;
#pragma unroll
            for (int u = 0; u < GEMV_U; ++u) {
                const int c = part * 32 + lane + u * seg;
                if (c < kv) v[u] = ld_stream(wr + c);
            }
        }
    }
    pdl_wait();
    gemv_stage_x<WT::VEC>(x, norm_w, xs, scratch, m, k, pro, eps, true);
    __syncthreads();
    pdl_launch();

    float bv = -BRAID_INF;  // ARGMAX: this lane's best (value, row)
    int bi = ARGMAX_NONE;
    int buf = 0;
    for (; grp * rpb < n; grp += gridDim.x) {
        const int row = grp * rpb + rib;
        float acc = 0.0f;
        if (row < n) {
            const uint4* wr = w4 + (size_t)row * kv;
            for (int base = 0;;) {
#pragma unroll
                for (int u = 0; u < GEMV_U; ++u) {
                    const int c = base + part * 32 + lane + u * seg;
                    if (c < kv) acc += gemv_dot_chunk<WT>(v[u], xs, c, kv);
                }
                base += GEMV_U * seg;
                if (base >= kv) break;
#pragma unroll
                for (int u = 0; u < GEMV_U; ++u) {
                    const int c = base + part * 32 + lane + u * seg;
                    if (c < kv) v[u] = ld_stream(wr + c);
                }
            }
        }
        // Start the next row group's loads before reducing this one.
        const int next = (grp + gridDim.x) * rpb + rib;
        if (next < n) {
            const uint4* wn = w4 + (size_t)next * kv;
#pragma unroll
            for (int u = 0; u < GEMV_U; ++u) {
                const int c = part * 32 + lane + u * seg;
                if (c < kv) v[u] = ld_stream(wn + c);
            }
        }
        acc = warp_sum(acc);
        if (wpr > 1) {
            if (lane == 0) red[buf * GEMV_WARPS + warp] = acc;
            __syncthreads();
            acc = 0.0f;
            if (part == 0 && lane == 0) {
                for (int i = 0; i < wpr; ++i) acc += red[buf * GEMV_WARPS + warp + i];
            }
            buf ^= 1;
        }
        if (part == 0 && lane == 0 && row < n) {
            const size_t o = (size_t)m * n + row;
            const float r = resid != nullptr ? acc + resid[o] : acc;
            y[o] = r;
            if (ARGMAX) argmax_pick(bv, bi, r, row);
        }
    }
    if (ARGMAX) {
        __shared__ float sv[32];
        __shared__ int si[32];
        argmax_finish(bv, bi, sv, si, am_v, am_i, am_counter, am_out);
    }
}

// x element chunk c (VEC elements starting at c * VEC) of x row m after the prologue, read straight
// from global memory (L1-cached: every warp of a block reads the same x).
template <int VEC>
__device__ __forceinline__ void gemv_x_chunk(const float* __restrict__ xr, const float* __restrict__ norm_w, int c,
                                             int k, int pro, float inv, float* o) {
    const float4* x4 = reinterpret_cast<const float4*>(xr + c * VEC);
#pragma unroll
    for (int h = 0; h < VEC / 4; ++h) {
        float4 a = __ldg(x4 + h);
        if (pro == 1) {
            const float4 g = reinterpret_cast<const float4*>(norm_w + c * VEC)[h];
            a = make_float4(g.x * (a.x * inv), g.y * (a.y * inv), g.z * (a.z * inv), g.w * (a.w * inv));
        } else if (pro == 2) {
            const float4 u = __ldg(reinterpret_cast<const float4*>(xr + k + c * VEC) + h);
            a = make_float4(silu_f32(a.x) * u.x, silu_f32(a.y) * u.y, silu_f32(a.z) * u.z, silu_f32(a.w) * u.w);
        }
        o[4 * h] = a.x;
        o[4 * h + 1] = a.y;
        o[4 * h + 2] = a.z;
        o[4 * h + 3] = a.w;
    }
}

// 1 / sqrt(mean(x²) + eps) over x [k] (k % 4 == 0, 16-byte aligned), computed by each warp on its
// own (no block barrier). Each lane requests GEMV_SS float4 of x before adding any, so k up to
// 128 GEMV_SS costs one round trip to L2 (a plain loop is unrolled by 4: two round trips at k 1024).
#define GEMV_SS 8
__device__ __forceinline__ float gemv_rms_inv(const float* __restrict__ xr, int k, float eps) {
    const int lane = threadIdx.x & 31;
    const float4* x4 = reinterpret_cast<const float4*>(xr);
    const int n4 = k / 4;
    float ss = 0.0f;
    for (int base = 0; base < n4; base += 32 * GEMV_SS) {
        float4 a[GEMV_SS];
#pragma unroll
        for (int j = 0; j < GEMV_SS; ++j) {
            const int i = base + lane + 32 * j;
            a[j] = i < n4 ? __ldg(x4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int j = 0; j < GEMV_SS; ++j) ss += a[j].x * a[j].x + a[j].y * a[j].y + a[j].z * a[j].z + a[j].w * a[j].w;
    }
    ss = warp_sum(ss);
    return 1.0f / sqrtf(ss / (float)k + eps);
}

// Direct-x path: like gemv_vec, but each lane reads (and transforms) the x elements of its own
// chunks from global memory instead of a block-wide shared-memory copy, so warps do not wait on each
// other (one barrier for the norm weights, none else unless wpr > 1); rms_norm's scale is reduced per
// warp over all of x. The norm weights (pro 1) are copied to shared memory (dynamic, k floats)
// before pdl_wait(). Needs k % VEC == 0 and x, W, norm_w 16-byte aligned.
template <typename WT, int U>
__device__ __forceinline__ void gemv_direct(const typename WT::T* __restrict__ w, const float* __restrict__ x,
                                            const float* __restrict__ norm_w, const float* __restrict__ resid,
                                            float* __restrict__ y, int n, int k, int pro, float eps, int wpr,
                                            const void* pf, unsigned long long pf_bytes) {
    __shared__ float red[2][GEMV_WARPS];
    extern __shared__ __align__(16) float nws[];  // pro 1: the norm weights [k]
    l2_prefetch_share(pf, pf_bytes);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int rpb = nw / wpr;
    const int kv = k / WT::VEC;
    // The norm weights are constants: copy them to shared memory before waiting on x's producer.
    if (pro == 1) {
        for (int i = threadIdx.x * 4; i < k; i += blockDim.x * 4) cp_async16(nws + i, norm_w + i);
    }
    const int m = blockIdx.y;
    const int part = warp % wpr;
    const int rib = warp / wpr;
    const int seg = 32 * wpr;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const float* xr = x + (size_t)m * (pro == 2 ? 2 * k : k);

    // Before waiting on the producer of x: the first weight vectors.
    int grp = blockIdx.x;
    uint4 v[U];
    {
        const int row = grp * rpb + rib;
        if (row < n) {
            const uint4* wr = w4 + (size_t)row * kv;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int c = part * 32 + lane + u * seg;
                if (c < kv) v[u] = ld_stream(wr + c);
            }
        }
    }
    pdl_wait();
    float inv = 1.0f;
    if (pro == 1) {
        cp_async_wait_all();
        __syncthreads();
        norm_w = nws;
        inv = gemv_rms_inv(xr, k, eps);
    }
    pdl_launch();

    int buf = 0;
    for (; grp * rpb < n; grp += gridDim.x) {
        const int row = grp * rpb + rib;
        float acc = 0.0f;
        if (row < n) {
            const uint4* wr = w4 + (size_t)row * kv;
            for (int base = 0;;) {
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int c = base + part * 32 + lane + u * seg;
                    if (c < kv) {
                        float xv[WT::VEC], wv[WT::VEC];
                        gemv_x_chunk<WT::VEC>(xr, norm_w, c, k, pro, inv, xv);
                        WT::unpack(v[u], wv);
#pragma unroll
                        for (int e = 0; e < WT::VEC; ++e) acc = fmaf(wv[e], xv[e], acc);
                    }
                }
                base += U * seg;
                if (base >= kv) break;
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int c = base + part * 32 + lane + u * seg;
                    if (c < kv) v[u] = ld_stream(wr + c);
                }
            }
        }
        const int next = (grp + gridDim.x) * rpb + rib;
        if (next < n) {
            const uint4* wn = w4 + (size_t)next * kv;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int c = part * 32 + lane + u * seg;
                if (c < kv) v[u] = ld_stream(wn + c);
            }
        }
        acc = warp_sum(acc);
        if (wpr > 1) {
            if (lane == 0) red[buf][warp] = acc;
            __syncthreads();
            acc = 0.0f;
            if (part == 0 && lane == 0) {
                for (int i = 0; i < wpr; ++i) acc += red[buf][warp + i];
            }
            buf ^= 1;
        }
        if (part == 0 && lane == 0 && row < n) {
            const size_t o = (size_t)m * n + row;
            y[o] = resid != nullptr ? acc + resid[o] : acc;
        }
    }
}

// Two-rows-per-warp direct path (wpr 1): warp w of block b handles rows b * 16 + w and b * 16 + w + 8,
// with both rows' first GEMV_U2 weight vectors per lane requested before pdl_wait(), and each x chunk
// read once for both rows. For tall matrices whose rows outnumber the resident warps (a fused
// gate/up projection), so that every row's loads are in flight in one round.
// GLU (gemv_direct2_glu_*; a gate/up projection W = [gate; up], n = 2i): warp w of block b handles rows j = b * 8 + w
// and i + j, and writes y[m, j] = silu(gate_j) * up_j (y [m, i], no residual): the SwiGLU of HF
// Qwen3MLP, evaluated once per element instead of in every block of the down projection.
#define GEMV_U2 4
template <typename WT, bool GLU>
__device__ __forceinline__ void gemv_direct2(const typename WT::T* __restrict__ w, const float* __restrict__ x,
                                             const float* __restrict__ norm_w, const float* __restrict__ resid,
                                             float* __restrict__ y, int n, int k, int pro, float eps) {
    extern __shared__ __align__(16) float nws[];  // pro 1: the norm weights [k]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kv = k / WT::VEC;
    const int m = blockIdx.y;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const float* xr = x + (size_t)m * (pro == 2 ? 2 * k : k);
    if (pro == 1) {
        for (int i = threadIdx.x * 4; i < k; i += blockDim.x * 4) cp_async16(nws + i, norm_w + i);
    }
    // Rows per group, the second row's offset, and the bound on the first row.
    const int half = n / 2;
    const int rpg = GLU ? 8 : 16, boff = GLU ? half : 8, na = GLU ? half : n;
    int grp = blockIdx.x;
    uint4 va[GEMV_U2], vb[GEMV_U2];
    auto load = [&](int g2, int base) {
        const int ra = g2 * rpg + warp, rb = ra + boff;
#pragma unroll
        for (int u = 0; u < GEMV_U2; ++u) {
            const int c = base + lane + u * 32;
            if (c < kv && ra < na) va[u] = ld_stream(w4 + (size_t)ra * kv + c);
            if (c < kv && rb < n) vb[u] = ld_stream(w4 + (size_t)rb * kv + c);
        }
    };
    load(grp, 0);
    pdl_wait();
    float inv = 1.0f;
    if (pro == 1) {
        cp_async_wait_all();
        __syncthreads();
        norm_w = nws;
        inv = gemv_rms_inv(xr, k, eps);
    }
    pdl_launch();
    for (; grp * rpg < na; grp += gridDim.x) {
        const int ra = grp * rpg + warp, rb = ra + boff;
        float acc_a = 0.0f, acc_b = 0.0f;
        for (int base = 0;;) {
#pragma unroll
            for (int u = 0; u < GEMV_U2; ++u) {
                const int c = base + lane + u * 32;
                if (c < kv) {
                    float xv[WT::VEC], wv[WT::VEC];
                    gemv_x_chunk<WT::VEC>(xr, norm_w, c, k, pro, inv, xv);
                    WT::unpack(va[u], wv);
#pragma unroll
                    for (int e = 0; e < WT::VEC; ++e) acc_a = fmaf(wv[e], xv[e], acc_a);
                    WT::unpack(vb[u], wv);
#pragma unroll
                    for (int e = 0; e < WT::VEC; ++e) acc_b = fmaf(wv[e], xv[e], acc_b);
                }
            }
            base += GEMV_U2 * 32;
            if (base >= kv) break;
            load(grp, base);
        }
        if ((grp + gridDim.x) * rpg < na) load(grp + gridDim.x, 0);
        acc_a = warp_sum(acc_a);
        acc_b = warp_sum(acc_b);
        if (GLU) {
            if (lane == 0 && ra < half) y[(size_t)m * half + ra] = silu_f32(acc_a) * acc_b;
        } else if (lane == 0) {
            const size_t oa = (size_t)m * n + ra, ob = (size_t)m * n + rb;
            if (ra < n) y[oa] = resid != nullptr ? acc_a + resid[oa] : acc_a;
            if (rb < n) y[ob] = resid != nullptr ? acc_b + resid[ob] : acc_b;
        }
    }
}

// Scalar path for any k and alignment (rare: odd shapes).
template <typename WT>
__device__ __forceinline__ void gemv_scalar(const typename WT::T* __restrict__ w, const float* __restrict__ x,
                                            const float* __restrict__ norm_w, const float* __restrict__ resid,
                                            float* __restrict__ y, int n, int k, int pro, float eps,
                                            const void* pf, unsigned long long pf_bytes) {
    extern __shared__ float smem[];
    float* scratch = smem;
    float* xs = smem + 48;
    l2_prefetch_share(pf, pf_bytes);
    const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int m = blockIdx.y;
    pdl_wait();
    gemv_stage_x<1>(x, norm_w, xs, scratch, m, k, pro, eps, false);
    __syncthreads();
    pdl_launch();
    for (int row = blockIdx.x * nw + (threadIdx.x >> 5); row < n; row += gridDim.x * nw) {
        float acc = 0.0f;
        for (int i = lane; i < k; i += 32) acc = fmaf(WT::load(w, (size_t)row * k + i), xs[i], acc);
        acc = warp_sum(acc);
        if (lane == 0) {
            const size_t o = (size_t)m * n + row;
            y[o] = resid != nullptr ? acc + resid[o] : acc;
        }
    }
}

// Every variant takes one GemvParams (kernels/params.cuh) by value. The direct kernels declare the
// resident blocks they are tuned for (4 of direct4 at 64 registers, 3 of direct2 at 80): without it
// ptxas kept 64 / 80 registers and spilled two values in the row loop (a 2.3% slower step on an
// H200, A/B of 2026-12-02).
#define GEMV_DIRECT4_MIN_BLOCKS 4
#define GEMV_DIRECT2_MIN_BLOCKS 3
#define GEMV_KERNELS(SUFFIX, WT)                                                                          \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##SUFFIX(const GemvParams p) {       \
        gemv_vec<WT, false>((const WT::T*)p.w, p.x, p.norm_w, p.resid, p.y, p.n, p.k, p.pro, p.eps, p.wpr, \
                            p.pf, p.pf_bytes, nullptr, nullptr, nullptr, nullptr);                        \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_argmax_##SUFFIX(const GemvParams p) { \
        gemv_vec<WT, true>((const WT::T*)p.w, p.x, p.norm_w, p.resid, p.y, p.n, p.k, p.pro, p.eps, p.wpr,  \
                           p.pf, p.pf_bytes, p.am_out, p.am_v, p.am_i, p.am_counter);                     \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_scalar_##SUFFIX(const GemvParams p) { \
        gemv_scalar<WT>((const WT::T*)p.w, p.x, p.norm_w, p.resid, p.y, p.n, p.k, p.pro, p.eps, p.pf,      \
                        p.pf_bytes);                                                                      \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, GEMV_DIRECT4_MIN_BLOCKS) gemv_direct4_##SUFFIX(const GemvParams p) { \
        gemv_direct<WT, 4>((const WT::T*)p.w, p.x, p.norm_w, p.resid, p.y, p.n, p.k, p.pro, p.eps, p.wpr,  \
                           p.pf, p.pf_bytes);                                                             \
    }

#define GEMV_DIRECT2_KERNEL(NAME, WT, GLU)                                                                \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS, GEMV_DIRECT2_MIN_BLOCKS) NAME(const GemvParams p) {                \
        gemv_direct2<WT, GLU>((const WT::T*)p.w, p.x, p.norm_w, p.resid, p.y, p.n, p.k, p.pro, p.eps);    \
    }

GEMV_KERNELS(bf16, BF16)
GEMV_KERNELS(f16, F16)
GEMV_KERNELS(f32, F32)
GEMV_DIRECT2_KERNEL(gemv_direct2_bf16, BF16, false)
GEMV_DIRECT2_KERNEL(gemv_direct2_f16, F16, false)
GEMV_DIRECT2_KERNEL(gemv_direct2_f32, F32, false)
GEMV_DIRECT2_KERNEL(gemv_direct2_glu_bf16, BF16, true)
GEMV_DIRECT2_KERNEL(gemv_direct2_glu_f16, F16, true)
GEMV_DIRECT2_KERNEL(gemv_direct2_glu_f32, F32, true)

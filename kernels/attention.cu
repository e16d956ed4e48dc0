// Decode attention (one query token) with GQA over a KV cache, split over the KV length, with an
// optional fused prologue that applies rms_norm + rotary embedding to q and k (the
// fused_qk_norm_rope op feeding this attention, folded in by the backend).
//
// Inputs (AttentionParams, kernels/params.cuh): q [h, D], k_new / v_new [kvh, D] (f32, this step's
// projections; pre-norm / pre-rope when the prologue is folded in), caches k_cache / v_cache
// [max_ctx, kvh, D] in bf16, f16 or f32, and the position p read from device memory. With qn / kn
// (f32 [D]) non-null, q and k are first rms_normed; with inv_freq non-null they are then rotated
// (rope at p), exactly as kernels/norm.cu computes both. The kernel stores k / v at cache row p (rounded
// to the cache dtype), then computes, for every query head i (KV head i / (h / kvh), HF repeat_kv),
// softmax(scale · q_i · K[0..=p]ᵀ) · V[0..=p] (HF eager_attention_forward with a causal mask; the
// reference is braid_ir::interp).
//
// Grid (kvh, nsplit) is fixed for max_ctx, so one captured graph serves every position: the L = p + 1
// rows are cut into `active` chunks of max(ceil(L / nsplit), min_chunk, one batch) rows, where a
// batch is the rows all warps of a block load at once (min_chunk 0: one batch); blocks past the last
// chunk exit at once (in cluster mode, after the cluster's barriers). A block handles one KV head
// and its g = h / kvh query heads over its chunk: each warp runs an online softmax over rows (LP
// lanes per row, each holding 16-byte vectors of k and v; ATT_UNROLL row loads in flight per lane),
// the warps merge through shared memory, and the block writes an unnormalised partial (m, l,
// acc[D]) per head, merged in split order (so the result does not depend on block timing) in one of
// two ways:
// - cluster != 0: the nsplit blocks of a KV head form one thread-block cluster (grid y, at most 8);
//   each keeps its partial in shared memory, and after a cluster barrier split 0 reads them through
//   distributed shared memory. Blocks past the last chunk stay for the barriers (a block's shared
//   memory must outlive its readers).
// - cluster == 0: partials go to global memory, and the last block of a KV head to finish (an
//   atomic counter, reset by that block) merges them.
// With a single chunk the block writes the output directly.
//
// L2 prefetch: [pf, pf + pf_bytes) is split between the blocks and pulled into L2 first (see
// common.cuh), for the weights of a later kernel.
// PDL: the position and the cache rows before p (written by earlier steps) are read before
// pdl_wait(); row p comes from k_new / v_new (prepared in shared memory), so the block that writes row
// p never races with its own readers, and no other block reads row p.

#include "common.cuh"

// Warps per block: ATT_WARPS_OF (kernels/params.cuh). Rows per lane group in flight: ATT_UNROLL,
// given by the host for the variant it compiles (Tuning::att_unroll; 4 measured fastest on an H200).
#ifndef ATT_UNROLL
#error "attention.cu is compiled one variant at a time: the host defines ATT_SUFFIX, ATT_CT, ATT_D, ATT_GM, ATT_UNROLL"
#endif
#define LOG2E 1.4426950408889634f
// Splits whose partials the final merge requests at once.
#define ATT_MERGE 8

__device__ __forceinline__ void att_merge_coeffs(float m, float mo, float& c1, float& c2, float& mn) {
    mn = fmaxf(m, mo);
    c1 = (m == -BRAID_INF) ? 0.0f : exp2f(m - mn);
    c2 = (mo == -BRAID_INF) ? 0.0f : exp2f(mo - mn);
}

// One output element merged over the partials of splits 0..active, in split order: `load(sp, m, l,
// a)` fetches split sp's (m, l, acc element). ATT_MERGE splits at a time, every load of a batch
// issued before any is used, so a merge of up to ATT_MERGE splits costs one round trip.
template <typename Load>
__device__ __forceinline__ float att_merge_splits(int active, Load load) {
    float M = -BRAID_INF, den = 0.0f, num = 0.0f;
    for (int s0 = 0; s0 < active; s0 += ATT_MERGE) {
        float mv[ATT_MERGE], lv[ATT_MERGE], av[ATT_MERGE];
#pragma unroll
        for (int u = 0; u < ATT_MERGE; ++u) {
            mv[u] = -BRAID_INF;
            lv[u] = 0.0f;
            av[u] = 0.0f;
            if (s0 + u < active) load(s0 + u, mv[u], lv[u], av[u]);
        }
        float bm = M;
#pragma unroll
        for (int u = 0; u < ATT_MERGE; ++u) bm = fmaxf(bm, mv[u]);
        if (bm == -BRAID_INF) continue;
        const float c0 = M == -BRAID_INF ? 0.0f : exp2f(M - bm);
        den *= c0;
        num *= c0;
#pragma unroll
        for (int u = 0; u < ATT_MERGE; ++u) {
            const float c = mv[u] == -BRAID_INF ? 0.0f : exp2f(mv[u] - bm);
            den += lv[u] * c;
            num += av[u] * c;
        }
        M = bm;
    }
    return num / den;
}

// One row of D elements (x, f32) into dst (shared memory): rms_norm with w when w != null, then
// rotary embedding at position pos with the frequencies inv_freq [D/2] when inv_freq != null (as
// norm.cu), times `mul`, optionally rounded through the cache dtype.
// Called by a whole warp; every load is issued before the first reduction.
template <typename CT, int D>
__device__ __forceinline__ void att_prepare_row(const float* __restrict__ x, const float* __restrict__ w, float* dst,
                                                float eps, const float* __restrict__ inv_freq, float pos, float mul,
                                                bool round) {
    constexpr int HALF = D / 2;
    constexpr int PAIRS = (HALF + 31) / 32;
    const int lane = threadIdx.x & 31;
    float a[PAIRS], b[PAIRS], wa[PAIRS], wb[PAIRS], fr[PAIRS];
#pragma unroll
    for (int j = 0; j < PAIRS; ++j) {
        const int i = lane + 32 * j;
        const bool in = i < HALF;
        a[j] = in ? x[i] : 0.0f;
        b[j] = in ? x[i + HALF] : 0.0f;
        wa[j] = (in && w != nullptr) ? w[i] : 1.0f;
        wb[j] = (in && w != nullptr) ? w[i + HALF] : 1.0f;
        fr[j] = (in && inv_freq != nullptr) ? inv_freq[i] : 0.0f;
    }
    float inv = 1.0f;
    if (w != nullptr) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < PAIRS; ++j) ss += a[j] * a[j] + b[j] * b[j];
        ss = warp_sum(ss);
        inv = 1.0f / sqrtf(ss / (float)D + eps);
    }
#pragma unroll
    for (int j = 0; j < PAIRS; ++j) {
        const int i = lane + 32 * j;
        if (i >= HALF) continue;
        float u = a[j], v = b[j];
        if (w != nullptr) {
            u = wa[j] * (u * inv);
            v = wb[j] * (v * inv);
        }
        if (inv_freq != nullptr) {
            float sn, cs;
            sincosf(pos * fr[j], &sn, &cs);
            const float ru = u * cs - v * sn;
            const float rv = v * cs + u * sn;
            u = ru;
            v = rv;
        }
        if (round) {
            u = CT::round(u);
            v = CT::round(v);
        }
        dst[i] = u * mul;
        dst[i + HALF] = v * mul;
    }
}

template <typename CT, int D, int GM>
__device__ __forceinline__ void attention_impl(const float* __restrict__ q, const float* __restrict__ k_new,
                                               const float* __restrict__ v_new, typename CT::T* __restrict__ kc,
                                               typename CT::T* __restrict__ vc, const int* __restrict__ pos,
                                               float* __restrict__ out, float* __restrict__ part,
                                               float* __restrict__ part_ml, unsigned* __restrict__ counters,
                                               int h, int kvh, int max_ctx, float scale, const float* __restrict__ qn,
                                               const float* __restrict__ kn, float eps,
                                               const float* __restrict__ inv_freq, const void* pf,
                                               unsigned long long pf_bytes, int min_chunk, int cluster) {
    constexpr int VEC = CT::VEC;
    constexpr int LP = (D / VEC) < 32 ? (D / VEC) : 32;  // lanes per cache row
    constexpr int NV = D / (LP * VEC);                   // 16-byte vectors per lane per row
    constexpr int EPL = NV * VEC;                        // elements per lane
    constexpr int PPW = 32 / LP;                         // rows per warp per unrolled step
    constexpr int ATT_WARPS = ATT_WARPS_OF(GM, D);
    constexpr int WROWS = PPW * ATT_UNROLL;              // rows per warp per batch
    typedef typename CT::T T;

    __shared__ float s_acc[ATT_WARPS][GM][D];
    __shared__ float s_m[ATT_WARPS][GM];
    __shared__ float s_l[ATT_WARPS][GM];
    __shared__ float s_q[GM][D];
    __shared__ float s_kv[2][D];
    __shared__ float s_pml[GM][2];  // cluster mode: this split's (m, l) per head, read by split 0
    __shared__ int s_last;

    l2_prefetch_share(pf, pf_bytes);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kh = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y;
    const int g = h / kvh;
    // Rows before p were written by earlier steps: load the first batch before waiting. Split 0 always
    // starts at row 0, so its first batch is requested before the position arrives (rows past the
    // position are loaded but never used).
    const int sl = lane % LP;   // which vectors of a row this lane holds
    const int grp = lane / LP;  // which row of an unrolled step
    const int wstride = ATT_WARPS * WROWS;
    const size_t row_stride = (size_t)kvh * D;
    uint4 kr[ATT_UNROLL][NV], vr[ATT_UNROLL][NV];
    auto load_batch = [&](int tb, int lim, int skip) {
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int t = tb + u * PPW + grp;
            if (t < lim && t != skip) {
                const T* kp = kc + (size_t)t * row_stride + (size_t)kh * D;
                const T* vp = vc + (size_t)t * row_stride + (size_t)kh * D;
#pragma unroll
                for (int v = 0; v < NV; ++v) {
                    kr[u][v] = *reinterpret_cast<const uint4*>(kp + (v * LP + sl) * VEC);
                    vr[u][v] = *reinterpret_cast<const uint4*>(vp + (v * LP + sl) * VEC);
                }
            }
        }
    };
    if (split == 0) load_batch(warp * WROWS, max_ctx, -1);
    const int p = read_position(pos, max_ctx);
    const int L = p + 1;
    int chunk = (L + nsplit - 1) / nsplit;
    if (chunk < min_chunk) chunk = min_chunk;
    if (chunk < ATT_WARPS * WROWS) chunk = ATT_WARPS * WROWS;
    const int active = (L + chunk - 1) / chunk;
    const int start = split * chunk;
    const int end = min(L, start + chunk);
    if (start >= end) {
        // Past the last chunk: nothing to wait for. In a cluster, stay for split 0's two barriers.
        if (cluster && active > 1) {
            pdl_launch();
            cluster_sync();
            cluster_sync();
        }
        return;
    }
    int tb = start + warp * WROWS;
    if (split != 0) load_batch(tb, end, p);

    pdl_wait();
    pdl_launch();

    // Prepare this step's q (scaled for exp2), k and v rows in shared memory.
    const float fp = (float)p;
    for (int r = warp; r < g + 2; r += ATT_WARPS) {
        if (r < g) {
            att_prepare_row<CT, D>(q + (size_t)(kh * g + r) * D, qn, s_q[r], eps, inv_freq, fp, scale * LOG2E, false);
        } else if (r == g) {
            att_prepare_row<CT, D>(k_new + (size_t)kh * D, kn, s_kv[0], eps, inv_freq, fp, 1.0f, true);
        } else {
            att_prepare_row<CT, D>(v_new + (size_t)kh * D, nullptr, s_kv[1], eps, nullptr, fp, 1.0f, true);
        }
    }
    __syncthreads();
    if (p >= start && p < end) {
        for (int e = threadIdx.x; e < D; e += blockDim.x) {
            kc[(size_t)p * row_stride + (size_t)kh * D + e] = CT::from_f32(s_kv[0][e]);
            vc[(size_t)p * row_stride + (size_t)kh * D + e] = CT::from_f32(s_kv[1][e]);
        }
    }

    float qr[GM][EPL];
    float m[GM], l[GM], acc[GM][EPL];
#pragma unroll
    for (int j = 0; j < GM; ++j) {
        m[j] = -BRAID_INF;
        l[j] = 0.0f;
#pragma unroll
        for (int v = 0; v < NV; ++v)
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                qr[j][v * VEC + e] = j < g ? s_q[j][(v * LP + sl) * VEC + e] : 0.0f;
                acc[j][v * VEC + e] = 0.0f;
            }
    }

    for (; tb < end; tb += wstride) {
        // Scores of the batch's rows first (independent), then one softmax update per head.
        float sc[GM][ATT_UNROLL];
#pragma unroll
        for (int u = 0; u < ATT_UNROLL; ++u) {
            const int t = tb + u * PPW + grp;
            const bool valid = t < end;
            float kf[EPL];
            if (t == p) {
#pragma unroll
                for (int v = 0; v < NV; ++v)
#pragma unroll
                    for (int e = 0; e < VEC; ++e) kf[v * VEC + e] = s_kv[0][(v * LP + sl) * VEC + e];
            } else {
#pragma unroll
                for (int v = 0; v < NV; ++v) CT::unpack(kr[u][v], kf + v * VEC);
            }
#pragma unroll
            for (int j = 0; j < GM; ++j) {
                float sj = 0.0f;
                if (j < g) {
#pragma unroll
                    for (int e = 0; e < EPL; ++e) sj = fmaf(qr[j][e], kf[e], sj);
#pragma unroll
                    for (int o = LP / 2; o > 0; o >>= 1) sj += __shfl_xor_sync(0xffffffffu, sj, o);
                }
                sc[j][u] = valid ? sj : -BRAID_INF;
            }
        }
#pragma unroll
        for (int j = 0; j < GM; ++j) {
            if (j >= g) continue;
            float mx = m[j];
#pragma unroll
            for (int u = 0; u < ATT_UNROLL; ++u) mx = fmaxf(mx, sc[j][u]);
            if (mx == -BRAID_INF) continue;  // no valid row for this lane group yet
            const float c = exp2f(m[j] - mx);  // m = -inf gives 0
            l[j] *= c;
#pragma unroll
            for (int e = 0; e < EPL; ++e) acc[j][e] *= c;
#pragma unroll
            for (int u = 0; u < ATT_UNROLL; ++u) {
                const float pe = exp2f(sc[j][u] - mx);  // invalid rows: exp2(-inf) = 0
                const int t = tb + u * PPW + grp;
                float vf[EPL];
                if (t == p) {
#pragma unroll
                    for (int v = 0; v < NV; ++v)
#pragma unroll
                        for (int e = 0; e < VEC; ++e) vf[v * VEC + e] = s_kv[1][(v * LP + sl) * VEC + e];
                } else {
#pragma unroll
                    for (int v = 0; v < NV; ++v) CT::unpack(vr[u][v], vf + v * VEC);
                }
                if (t < end) {
                    l[j] += pe;
#pragma unroll
                    for (int e = 0; e < EPL; ++e) acc[j][e] = fmaf(pe, vf[e], acc[j][e]);
                }
            }
            m[j] = mx;
        }
        if (tb + wstride < end) load_batch(tb + wstride, end, p);
    }

    // Merge the PPW row groups of the warp.
#pragma unroll
    for (int off = LP; off < 32; off <<= 1) {
#pragma unroll
        for (int j = 0; j < GM; ++j) {
            if (j < g) {
                const float mo = __shfl_xor_sync(0xffffffffu, m[j], off);
                const float lo = __shfl_xor_sync(0xffffffffu, l[j], off);
                float c1, c2, mn;
                att_merge_coeffs(m[j], mo, c1, c2, mn);
                l[j] = l[j] * c1 + lo * c2;
#pragma unroll
                for (int e = 0; e < EPL; ++e) {
                    const float ao = __shfl_xor_sync(0xffffffffu, acc[j][e], off);
                    acc[j][e] = acc[j][e] * c1 + ao * c2;
                }
                m[j] = mn;
            }
        }
    }
    if (lane < LP) {
#pragma unroll
        for (int j = 0; j < GM; ++j) {
            if (j < g) {
#pragma unroll
                for (int v = 0; v < NV; ++v)
#pragma unroll
                    for (int e = 0; e < VEC; ++e) s_acc[warp][j][(v * LP + sl) * VEC + e] = acc[j][v * VEC + e];
                if (lane == 0) {
                    s_m[warp][j] = m[j];
                    s_l[warp][j] = l[j];
                }
            }
        }
    }
    __syncthreads();

    // Merge the warps; write the output (one chunk) or this split's partial.
    for (int idx = threadIdx.x; idx < g * D; idx += blockDim.x) {
        const int j = idx / D, e = idx % D;
        float M = -BRAID_INF;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) M = fmaxf(M, s_m[w][j]);
        float den = 0.0f, num = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            const float c = s_m[w][j] == -BRAID_INF ? 0.0f : exp2f(s_m[w][j] - M);
            den += s_l[w][j] * c;
            num += s_acc[w][j][e] * c;
        }
        const int head = kh * g + j;
        if (active == 1) {
            out[head * D + e] = num / den;
        } else if (cluster) {
            // The split's acc, in place: only this thread reads element (j, e) of s_acc.
            s_acc[0][j][e] = num;
            if (e == 0) {
                s_pml[j][0] = M;
                s_pml[j][1] = den;
            }
        } else {
            part[((size_t)head * nsplit + split) * D + e] = num;
            if (e == 0) {
                part_ml[((size_t)head * nsplit + split) * 2] = M;
                part_ml[((size_t)head * nsplit + split) * 2 + 1] = den;
            }
        }
    }
    if (active == 1) return;

    if (cluster) {
        cluster_sync();
        if (split == 0) {
            for (int idx = threadIdx.x; idx < g * D; idx += blockDim.x) {
                const int j = idx / D, e = idx % D;
                out[(kh * g + j) * D + e] = att_merge_splits(active, [&](int sp, float& mv, float& lv, float& av) {
                    mv = ld_cluster_f32(&s_pml[j][0], sp);
                    lv = ld_cluster_f32(&s_pml[j][1], sp);
                    av = ld_cluster_f32(&s_acc[0][j][e], sp);
                });
            }
        }
        cluster_sync();  // every peer's shared memory stays alive until split 0 has read it
        return;
    }

    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned prev = atomicAdd(&counters[kh], 1u);
        s_last = prev == (unsigned)(active - 1);
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    // The merge, in split order, from L2 (`__ldcg`: never a stale L1 line).
    for (int idx = threadIdx.x; idx < g * D; idx += blockDim.x) {
        const int j = idx / D, e = idx % D;
        const int head = kh * g + j;
        const float* pml = part_ml + (size_t)head * nsplit * 2;
        const float* pacc = part + (size_t)head * nsplit * D + e;
        out[head * D + e] = att_merge_splits(active, [&](int sp, float& mv, float& lv, float& av) {
            mv = __ldcg(pml + 2 * sp);
            lv = __ldcg(pml + 2 * sp + 1);
            av = __ldcg(pacc + (size_t)sp * D);
        });
    }
    if (threadIdx.x == 0) counters[kh] = 0u;
}

// ATTENTION_KERNEL_ expands its arguments first, so the variant comes from the -D macros the host
// passes (crates/backend-cuda/src/lower/attention.rs `kernel`).
#define ATTENTION_KERNEL(SUFFIX, CT, D, GM) ATTENTION_KERNEL_(SUFFIX, CT, D, GM)
#define ATTENTION_KERNEL_(SUFFIX, CT, D, GM)                                                                  \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS_OF(GM, D) * 32)                                 \
        attention_##SUFFIX##_d##D##_g##GM(const AttentionParams p) {                                        \
        attention_impl<CT, D, GM>(p.q, p.k_new, p.v_new, (CT::T*)p.kc, (CT::T*)p.vc, p.pos, p.out, p.part,   \
                                  p.part_ml, p.counters, p.h, p.kvh, p.max_ctx, p.scale, p.qn, p.kn, p.eps, \
                                  p.inv_freq, p.pf, p.pf_bytes, p.min_chunk, p.cluster);                    \
    }

ATTENTION_KERNEL(ATT_SUFFIX, ATT_CT, ATT_D, ATT_GM)

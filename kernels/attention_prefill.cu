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
//
// PA_MMA=1 (bf16 / f16 caches, D 64 or 128, sm_80+): the same tiles on the tensor cores,
// attention_prefill_mma_{suffix}_d{D}_g{GM}, FlashAttention-2's scheme with mma.sync m16n8k16
// (f16 operands, f32 accumulation). Each of the 4 warps owns 16 of the 64 query rows: its q rows are
// rounded to f16 once into A fragments (registers); per tile of 64 cache rows, k goes to shared memory
// as f16 [key][D] and v transposed as f16 [D][key] (bf16 -> f16 is exact for |x| < 65504), so every
// B fragment is one 32-bit load (row strides padded by 8 halves: no bank conflicts); S = Q Kᵀ in f32
// accumulators, the causal mask and online softmax on them (a row's 64 scores sit in the 4 lanes of
// one quad), then P (rounded to f16, already in A-fragment layout) times V into f32 accumulators.
// The f16 roundings of q and p are the differences from the f32 kernel (~1e-3 relative).
// KV splits (grid z = nsp, one thread-block cluster of nsp <= 8 blocks, sm_90+): a chunk has too few
// 64-row tiles to fill the GPU (Qwen3-0.6B, 512 tokens: 128 blocks of 4 warps on 132 SMs), so the
// nsp blocks of a tile each walk an equal share of its key tiles and merge their partial rows
// through distributed shared memory, as FlashDecoding splits the keys of one query. The merge is
// fixed arithmetic in split order: the result does not depend on timing.

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

// ---- tensor-core variant (PA_MMA=1) ----

// Two f32 as one f16x2 register: `lo` in the low half (the element with the smaller index).
__device__ __forceinline__ u32 pa_h2(float lo, float hi) {
    return (u32)f32_to_f16(lo) | ((u32)f32_to_f16(hi) << 16);
}

// c += A (16x16, row-major, f16) · B (16x8, col-major, f16) with f32 accumulators; fragments as
// the PTX ISA lays out mma.m16n8k16 (g = lane / 4, t = lane % 4): a0 (row g, cols 2t, 2t+1),
// a1 (row g + 8), a2 (row g, cols 2t + 8, 2t + 9), a3 (row g + 8, cols + 8); b0 (rows 2t, 2t+1,
// col g), b1 (rows 2t + 8, 2t + 9); c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g + 8).
__device__ __forceinline__ void pa_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

template <typename CT>
struct pa_is_bf16 {
    static constexpr bool value = false;
};
template <>
struct pa_is_bf16<BF16> {
    static constexpr bool value = true;
};

// Eight 16-bit cache elements (one 16-byte load) as eight f16.
template <typename CT>
__device__ __forceinline__ void pa_to_f16(const uint4& raw, u16* out) {
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u16 lo = (u16)(w[i] & 0xffffu), hi = (u16)(w[i] >> 16);
        if constexpr (pa_is_bf16<CT>::value) {
            out[2 * i] = f32_to_f16(bf16_to_f32(lo));
            out[2 * i + 1] = f32_to_f16(bf16_to_f32(hi));
        } else {
            out[2 * i] = lo;
            out[2 * i + 1] = hi;
        }
    }
}

template <typename CT, int D, int GM>
__device__ __forceinline__ void prefill_attention_mma(const PrefillAttentionParams& p) {
    constexpr int BQ = PA_ROWS / GM;  // tokens per block
    constexpr int BK = 64;            // cache rows per tile
    constexpr int KS = D + 8;         // row stride of the k tile (halves)
    constexpr int VS = BK + 8;        // row stride of the transposed v tile (halves)
    constexpr int DK = D / 16;        // k-steps over the head dim
    constexpr int NK = BK / 8;        // n-tiles of scores (8 keys each)
    constexpr int ND = D / 8;         // n-tiles of the output (8 columns each)
    static_assert(PA_THREADS == 128 && PA_ROWS == 64, "4 warps of 16 query rows");
    static_assert(D % 16 == 0 && D <= 128, "the tensor-core kernel takes head_dim 16..128");
    static_assert(sizeof(typename CT::T) == 2, "the tensor-core kernel takes 16-bit caches");
    typedef typename CT::T T;
    // The k and v tiles; after the last tile, in a KV-split cluster, this split's partial rows.
    constexpr int TILE_BYTES = (BK * KS + D * VS) * 2;
    constexpr int PART_BYTES = (PA_ROWS * D + 2 * PA_ROWS) * 4;
    __shared__ __align__(16) unsigned char smem[TILE_BYTES > PART_BYTES ? TILE_BYTES : PART_BYTES];
    u16* sk = reinterpret_cast<u16*>(smem);
    u16* svt = sk + BK * KS;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gq = lane >> 2, tq = lane & 3;
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
    // This lane's two query rows (of its warp's 16), their last visible cache row (-1: padding).
    const int r0 = warp * 16 + gq, r1 = r0 + 8;
    const int lim0 = r0 < rows ? pos + t0 + r0 / g : -1;
    const int lim1 = r1 < rows ? pos + t0 + r1 / g : -1;
    const float* q0 = r0 < rows ? p.q + (size_t)(t0 + r0 / g) * p.q_ld + (size_t)(kh * g + r0 % g) * D : nullptr;
    const float* q1 = r1 < rows ? p.q + (size_t)(t0 + r1 / g) * p.q_ld + (size_t)(kh * g + r1 % g) * D : nullptr;
    u32 qa[DK][4];
#pragma unroll
    for (int s = 0; s < DK; ++s) {
        const int c = s * 16 + 2 * tq;
        const float2 z = make_float2(0.0f, 0.0f);
        const float2 x00 = q0 ? *reinterpret_cast<const float2*>(q0 + c) : z;
        const float2 x01 = q0 ? *reinterpret_cast<const float2*>(q0 + c + 8) : z;
        const float2 x10 = q1 ? *reinterpret_cast<const float2*>(q1 + c) : z;
        const float2 x11 = q1 ? *reinterpret_cast<const float2*>(q1 + c + 8) : z;
        qa[s][0] = pa_h2(x00.x * qscale, x00.y * qscale);
        qa[s][1] = pa_h2(x10.x * qscale, x10.y * qscale);
        qa[s][2] = pa_h2(x01.x * qscale, x01.y * qscale);
        qa[s][3] = pa_h2(x11.x * qscale, x11.y * qscale);
    }

    float o[ND][4];
#pragma unroll
    for (int j = 0; j < ND; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -BRAID_INF, m1 = -BRAID_INF, l0 = 0.0f, l1 = 0.0f;
    const int last_key = pos + t0 + ntok - 1;
    const int ntiles = last_key / BK + 1;
    // KV split `sp` of `nsp` (grid z, one cluster): an equal share of the key tiles.
    const int nsp = gridDim.z, sp = blockIdx.z;
    const int kt_end = (int)(((long long)ntiles * (sp + 1)) / nsp);
    for (int kt = (int)(((long long)ntiles * sp) / nsp); kt < kt_end; ++kt) {
        const int k0 = kt * BK;
        __syncthreads();  // the previous tile's k and v are no longer read
        // k rows as f16 [key][d]: consecutive threads take consecutive 16-byte chunks of a row.
        for (int i = tid; i < BK * (D / 8); i += PA_THREADS) {
            const int key = i / (D / 8), e = (i - key * (D / 8)) * 8;
            uint4 raw = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key <= last_key) raw = *reinterpret_cast<const uint4*>(kc + (size_t)(k0 + key) * rs + (size_t)kh * D + e);
            u16 h[8];
            pa_to_f16<CT>(raw, h);
            *reinterpret_cast<uint4*>(sk + key * KS + e) =
                make_uint4((u32)h[0] | ((u32)h[1] << 16), (u32)h[2] | ((u32)h[3] << 16), (u32)h[4] | ((u32)h[5] << 16),
                           (u32)h[6] | ((u32)h[7] << 16));
        }
        // v transposed, f16 [d][key]: consecutive threads take consecutive keys of one chunk.
        for (int i = tid; i < BK * (D / 8); i += PA_THREADS) {
            const int key = i % BK, e = (i / BK) * 8;
            uint4 raw = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + key <= last_key) raw = *reinterpret_cast<const uint4*>(vc + (size_t)(k0 + key) * rs + (size_t)kh * D + e);
            u16 h[8];
            pa_to_f16<CT>(raw, h);
#pragma unroll
            for (int j = 0; j < 8; ++j) svt[(e + j) * VS + key] = h[j];
        }
        __syncthreads();

        // S = Q · Kᵀ for the warp's 16 rows and the tile's 64 keys.
        float s[NK][4];
#pragma unroll
        for (int j = 0; j < NK; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < DK; ++ks) {
#pragma unroll
            for (int j = 0; j < NK; ++j) {
                const u16* kr = sk + (j * 8 + gq) * KS + ks * 16 + 2 * tq;
                const u32 b0 = *reinterpret_cast<const u32*>(kr);
                const u32 b1 = *reinterpret_cast<const u32*>(kr + 8);
                pa_mma(s[j], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], b0, b1);
            }
        }

        // Causal mask; online softmax of rows r0 (s[.][0..1]) and r1 (s[.][2..3]).
        float mx0 = -BRAID_INF, mx1 = -BRAID_INF;
#pragma unroll
        for (int j = 0; j < NK; ++j) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                const int key = k0 + j * 8 + 2 * tq + c;
                if (key > lim0) s[j][c] = -BRAID_INF;
                if (key > lim1) s[j][2 + c] = -BRAID_INF;
                mx0 = fmaxf(mx0, s[j][c]);
                mx1 = fmaxf(mx1, s[j][2 + c]);
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const bool none0 = mn0 == -BRAID_INF, none1 = mn1 == -BRAID_INF;
        const float corr0 = none0 ? 1.0f : exp2f(m0 - mn0);
        const float corr1 = none1 ? 1.0f : exp2f(m1 - mn1);
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int j = 0; j < NK; ++j) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                s[j][c] = none0 ? 0.0f : exp2f(s[j][c] - mn0);
                s[j][2 + c] = none1 ? 0.0f : exp2f(s[j][2 + c] - mn1);
                sum0 += s[j][c];
                sum1 += s[j][2 + c];
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            sum0 += __shfl_xor_sync(0xffffffffu, sum0, off);
            sum1 += __shfl_xor_sync(0xffffffffu, sum1, off);
        }
        l0 = l0 * corr0 + sum0;
        l1 = l1 * corr1 + sum1;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
            o[j][0] *= corr0;
            o[j][1] *= corr0;
            o[j][2] *= corr1;
            o[j][3] *= corr1;
        }
        m0 = mn0;
        m1 = mn1;

        // O += P · V: the scores' accumulator layout is the A-fragment layout of P.
#pragma unroll
        for (int u = 0; u < BK / 16; ++u) {
            const u32 a0 = pa_h2(s[2 * u][0], s[2 * u][1]);
            const u32 a1 = pa_h2(s[2 * u][2], s[2 * u][3]);
            const u32 a2 = pa_h2(s[2 * u + 1][0], s[2 * u + 1][1]);
            const u32 a3 = pa_h2(s[2 * u + 1][2], s[2 * u + 1][3]);
#pragma unroll
            for (int j = 0; j < ND; ++j) {
                const u16* vr = svt + (j * 8 + gq) * VS + u * 16 + 2 * tq;
                const u32 b0 = *reinterpret_cast<const u32*>(vr);
                const u32 b1 = *reinterpret_cast<const u32*>(vr + 8);
                pa_mma(o[j], a0, a1, a2, a3, b0, b1);
            }
        }
    }

    if (nsp > 1) {
        // Every split leaves its unnormalised rows (acc, m, l) in shared memory; after a cluster
        // barrier, split sp merges rows sp * 64 / nsp .. of all splits through distributed shared
        // memory: out = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) l_s, M = max_s m_s. A split
        // without tiles has m = -inf and weighs nothing; every real row's key 0 is in some split.
        float* part = reinterpret_cast<float*>(smem);  // [PA_ROWS][D]
        float* pm = part + PA_ROWS * D;                // [PA_ROWS]
        float* pl = pm + PA_ROWS;                      // [PA_ROWS]
        __syncthreads();                               // the last tile is no longer read
#pragma unroll
        for (int j = 0; j < ND; ++j) {
            *reinterpret_cast<float2*>(part + r0 * D + j * 8 + 2 * tq) = make_float2(o[j][0], o[j][1]);
            *reinterpret_cast<float2*>(part + r1 * D + j * 8 + 2 * tq) = make_float2(o[j][2], o[j][3]);
        }
        if (tq == 0) {
            pm[r0] = m0;
            pl[r0] = l0;
            pm[r1] = m1;
            pl[r1] = l1;
        }
        cluster_sync();
        // Per row of this split's share: the weight 2^(m_s - M) / sum_s 2^(m_s - M) l_s of every
        // split, then each output element is one batch of nsp peer loads (float4 columns).
        __shared__ float wts[8][PA_ROWS];
        const int rb = sp * PA_ROWS / nsp, re = min((sp + 1) * PA_ROWS / nsp, rows);
        for (int r = rb + tid; r < re; r += PA_THREADS) {
            float mv[8], lv[8], M = -BRAID_INF;
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                mv[u] = u < nsp ? *cluster_peer(pm + r, u) : -BRAID_INF;
                lv[u] = u < nsp ? *cluster_peer(pl + r, u) : 0.0f;
                M = fmaxf(M, mv[u]);
            }
            float den = 0.0f;
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                mv[u] = mv[u] == -BRAID_INF ? 0.0f : exp2f(mv[u] - M);
                den += mv[u] * lv[u];
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) wts[u][r - rb] = mv[u] / den;
        }
        __syncthreads();
        constexpr int D4 = D / 4;
        for (int i = tid; i < (re - rb) * D4; i += PA_THREADS) {
            const int r = rb + i / D4, e = (i % D4) * 4;
            float4 x[8];
#pragma unroll
            for (int u = 0; u < 8; ++u)
                x[u] = u < nsp ? *reinterpret_cast<const float4*>(cluster_peer(part + r * D + e, u))
                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const float w = u < nsp ? wts[u][r - rb] : 0.0f;
                acc.x += w * x[u].x;
                acc.y += w * x[u].y;
                acc.z += w * x[u].z;
                acc.w += w * x[u].w;
            }
            *reinterpret_cast<float4*>(p.out + ((size_t)(t0 + r / g) * p.h + kh * g + r % g) * D + e) = acc;
        }
        cluster_sync();  // every split's shared memory stays alive until its peers have read it
        return;
    }
    if (r0 < rows) {
        const float inv = 1.0f / l0;
        float* out = p.out + ((size_t)(t0 + r0 / g) * p.h + kh * g + r0 % g) * D;
#pragma unroll
        for (int j = 0; j < ND; ++j)
            *reinterpret_cast<float2*>(out + j * 8 + 2 * tq) = make_float2(o[j][0] * inv, o[j][1] * inv);
    }
    if (r1 < rows) {
        const float inv = 1.0f / l1;
        float* out = p.out + ((size_t)(t0 + r1 / g) * p.h + kh * g + r1 % g) * D;
#pragma unroll
        for (int j = 0; j < ND; ++j)
            *reinterpret_cast<float2*>(out + j * 8 + 2 * tq) = make_float2(o[j][2] * inv, o[j][3] * inv);
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
#define PA_KERNEL_MMA(SUFFIX, CT, D, GM) PA_KERNEL_MMA_(SUFFIX, CT, D, GM)
#define PA_KERNEL_MMA_(SUFFIX, CT, D, GM)                                                          \
    extern "C" __global__ void __launch_bounds__(PA_THREADS)                                         \
        attention_prefill_mma_##SUFFIX##_d##D##_g##GM(const PrefillAttentionParams p) {            \
        prefill_attention_mma<CT, D, GM>(p);                                                         \
    }

#if defined(PA_MMA) && PA_MMA
PA_KERNEL_MMA(PA_SUFFIX, PA_CT, PA_D, PA_GM)
#else
PA_KERNEL(PA_SUFFIX, PA_CT, PA_D, PA_GM)
#endif

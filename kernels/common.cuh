// Shared helpers for braid's CUDA kernels, textually prepended to every kernels/*.cu before NVRTC
// compiles it (the backend replaces the `#include "common.cuh"` line).
//
// No CUDA header is needed: bf16/f16 are handled as raw 16-bit words (bf16 -> f32 is a shift; f16
// converts with the PTX `cvt` instruction), so a kernel compiles with NVRTC alone.
//
// Conventions of every kernel:
// - activations are f32, token ids / positions / argmax results i32;
// - weights and KV caches are bf16, f16 or f32 (the `_bf16` / `_f16` / `_f32` kernel suffix);
// - the decode position is read from device memory (`const int* pos`), never passed by value, so one
//   captured CUDA graph serves every step;
// - programmatic dependent launch (PDL): a kernel may read weights (never written during a step)
//   before `pdl_wait()`, and reads or writes anything else only after it; `pdl_launch()` lets the next
//   kernel of the stream start its own prologue early. Both are no-ops when launched without PDL.

#include "params.cuh"

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define BRAID_INF __int_as_float(0x7f800000)

// ---- 16-bit float conversions (round-to-nearest-even, as the `half` crate converts) ----

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0u) {
        return (u16)((u >> 16) | 0x0040u);  // quiet NaN
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ---- element types: scalar load/store as f32 and 16-byte vector unpacking ----

// bf16 storage: 8 elements per 16-byte vector.
struct BF16 {
    typedef u16 T;
    static const int VEC = 8;
    __device__ __forceinline__ static float load(const T* p, size_t i) { return bf16_to_f32(p[i]); }
    __device__ __forceinline__ static T from_f32(float v) { return f32_to_bf16(v); }
    __device__ __forceinline__ static float round(float v) { return bf16_to_f32(f32_to_bf16(v)); }
    __device__ __forceinline__ static void unpack(const uint4& v, float* o) {
        o[0] = __uint_as_float(v.x << 16); o[1] = __uint_as_float(v.x & 0xffff0000u);
        o[2] = __uint_as_float(v.y << 16); o[3] = __uint_as_float(v.y & 0xffff0000u);
        o[4] = __uint_as_float(v.z << 16); o[5] = __uint_as_float(v.z & 0xffff0000u);
        o[6] = __uint_as_float(v.w << 16); o[7] = __uint_as_float(v.w & 0xffff0000u);
    }
};

// f16 storage: 8 elements per 16-byte vector.
struct F16 {
    typedef u16 T;
    static const int VEC = 8;
    __device__ __forceinline__ static float load(const T* p, size_t i) { return f16_to_f32(p[i]); }
    __device__ __forceinline__ static T from_f32(float v) { return f32_to_f16(v); }
    __device__ __forceinline__ static float round(float v) { return f16_to_f32(f32_to_f16(v)); }
    __device__ __forceinline__ static void unpack(const uint4& v, float* o) {
        o[0] = f16_to_f32((u16)(v.x & 0xffffu)); o[1] = f16_to_f32((u16)(v.x >> 16));
        o[2] = f16_to_f32((u16)(v.y & 0xffffu)); o[3] = f16_to_f32((u16)(v.y >> 16));
        o[4] = f16_to_f32((u16)(v.z & 0xffffu)); o[5] = f16_to_f32((u16)(v.z >> 16));
        o[6] = f16_to_f32((u16)(v.w & 0xffffu)); o[7] = f16_to_f32((u16)(v.w >> 16));
    }
};

// f32 storage: 4 elements per 16-byte vector.
struct F32 {
    typedef float T;
    static const int VEC = 4;
    __device__ __forceinline__ static float load(const T* p, size_t i) { return p[i]; }
    __device__ __forceinline__ static T from_f32(float v) { return v; }
    __device__ __forceinline__ static float round(float v) { return v; }
    __device__ __forceinline__ static void unpack(const uint4& v, float* o) {
        o[0] = __uint_as_float(v.x); o[1] = __uint_as_float(v.y);
        o[2] = __uint_as_float(v.z); o[3] = __uint_as_float(v.w);
    }
};

// ---- memory access ----

// A 16-byte streaming load of read-only data (weights): not kept in L1, read once per step.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Data written by other blocks of the same launch (split-KV partials, argmax partials) is read with
// `__ldcg` (L2 only, never a stale L1 line) after the writer's __threadfence + counter handshake.

// The decode position, clamped into [0, max_context) so a bad host value cannot index out of bounds
// (the host checks it before every step).
__device__ __forceinline__ int read_position(const int* pos, int max_context) {
    int p = *pos;
    return p < 0 ? 0 : (p >= max_context ? max_context - 1 : p);
}

// ---- programmatic dependent launch (sm_90+) ----

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// ---- thread-block clusters (sm_90+) ----

// Barrier over every thread of every block of the cluster: shared-memory writes before it (release)
// are visible to the cluster's readers after it (acquire). All threads of every block must call it
// the same number of times (`.aligned`: the whole warp executes it together).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

// The generic address of `p` (a variable in this block's shared memory) in block `rank` of the
// cluster: plain loads through it read the peer's copy, and the compiler may batch them (unlike
// ld_cluster_f32's volatile loads). Only between cluster barriers, like every DSMEM access.
__device__ __forceinline__ const float* cluster_peer(const float* p, unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned long long r;
    asm("mapa.u64 %0, %1, %2;" : "=l"(r) : "l"(p), "r"(rank));
    return reinterpret_cast<const float*>(r);
#else
    return p;
#endif
}

// Reads the f32 at `p` (this block's shared memory) in block `rank` of the cluster: the same
// variable in a peer's shared memory (distributed shared memory).
__device__ __forceinline__ float ld_cluster_f32(const float* p, unsigned rank) {
    float v = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"((u32)__cvta_generic_to_shared(p)), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
#endif
    return v;
}

// ---- L2 prefetch (sm_90+) ----

// Asks the copy engine to bring this block's share of [p, p + bytes) into L2, without waiting. The
// blocks of the grid (x and y) split the range evenly in 16-byte units; thread 0 issues pieces of at
// most 64 KiB. `p` must be 16-byte aligned. Used to pull the weights of a later kernel of the step
// into L2 while this one runs.
__device__ __forceinline__ void l2_prefetch_share(const void* p, unsigned long long bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (p == nullptr || bytes == 0 || threadIdx.x != 0) return;
    const unsigned long long blocks = (unsigned long long)gridDim.x * gridDim.y;
    const unsigned long long block = (unsigned long long)blockIdx.y * gridDim.x + blockIdx.x;
    const unsigned long long units = (bytes + 15) / 16;
    const unsigned long long per = (units + blocks - 1) / blocks;
    unsigned long long lo = block * per * 16, hi = lo + per * 16;
    if (hi > bytes) hi = bytes & ~15ull;
    for (unsigned long long at = lo; at < hi; at += 65536ull) {
        const unsigned long long n = (hi - at) < 65536ull ? (hi - at) : 65536ull;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((const char*)p + at), "r"((unsigned)n)
                     : "memory");
    }
#endif
}

// ---- reductions ----

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds at least 32 floats; the call ends with a barrier, so scratch may be reused after.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}

// ---- argmax across a grid ----
// (value, index) pairs are ordered by value, then by smaller index: a total order, so a reduction
// does not depend on block timing. NaN values are never picked.

#define ARGMAX_NONE 0x7fffffff

__device__ __forceinline__ void argmax_pick(float& bv, int& bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

// Reduces (bv, bi) over the block; thread 0 gets the result.
__device__ __forceinline__ void argmax_block(float& bv, int& bi, float* sv, int* si) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_pick(bv, bi, ov, oi);
    }
    __syncthreads();
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        bv = lane < nw ? sv[lane] : -BRAID_INF;
        bi = lane < nw ? si[lane] : ARGMAX_NONE;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            argmax_pick(bv, bi, ov, oi);
        }
    }
}

// Ends a grid-wide argmax: every thread holds its (bv, bi); the block reduces them and, for a grid of
// several blocks, writes a partial [blockIdx.x] to part_v / part_i; the last block to finish (an
// atomic counter, reset by that block) reduces the partials and writes out[0] (0 when every value
// was NaN). sv / si: 32 floats / ints of shared memory. Called by every thread of the block.
__device__ __forceinline__ void argmax_finish(float bv, int bi, float* sv, int* si, float* __restrict__ part_v,
                                              int* __restrict__ part_i, unsigned* __restrict__ counter,
                                              int* __restrict__ out) {
    __shared__ int s_last;
    argmax_block(bv, bi, sv, si);
    if (gridDim.x == 1) {
        if (threadIdx.x == 0) out[0] = bi == ARGMAX_NONE ? 0 : bi;
        return;
    }
    if (threadIdx.x == 0) {
        part_v[blockIdx.x] = bv;
        part_i[blockIdx.x] = bi;
        __threadfence();
        const unsigned prev = atomicAdd(counter, 1u);
        s_last = prev == gridDim.x - 1;
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    bv = -BRAID_INF;
    bi = ARGMAX_NONE;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) argmax_pick(bv, bi, __ldcg(part_v + b), __ldcg(part_i + b));
    argmax_block(bv, bi, sv, si);
    if (threadIdx.x == 0) {
        out[0] = bi == ARGMAX_NONE ? 0 : bi;
        counter[0] = 0u;
    }
}

// x * sigmoid(x) with the hardware exponential (__expf: a few ulp; the reference's silu differs by
// ~1e-7 relative), as the GEMV prologues evaluate it for every element of every row they process.
__device__ __forceinline__ float silu_f32(float x) { return x / (1.0f + __expf(-x)); }

// ---- asynchronous copies into shared memory (sm_80+) ----

// Starts copying 16 bytes from global src to shared dst (both 16-byte aligned) without registers.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"((u32)__cvta_generic_to_shared(dst)), "l"(src)
                 : "memory");
}

// Waits for every cp_async16 this thread started.
__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group 0;" ::: "memory");
}

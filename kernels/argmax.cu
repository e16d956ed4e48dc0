// argmax over the last axis of x [1, n] (f32) -> i32[1]: the index of the largest element, the first
// one on ties (NaN elements are never chosen). One launch: every block reduces a strided share and
// writes a partial; the last block to finish (an atomic counter, reset by that block) reduces the
// partials. (value, index) pairs are ordered by value, then by smaller index, a total order, so the
// result does not depend on block timing.

#include "common.cuh"

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

extern "C" __global__ void argmax_f32(const float* __restrict__ x, int n, float* __restrict__ part_v,
                                      int* __restrict__ part_i, unsigned* __restrict__ counter,
                                      int* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ int s_last;
    pdl_wait();
    pdl_launch();
    float bv = -BRAID_INF;
    int bi = ARGMAX_NONE;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) argmax_pick(bv, bi, x[i], i);
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

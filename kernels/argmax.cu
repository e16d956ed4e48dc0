// argmax over the last axis of x [1, n] (f32) -> i32[1]: the index of the largest element, the first
// one on ties (NaN elements are never chosen). One launch: every block reduces a strided share, then
// argmax_finish (common.cuh) merges the blocks' partials.

#include "common.cuh"

extern "C" __global__ void argmax_f32(const float* __restrict__ x, int n, float* __restrict__ part_v,
                                      int* __restrict__ part_i, unsigned* __restrict__ counter,
                                      int* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_launch();
    float bv = -BRAID_INF;
    int bi = ARGMAX_NONE;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) argmax_pick(bv, bi, x[i], i);
    argmax_finish(bv, bi, sv, si, part_v, part_i, counter, out);
}

// argmax over the last axis of x [1, n] (f32) -> i32[1]: the index of the largest element, the first
// one on ties (NaN elements are never chosen). One launch: every block reduces a strided share, then
// argmax_finish (common.cuh) merges the blocks' partials.

#include "common.cuh"

extern "C" __global__ void argmax_f32(const ArgmaxParams p) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_launch();
    float bv = -BRAID_INF;
    int bi = ARGMAX_NONE;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) argmax_pick(bv, bi, p.x[i], i);
    argmax_finish(bv, bi, sv, si, p.part_v, p.part_i, p.counter, p.out);
}

// Elementwise f32 ops (add, mul, silu), a 2-D strided copy for non-view split / concat, and the
// decode-loop feedback step. Grid-stride loops over `n` elements; 256 threads per block. Parameters:
// EwParams, Copy2dParams, StepAdvanceParams (kernels/params.cuh).

#include "common.cuh"

// out = a + b, elementwise over n f32 elements (b repeats every nb elements: a row-broadcast bias).
extern "C" __global__ void ew_add_f32(const EwParams p) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) p.out[i] = p.a[i] + p.b[i % p.nb];
}

// out = a * b, elementwise over n f32 elements (b repeats every nb elements).
extern "C" __global__ void ew_mul_f32(const EwParams p) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) p.out[i] = p.a[i] * p.b[i % p.nb];
}

// out = a * sigmoid(a) = a / (1 + e^-a) (PyTorch's silu), elementwise over n f32 elements (b unused).
extern "C" __global__ void ew_silu_f32(const EwParams p) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) p.out[i] = silu_f32(p.a[i]);
}

// dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < cols, in 4-byte words (f32 or
// i32 alike). Strides and counts are in words.
extern "C" __global__ void copy2d_u32(const Copy2dParams p) {
    u32* __restrict__ dst = p.dst;
    const u32* __restrict__ src = p.src;
    const int dst_stride = p.dst_stride, src_stride = p.src_stride, rows = p.rows, cols = p.cols;
    pdl_wait();
    pdl_launch();
    const long long total = (long long)rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(i / cols), c = (int)(i % cols);
        dst[(size_t)r * dst_stride + c] = src[(size_t)r * src_stride + c];
    }
}

// The end of a self-feeding decode step (one thread): the step's next token becomes the next step's
// token input, it is recorded at history[position + 1], and the position input advances by one. With
// this launch appended, a CUDA graph of the step can be replayed back to back with no host work.
extern "C" __global__ void step_advance(const StepAdvanceParams p) {
    pdl_wait();
    pdl_launch();
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const int t = p.next[0];
    const int at = p.pos[0] + 1;
    p.token[0] = t;
    if (at >= 0 && at < p.history_len) p.history[at] = t;
    p.pos[0] = at;
}

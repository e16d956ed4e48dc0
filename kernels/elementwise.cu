// Elementwise f32 ops (add, mul, silu), a 2-D strided copy for non-view split / concat, and the
// decode-loop feedback step. Grid-stride loops over `n` elements; 256 threads per block.

#include "common.cuh"

// out = a + b, elementwise over n f32 elements.
extern "C" __global__ void ew_add_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, int n) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = a[i] + b[i];
}

// out = a * b, elementwise over n f32 elements.
extern "C" __global__ void ew_mul_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, int n) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = a[i] * b[i];
}

// out = x * sigmoid(x) = x / (1 + e^-x) (PyTorch's silu), elementwise over n f32 elements.
extern "C" __global__ void ew_silu_f32(const float* __restrict__ x, float* __restrict__ out, int n) {
    pdl_wait();
    pdl_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = silu_f32(x[i]);
}

// dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < cols, in 4-byte words (f32 or
// i32 alike). Strides and counts are in words.
extern "C" __global__ void copy2d_u32(u32* __restrict__ dst, int dst_stride, const u32* __restrict__ src,
                                      int src_stride, int rows, int cols) {
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
extern "C" __global__ void step_advance(const int* __restrict__ next, int* __restrict__ token, int* __restrict__ pos,
                                        int* __restrict__ history, int history_len) {
    pdl_wait();
    pdl_launch();
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const int t = next[0];
    const int p = pos[0] + 1;
    token[0] = t;
    if (p >= 0 && p < history_len) history[p] = t;
    pos[0] = p;
}

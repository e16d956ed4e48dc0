// embedding: out[i, :] = table[ids[i], :] upcast to f32, for table [vocab, hidden] in bf16/f16/f32
// and ids i32[n]. Grid (n), 256 threads. An id outside [0, vocab) writes zeros (the host checks the
// token it feeds; ids produced on the device come from argmax over the vocabulary).

#include "common.cuh"

template <typename WT>
__device__ __forceinline__ void embedding_impl(const typename WT::T* __restrict__ table, const int* __restrict__ ids,
                                               float* __restrict__ out, int hidden, int vocab) {
    pdl_wait();
    pdl_launch();
    const int id = ids[blockIdx.x];
    float* o = out + (size_t)blockIdx.x * hidden;
    if (id < 0 || id >= vocab) {
        for (int j = threadIdx.x; j < hidden; j += blockDim.x) o[j] = 0.0f;
        return;
    }
    const size_t base = (size_t)id * hidden;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) o[j] = WT::load(table, base + j);
}

#define EMBEDDING_KERNEL(SUFFIX, WT)                                                          \
    extern "C" __global__ void embedding_##SUFFIX(const EmbeddingParams p) {                  \
        embedding_impl<WT>((const WT::T*)p.table, p.ids, p.out, p.hidden, p.vocab);           \
    }

EMBEDDING_KERNEL(bf16, BF16)
EMBEDDING_KERNEL(f16, F16)
EMBEDDING_KERNEL(f32, F32)

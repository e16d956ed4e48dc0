// Bandwidth probes for the roofline: fill a buffer with a non-zero pattern, then read it once with
// 16-byte loads (the same access a GEMV makes to its weights). And bf16 operands for the GEMM-rate
// probe (crates/backend-cuda/src/bench.rs `measure_gemm_rate`).

#include "common.cuh"

// p[i] = a hash of (i, seed): never all zeros, so the read measures real data.
extern "C" __global__ void bench_fill_u32(const BenchFillParams prm) {
    u32* __restrict__ p = prm.p;
    const unsigned long long n = prm.n;
    const u32 seed = prm.seed;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        u32 h = (u32)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = h | 1u;
    }
}

// Reads n16 16-byte vectors once; writes only if an impossible checksum appears, so the loads stay.
extern "C" __global__ void bench_read(const BenchReadParams prm) {
    const uint4* __restrict__ p = (const uint4*)prm.p;
    const unsigned long long n16 = prm.n16;
    u32* __restrict__ sink = prm.sink;
    u32 acc = 0;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = ld_stream(p + i), b = ld_stream(p + i + stride);
        const uint4 c = ld_stream(p + i + 2 * stride), d = ld_stream(p + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = ld_stream(p + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;
}

// p[i] (bf16, i < n) = a hash of (i, seed) mapped to [-1, 1): operands for the GEMM-rate probe
// (real values, never zeros, NaN or infinity).
extern "C" __global__ void bench_fill_bf16(const BenchFillParams prm) {
    u16* __restrict__ p = (u16*)prm.p;
    const unsigned long long n = prm.n;
    const u32 seed = prm.seed;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        u32 h = (u32)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = f32_to_bf16((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

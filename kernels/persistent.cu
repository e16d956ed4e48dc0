// The persistent decode step (first stage: GEMV chains): one CTA per multiprocessor runs a static
// queue of tile instructions (crates/backend-cuda/src/persistent/schedule.rs builds it from the
// graph). Each instruction computes rows [row0, row0 + rows) of y = x · Wᵀ for one matmul node,
// W bf16 [n, k] row-major, x and y f32.
//
// Streaming independent of dependencies: every thread of the CTA copies its share of the weight
// slices of the *upcoming* instructions into a ring of shared memory with cp.async (16 bytes per
// copy, one commit group per instruction), as far ahead as the ring has room, before it waits on the
// current instruction's input. Only the activation load waits on a counter.
//
// Dependencies: an instruction may wait until a counter reaches epoch * target (counters count up
// across steps and are never reset; the epoch is this CTA's own launch count, the same on every CTA
// of a launch), and may add 1 to a counter when its rows are written (release). Each counter sits on
// its own 128-byte line. Every wait is bounded: past PST_SPIN_LIMIT cycles the first CTA to time out
// records (instruction, counter, expected, seen, cta) in the error slot, raises the abort flag, and
// every CTA leaves; the host reports the record (PersistentError).
//
// flags & PST_NO_DEPS: ignore every wait (the streaming-only measurement; results are garbage).

#include "common.cuh"

#define PST_NO_DEPS 1
#define PST_SPIN_LIMIT 2000000000ll
// Most instructions whose loads are in flight at once (cp.async.wait_group takes an immediate).
#define PST_MAX_AHEAD 6

__device__ __forceinline__ unsigned pst_ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void pst_red_release(unsigned* p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ void pst_cp16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void pst_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Waits until at most n of this thread's commit groups are pending.
__device__ __forceinline__ void pst_wait_groups(int n) {
    switch (n) {
        case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
        case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
        case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
        case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
        case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
        case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
        default: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    }
}

// Records the first timeout: (instruction, counter, expected, seen, cta), then raises the abort flag.
__device__ void pst_fail(PersistentError* err, int insn, int counter, unsigned expected, unsigned seen) {
    if (atomicCAS(&err->code, 0, 1) == 0) {
        err->insn = insn;
        err->counter = counter;
        err->expected = expected;
        err->seen = seen;
        err->cta = blockIdx.x;
    }
    atomicExch(&err->abort, 1);
}

// Byte offset in the ring where instruction slice `bytes` goes, given the running ring cursor
// (bytes ever placed): slices never wrap; one that would cross the end starts at 0 instead.
__device__ __forceinline__ unsigned long long pst_place(unsigned long long cursor, unsigned bytes, unsigned ring) {
    const unsigned long long off = cursor % ring;
    return off + bytes > ring ? cursor + (ring - off) : cursor;
}

extern "C" __global__ void __launch_bounds__(PST_THREADS, 1) persistent_gemv(const PersistentParams p) {
    extern __shared__ __align__(128) unsigned char smem[];
    float* xs = reinterpret_cast<float*>(smem + p.ring_bytes);
    __shared__ int s_abort;
    __shared__ unsigned s_epoch;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nwarps = PST_THREADS / 32;
    const int first = p.queue_start[blockIdx.x], last = p.queue_start[blockIdx.x + 1];
    if (tid == 0) {
        s_epoch = p.epochs[blockIdx.x * 32] + 1;
        p.epochs[blockIdx.x * 32] = s_epoch;
        s_abort = 0;
    }
    __syncthreads();
    const unsigned epoch = s_epoch;
    const unsigned ring = p.ring_bytes;
    const unsigned smem_base = (unsigned)__cvta_generic_to_shared(smem);

    // Loads issued so far: instruction index (exclusive), ring cursor, per-instruction ring start.
    int issued = first;
    unsigned long long cursor = 0, freed = 0;
    unsigned long long start_of[PST_MAX_AHEAD + 1];

    for (int i = first; i < last; ++i) {
        // Issue the weights of every upcoming instruction that fits in the ring (at most
        // PST_MAX_AHEAD in flight), before waiting on this instruction's input.
        while (issued < last && issued - i < PST_MAX_AHEAD) {
            const PersistentInsn& q = p.insns[issued];
            const unsigned bytes = (unsigned)q.rows * q.k * 2;
            const unsigned long long at = pst_place(cursor, bytes, ring);
            if (at + bytes - freed > ring) break;
            const unsigned char* src = reinterpret_cast<const unsigned char*>(q.w) + (size_t)q.row0 * q.k * 2;
            const unsigned dst = smem_base + (unsigned)(at % ring);
            for (unsigned off = tid * 16; off < bytes; off += PST_THREADS * 16) pst_cp16(dst + off, src + off);
            pst_commit();
            start_of[(issued - first) % (PST_MAX_AHEAD + 1)] = at;
            cursor = at + bytes;
            ++issued;
        }
        const PersistentInsn& q = p.insns[i];
        // The input: wait for its producer (thread 0 polls, bounded), then stage x in shared memory.
        if (tid == 0 && q.wait_counter >= 0 && !(p.flags & PST_NO_DEPS)) {
            const unsigned* ctr = p.counters + q.wait_counter * 32;
            const unsigned want = epoch * q.wait_target;
            unsigned seen = pst_ld_acquire(ctr);
            const long long t0 = clock64();
            while (seen < want) {
                if (*(volatile int*)&p.err->abort) {
                    s_abort = 1;
                    break;
                }
                if (clock64() - t0 > PST_SPIN_LIMIT) {
                    pst_fail(p.err, i, q.wait_counter, want, seen);
                    s_abort = 1;
                    break;
                }
                seen = pst_ld_acquire(ctr);
            }
        }
        __syncthreads();
        if (s_abort) {
            pst_wait_groups(0);
            return;
        }
        for (int e = tid * 4; e < q.k; e += PST_THREADS * 4) {
            *reinterpret_cast<float4*>(xs + e) = __ldcg(reinterpret_cast<const float4*>(q.x + e));
        }
        // This instruction's weights: its commit group and every earlier one are complete.
        pst_wait_groups(issued - i - 1);
        __syncthreads();
        const unsigned char* wslice = smem + start_of[(i - first) % (PST_MAX_AHEAD + 1)] % ring;
        const int kv = q.k / 8;
        for (int r = warp; r < q.rows; r += nwarps) {
            const uint4* row = reinterpret_cast<const uint4*>(wslice + (size_t)r * q.k * 2);
            float acc = 0.0f;
            for (int c = lane; c < kv; c += 32) {
                float wv[8];
                BF16::unpack(row[c], wv);
                const float4 a = *reinterpret_cast<const float4*>(xs + c * 8);
                const float4 b = *reinterpret_cast<const float4*>(xs + c * 8 + 4);
                acc = fmaf(wv[0], a.x, acc);
                acc = fmaf(wv[1], a.y, acc);
                acc = fmaf(wv[2], a.z, acc);
                acc = fmaf(wv[3], a.w, acc);
                acc = fmaf(wv[4], b.x, acc);
                acc = fmaf(wv[5], b.y, acc);
                acc = fmaf(wv[6], b.z, acc);
                acc = fmaf(wv[7], b.w, acc);
            }
            acc = warp_sum(acc);
            if (lane == 0) q.y[q.row0 + r] = acc;
        }
        // Publish: every warp's rows are written (barrier), then one release add.
        __syncthreads();
        if (tid == 0 && q.signal_counter >= 0) pst_red_release(p.counters + q.signal_counter * 32, 1u);
        freed = start_of[(i - first) % (PST_MAX_AHEAD + 1)] + (unsigned)q.rows * q.k * 2;
    }
    pst_wait_groups(0);
}

// Launch parameters of braid's kernels: one struct per kernel family, passed by value as the
// kernel's only parameter, and the constants the host's lowering shares with the kernels.
//
// Mirrored field by field by `crates/backend-cuda/src/params.rs` (#[repr(C)] structs). The CI test
// `nvrtc_compile::param_structs_match_the_rust_layout` compiles, with NVRTC, static_asserts that the
// Rust side generates from its own layout (size, and offset of every field) and from its constants:
// a field added on one side only, or a constant changed on one side only, fails CI.
//
// Every pointer is a device address (8 bytes); nullable pointers say so. Pointers come first, then
// 8-byte integers, then 4-byte scalars, padded to a multiple of 8 bytes, so neither side has implicit
// padding.

// ---- constants shared with the host lowering (crates/backend-cuda/src/params.rs) ----

// Threads per block of every GEMV kernel (8 warps); `__launch_bounds__` and the per-warp reduction
// arrays are sized by it.
#define GEMV_THREADS 256
#define GEMV_WARPS (GEMV_THREADS / 32)
// Warps per attention block for GM query heads per block and head dim D: 8 while a block's per-head
// state is small (GM * D <= 512 elements), else 4 (registers and shared memory).
#define ATT_WARPS_OF(GM, D) ((GM) * (D) <= 512 ? 8 : 4)

// ---- gemv.cu: every GEMV variant ----
struct GemvParams {
    const void* w;             // weights [n, k], bf16 / f16 / f32 by the kernel's suffix
    const float* x;            // x [m, k] ([m, 2k] for pro 2)
    const float* norm_w;       // pro 1: rms_norm weight [k]; else null
    const float* resid;        // nullable: residual [m, n] added to the result
    float* y;                  // y [m, n] ([m, n / 2] for the SwiGLU epilogue)
    const void* pf;            // nullable: L2 prefetch range start
    int* am_out;               // gemv_argmax: argmax result i32[1]; else null
    float* am_v;               // gemv_argmax: per-block partial values
    int* am_i;                 // gemv_argmax: per-block partial indices
    unsigned* am_counter;      // gemv_argmax: completion counter (starts at 0, reset by the kernel)
    unsigned long long pf_bytes;
    int n;                     // rows of W
    int k;                     // columns of W
    int pro;                   // prologue: 0 x as is, 1 rms_norm, 2 SwiGLU of x [m, 2k]
    float eps;                 // rms_norm epsilon (pro 1)
    int wpr;                   // warps per row (direct4, staged)
    int pad_;
};

// ---- attention.cu ----
struct AttentionParams {
    const float* q;            // q [h, D] (pre-norm when qn != null)
    const float* k_new;        // this step's k [kvh, D]
    const float* v_new;        // this step's v [kvh, D]
    void* kc;                  // k cache [max_ctx, kvh, D] in the cache dtype
    void* vc;                  // v cache
    const int* pos;            // the position, i32[1]
    float* out;                // out [h, D]
    float* part;               // split partials acc [h, nsplit, D] (global merge)
    float* part_ml;            // split partials (m, l) [h, nsplit, 2]
    unsigned* counters;        // per-KV-head completion counters [kvh]
    const float* qn;           // nullable: q rms_norm weight [D]
    const float* kn;           // nullable: k rms_norm weight [D]
    const float* inv_freq;     // nullable: rotary frequencies [D / 2]; null: no rope on q and k
    const void* pf;            // nullable: L2 prefetch range start
    unsigned long long pf_bytes;
    int h;
    int kvh;
    int max_ctx;
    float scale;               // softmax scale (HF: head_dim^-0.5)
    float eps;                 // q/k rms_norm epsilon
    int min_chunk;             // smallest KV chunk per block (0: one batch of rows)
    int cluster;               // 1: the splits of a KV head form one thread-block cluster
    int pad_;
};

// ---- norm.cu ----
struct RmsNormParams {
    const float* x;            // x [rows, d]
    const float* w;            // weight [d]
    float* out;                // out [rows, d]
    int rows;
    int d;
    float eps;
    int pad_;
};

struct NormRopeParams {
    const float* x1;           // x1 [rows1, d]
    const float* w1;           // nullable: rms_norm weight of x1 [d]
    float* out1;
    const float* x2;           // nullable: a second tensor [rows2, d]
    const float* w2;
    float* out2;
    const int* pos;            // the position, i32[1]
    const float* inv_freq;     // rotary frequencies [d / 2]
    int rows1;
    int rows2;
    int d;
    float eps;
    int do_norm;
    int do_rope;
    int heads1;                // rows (heads) per token of x1: row r is token r / heads1
    int heads2;                // rows per token of x2
    int ld1;                   // f32 elements from one token of x1 to the next (heads1 * d: contiguous)
    int ld2;
};

// ---- elementwise.cu ----
struct EwParams {
    const float* a;            // a [n] (x for silu)
    const float* b;            // b [nb], nb dividing n: a row-broadcast bias when nb < n (null for silu)
    float* out;                // out [n]
    int n;
    int nb;
};

struct Copy2dParams {
    unsigned* dst;
    const unsigned* src;
    int dst_stride;            // in 4-byte words
    int src_stride;
    int rows;
    int cols;
};

struct StepAdvanceParams {
    const int* next;           // the step's next token, i32[1]
    int* token;                // the token input, i32[1]
    int* pos;                  // the position input, i32[1]
    int* history;              // tokens by position [history_len]
    int history_len;
    int pad_;
};

// ---- embedding.cu ----
struct EmbeddingParams {
    const void* table;         // table [vocab, hidden], bf16 / f16 / f32 by the kernel's suffix
    const int* ids;            // ids i32[n]
    float* out;                // out [n, hidden]
    int hidden;
    int vocab;
};

// ---- argmax.cu ----
struct ArgmaxParams {
    const float* x;            // x [n]
    float* part_v;             // per-block partial values
    int* part_i;               // per-block partial indices
    unsigned* counter;         // completion counter (starts at 0, reset by the kernel)
    int* out;                  // the argmax, i32[1]
    int n;
    int pad_;
};

// ---- bench.cu ----
struct BenchFillParams {
    unsigned* p;
    unsigned long long n;      // elements: 4-byte words (bench_fill_u32) or bf16 (bench_fill_bf16)
    unsigned seed;
    int pad_;
};

struct BenchReadParams {
    const void* p;
    unsigned* sink;
    unsigned long long n16;    // 16-byte vectors
};

// ---- persistent.cu: the persistent decode step ----

// Threads per CTA of the persistent kernel (one CTA per multiprocessor).
#define PST_THREADS 512

// One tile instruction: rows [row0, row0 + rows) of y = x · Wᵀ, W bf16 [n, k].
struct PersistentInsn {
    const void* w;             // W [n, k] bf16 (the whole matrix; row0 selects the slice)
    const float* x;            // x [k]
    float* y;                  // y [n]
    int row0;
    int rows;
    int k;
    int wait_counter;          // -1: no wait; else wait until counters[c] >= epoch * wait_target
    unsigned wait_target;
    int signal_counter;        // -1: none; else counters[c] += 1 when the rows are written
};

// The first timeout of a launch (code 0: none).
struct PersistentError {
    int code;                  // 1: a wait passed its bound
    int abort;                 // raised by the first timeout; every CTA leaves
    int insn;                  // the waiting instruction
    int counter;               // the counter it waited on
    unsigned expected;         // the value it waited for
    unsigned seen;             // the value it saw last
    int cta;                   // the CTA that timed out
    int pad_;
};

struct PersistentParams {
    const PersistentInsn* insns;   // every CTA's queue, back to back
    const int* queue_start;        // [ctas + 1]: CTA c runs insns[queue_start[c] .. queue_start[c + 1])
    unsigned* counters;            // one per stage, 128 bytes apart; count up across launches
    unsigned* epochs;              // one per CTA, 128 bytes apart: launches seen by the CTA
    PersistentError* err;
    unsigned ring_bytes;           // shared memory for weight slices; x [max k] f32 follows it
    unsigned flags;                // PST_NO_DEPS: ignore waits (streaming-only measurement)
};

// ---- prefill.cu ----
struct GemmPrologueParams {
    const float* x;            // x [m, k] ([m, 2k] for pro 2)
    const float* norm_w;       // pro 1: rms_norm weight [k]; else null
    const float* resid;        // nullable: residual [m, n], or [n] (resid_rows 1) for every row
    void* xb;                  // out: bf16(prologue(x)) [m, k]
    float* c;                  // with resid: the GEMM output [m, n], written with the residual
    int m;
    int k;
    int n;
    int pro;                   // prologue: 0 x as is, 1 rms_norm, 2 SwiGLU of x [m, 2k]
    float eps;
    int resid_rows;            // rows of resid: m, or 1 (a broadcast bias)
};

struct KvAppendParams {
    const float* k;            // k [t, row], token i at k + i * k_ld
    const float* v;            // v [t, row], token i at v + i * v_ld
    void* kc;                  // k cache [max_ctx, row] in the cache dtype
    void* vc;                  // v cache
    const int* pos;            // the first token's position, i32[1]
    int t;
    int row;                   // kv_heads * head_dim
    int k_ld;
    int v_ld;
    int max_ctx;
    int pad_;
};

// ---- attention_prefill.cu ----
// Query rows (tokens x heads of one KV head) per block, keys per shared-memory tile, threads.
#define PA_ROWS 64
#define PA_KEYS 32
#define PA_THREADS 128

struct PrefillAttentionParams {
    const float* q;            // q [t, h, D], token i at q + i * q_ld
    const void* kc;            // k cache [max_ctx, kvh, D] (this chunk's rows already appended)
    const void* vc;            // v cache
    const int* pos;            // the first token's position, i32[1]
    float* out;                // out [t, h, D]
    int t;
    int h;
    int kvh;
    int max_ctx;
    int q_ld;
    float scale;               // softmax scale (HF: head_dim^-0.5)
};

//! Kernel launch parameters: one `#[repr(C)]` struct per kernel family, mirrored field by field by
//! the kernel's own struct in `kernels/params.cuh`, passed by value as the kernel's only parameter.
//!
//! Pointer fields are [`Ptr`]s. In a [`crate::plan::Plan`] they are *symbolic*: a region of the
//! executor's memory ([`Region`]) and a byte offset in it, so a plan can be built, printed and
//! compared on a machine without a GPU; binding a plan to an executor's buffers
//! ([`Params::bind`]) replaces each by the device address.
//!
//! The layouts cannot drift apart silently: [`c_layout_assertions`] writes, from the Rust layout,
//! `static_assert`s on the size and every field offset of each C struct and on the constants both
//! sides share; CI compiles them with NVRTC against `kernels/params.cuh`
//! (`tests/nvrtc_compile.rs`).

use std::fmt;

use bytemuck::{Pod, Zeroable};

use crate::device::DevPtr;

/// Threads per block of every GEMV kernel (8 warps); `GEMV_THREADS` in `kernels/params.cuh`.
pub const GEMV_THREADS: u32 = 256;

/// Warps per attention block for `gm` query heads per block and head dim `d`: 8 while a block's
/// per-head state is small (`gm * d <= 512` elements), else 4 (`ATT_WARPS_OF` in
/// `kernels/params.cuh`).
pub const fn attention_warps(gm: usize, d: usize) -> u32 {
    if gm * d <= 512 {
        8
    } else {
        4
    }
}

/// Head dims and query heads per KV head the attention kernel is instantiated for (a group of g uses
/// the first instantiation >= g); `kernels/attention.cu` compiles whichever the lowering asks for.
pub const ATTENTION_INSTANCES: ([usize; 5], [usize; 4]) = ([16, 32, 64, 128, 256], [1, 2, 4, 8]);

/// A region of an executor's device memory; see [`crate::plan::MemoryPlan`] and
/// [`crate::plan::ScratchLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// The activation arena (offsets are arena offsets, already resolved through liveness).
    Arena,
    /// The step inputs (`token`, `position`, ...).
    Io,
    /// The KV caches.
    Kv,
    /// Load-time constants (weights in the forms the kernels read).
    Weights,
    /// One slot of the kernels' scratch buffer.
    Scratch(Scratch),
}

/// A slot of the scratch buffer shared by the launches that need it (they run one after another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scratch {
    /// Attention's per-split partial accumulators `[h, splits, d]` f32 (global merge).
    AttPartials,
    /// Attention's per-split `(max, sum)` pairs `[h, splits, 2]` f32.
    AttMaxSum,
    /// Attention's per-KV-head completion counters (u32; start at 0, reset by the kernel).
    AttCounters,
    /// argmax's per-block partial values (f32).
    ArgmaxValues,
    /// argmax's per-block partial indices (i32).
    ArgmaxIndices,
    /// argmax's completion counter (u32; starts at 0, reset by the kernel).
    ArgmaxCounter,
    /// Rotary frequency table number `i` (`[d / 2]` f32, uploaded once).
    RopeTable(u8),
    /// A prefill GEMM's bf16 activation operand `[m, k]` (written by its prologue launch, read by
    /// the GEMM right after).
    GemmOperand,
}

impl Region {
    fn tag(self) -> u64 {
        match self {
            Region::Arena => 1,
            Region::Io => 2,
            Region::Kv => 3,
            Region::Weights => 4,
            Region::Scratch(s) => match s {
                Scratch::AttPartials => 5,
                Scratch::AttMaxSum => 6,
                Scratch::AttCounters => 7,
                Scratch::ArgmaxValues => 8,
                Scratch::ArgmaxIndices => 9,
                Scratch::ArgmaxCounter => 10,
                Scratch::RopeTable(i) => 16 + i as u64,
                Scratch::GemmOperand => 11,
            },
        }
    }

    fn from_tag(tag: u64) -> Option<Region> {
        Some(match tag {
            1 => Region::Arena,
            2 => Region::Io,
            3 => Region::Kv,
            4 => Region::Weights,
            5 => Region::Scratch(Scratch::AttPartials),
            6 => Region::Scratch(Scratch::AttMaxSum),
            7 => Region::Scratch(Scratch::AttCounters),
            8 => Region::Scratch(Scratch::ArgmaxValues),
            9 => Region::Scratch(Scratch::ArgmaxIndices),
            10 => Region::Scratch(Scratch::ArgmaxCounter),
            11 => Region::Scratch(Scratch::GemmOperand),
            16..=271 => Region::Scratch(Scratch::RopeTable((tag - 16) as u8)),
            _ => return None,
        })
    }

    /// The region's name in printed plans.
    pub fn name(self) -> String {
        match self {
            Region::Arena => "arena".into(),
            Region::Io => "io".into(),
            Region::Kv => "kv".into(),
            Region::Weights => "weights".into(),
            Region::Scratch(s) => match s {
                Scratch::AttPartials => "scratch.att_partials".into(),
                Scratch::AttMaxSum => "scratch.att_max_sum".into(),
                Scratch::AttCounters => "scratch.att_counters".into(),
                Scratch::ArgmaxValues => "scratch.argmax_values".into(),
                Scratch::ArgmaxIndices => "scratch.argmax_indices".into(),
                Scratch::ArgmaxCounter => "scratch.argmax_counter".into(),
                Scratch::RopeTable(i) => format!("scratch.rope{i}"),
                Scratch::GemmOperand => "scratch.gemm_operand".into(),
            },
        }
    }
}

/// Bits of a symbolic [`Ptr`] that hold the byte offset; the region tag sits above them. Device
/// addresses of x86-64 CUDA (and plan offsets) are far below 2^56.
const OFFSET_BITS: u32 = 56;

/// A pointer field of a kernel's parameters: null, a device address, or (in a plan) a symbolic
/// `region + offset`. Eight bytes, as the kernel's pointer.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Ptr(u64);

impl Ptr {
    /// The null pointer (an absent nullable operand).
    pub const NULL: Ptr = Ptr(0);

    /// The symbolic address `offset` bytes into `region`.
    pub fn at(region: Region, offset: usize) -> Ptr {
        debug_assert!((offset as u64) < (1 << OFFSET_BITS));
        Ptr(region.tag() << OFFSET_BITS | offset as u64)
    }

    /// A device address (already bound), e.g. a buffer outside any plan.
    pub fn device(addr: DevPtr) -> Ptr {
        Ptr(addr)
    }

    /// The region and offset of a symbolic pointer; `None` for null or a device address.
    pub fn symbolic(self) -> Option<(Region, usize)> {
        Region::from_tag(self.0 >> OFFSET_BITS)
            .map(|r| (r, (self.0 & ((1 << OFFSET_BITS) - 1)) as usize))
    }

    /// Whether the pointer is null.
    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    /// Whether the address is a multiple of `n` bytes. Region bases are 256-byte aligned
    /// (`cuMemAlloc`), so a symbolic pointer's alignment is its offset's.
    pub fn is_aligned(self, n: usize) -> bool {
        match self.symbolic() {
            Some((_, off)) => off.is_multiple_of(n),
            None => self.0.is_multiple_of(n as u64),
        }
    }

    /// This pointer moved `bytes` further.
    pub fn offset_by(self, bytes: usize) -> Ptr {
        Ptr(self.0 + bytes as u64)
    }

    /// The raw 64-bit value (a device address once bound).
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Ptr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Ptr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.symbolic() {
            Some((r, off)) => write!(f, "{}+{off:#x}", r.name()),
            None if self.0 == 0 => f.write_str("null"),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// The kind of C type a field has on the kernel side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CKind {
    /// A pointer (any pointee).
    Pointer,
    /// `unsigned long long`.
    U64,
    /// `int`.
    I32,
    /// `unsigned`.
    U32,
    /// `float`.
    F32,
}

/// The C type a field of a parameter struct has on the kernel side.
pub trait CField: Copy + fmt::Debug {
    /// Size in bytes on both sides.
    const SIZE: usize;
    /// What it is in C.
    const KIND: CKind;
    /// The field as a pointer, when it is one.
    fn as_ptr_mut(&mut self) -> Option<&mut Ptr> {
        None
    }
}

impl CField for Ptr {
    const SIZE: usize = 8;
    const KIND: CKind = CKind::Pointer;
    fn as_ptr_mut(&mut self) -> Option<&mut Ptr> {
        Some(self)
    }
}
impl CField for u64 {
    const SIZE: usize = 8;
    const KIND: CKind = CKind::U64;
}
impl CField for i32 {
    const SIZE: usize = 4;
    const KIND: CKind = CKind::I32;
}
impl CField for u32 {
    const SIZE: usize = 4;
    const KIND: CKind = CKind::U32;
}
impl CField for f32 {
    const SIZE: usize = 4;
    const KIND: CKind = CKind::F32;
}

/// One field of a parameter struct, for layout checks and printed plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    pub kind: CKind,
}

/// A kernel family's parameter struct.
pub trait KernelParams: Pod + fmt::Debug {
    /// The struct's name in `kernels/params.cuh`.
    const C_NAME: &'static str;
    /// Every field, in order.
    fn layout() -> Vec<FieldLayout>;
    /// Every pointer field.
    fn ptrs_mut(&mut self) -> Vec<&mut Ptr>;
    /// `name=value` of every field but the padding.
    fn describe(&self) -> Vec<(&'static str, String)>;
}

/// Declares a parameter struct (and its [`KernelParams`] impl) mirroring the C struct of the same
/// name in `kernels/params.cuh`. Fields named `pad_` are padding.
macro_rules! kernel_params {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl KernelParams for $name {
            const C_NAME: &'static str = stringify!($name);
            fn layout() -> Vec<FieldLayout> {
                vec![$(FieldLayout {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    size: <$ty as CField>::SIZE,
                    kind: <$ty as CField>::KIND,
                }),*]
            }
            fn ptrs_mut(&mut self) -> Vec<&mut Ptr> {
                let mut out = Vec::new();
                $(if let Some(p) = CField::as_ptr_mut(&mut self.$field) { out.push(p); })*
                out
            }
            fn describe(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $(if stringify!($field) != "pad_" {
                    out.push((stringify!($field), format!("{:?}", self.$field)));
                })*
                out
            }
        }
    };
}

kernel_params! {
    /// Every GEMV variant of `kernels/gemv.cu`: `y [m, n] = prologue(x) · wᵀ (+ resid)`.
    pub struct GemvParams {
        /// Weights `[n, k]` (the kernel's dtype suffix).
        pub w: Ptr,
        /// Activations `[m, k]` f32 (`[m, 2k]` for `pro` 2).
        pub x: Ptr,
        /// `pro` 1: the rms_norm weight `[k]` f32; else null.
        pub norm_w: Ptr,
        /// Nullable residual `[m, n]` f32.
        pub resid: Ptr,
        /// Output `[m, n]` f32 (`[m, n / 2]` for the SwiGLU epilogue).
        pub y: Ptr,
        /// Nullable L2 prefetch range start (16-byte aligned).
        pub pf: Ptr,
        /// `gemv_argmax`: the argmax result `i32[1]`.
        pub am_out: Ptr,
        /// `gemv_argmax`: per-block partial values.
        pub am_v: Ptr,
        /// `gemv_argmax`: per-block partial indices.
        pub am_i: Ptr,
        /// `gemv_argmax`: completion counter.
        pub am_counter: Ptr,
        /// Bytes of the L2 prefetch range.
        pub pf_bytes: u64,
        /// Rows of W.
        pub n: i32,
        /// Columns of W.
        pub k: i32,
        /// Prologue: 0 x as is, 1 rms_norm, 2 SwiGLU of `x [m, 2k]`.
        pub pro: i32,
        /// rms_norm epsilon (`pro` 1).
        pub eps: f32,
        /// Warps sharing one row (direct4 and staged kernels).
        pub wpr: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// Decode attention with GQA over the KV cache (`kernels/attention.cu`).
    pub struct AttentionParams {
        /// `q [h, d]` f32 (pre-norm when `qn` is set).
        pub q: Ptr,
        /// This step's `k [kvh, d]` f32.
        pub k_new: Ptr,
        /// This step's `v [kvh, d]` f32.
        pub v_new: Ptr,
        /// K cache `[max_ctx, kvh, d]`.
        pub kc: Ptr,
        /// V cache `[max_ctx, kvh, d]`.
        pub vc: Ptr,
        /// The position `i32[1]`.
        pub pos: Ptr,
        /// Output `[h, d]` f32.
        pub out: Ptr,
        /// Split partials `[h, splits, d]`.
        pub part: Ptr,
        /// Split `(max, sum)` pairs `[h, splits, 2]`.
        pub part_ml: Ptr,
        /// Per-KV-head counters `[kvh]`.
        pub counters: Ptr,
        /// Nullable q rms_norm weight `[d]`.
        pub qn: Ptr,
        /// Nullable k rms_norm weight `[d]`.
        pub kn: Ptr,
        /// Nullable rotary frequencies `[d / 2]` (null: no rope).
        pub inv_freq: Ptr,
        /// Nullable L2 prefetch range start.
        pub pf: Ptr,
        /// Bytes of the L2 prefetch range.
        pub pf_bytes: u64,
        pub h: i32,
        pub kvh: i32,
        pub max_ctx: i32,
        /// Softmax scale.
        pub scale: f32,
        /// q/k rms_norm epsilon.
        pub eps: f32,
        /// Smallest KV chunk per block (0: one batch of rows).
        pub min_chunk: i32,
        /// 1: the splits of a KV head merge inside a thread-block cluster.
        pub cluster: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `rms_norm_f32` (`kernels/norm.cu`).
    pub struct RmsNormParams {
        pub x: Ptr,
        pub w: Ptr,
        pub out: Ptr,
        pub rows: i32,
        pub d: i32,
        pub eps: f32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `norm_rope_f32` (`kernels/norm.cu`): optional rms_norm then rope of up to two tensors of
    /// `rows` rows of `d`: row `r` is head `r % heads` of token `r / heads`, read at
    /// `x + (r / heads) * ld + (r % heads) * d` and rotated at position `pos + r / heads`; outputs
    /// are contiguous `[rows, d]`. One token (decode): `heads = rows`, `ld = rows * d`.
    pub struct NormRopeParams {
        pub x1: Ptr,
        pub w1: Ptr,
        pub out1: Ptr,
        pub x2: Ptr,
        pub w2: Ptr,
        pub out2: Ptr,
        pub pos: Ptr,
        pub inv_freq: Ptr,
        pub rows1: i32,
        pub rows2: i32,
        pub d: i32,
        pub eps: f32,
        pub do_norm: i32,
        pub do_rope: i32,
        /// Rows (heads) per token of x1.
        pub heads1: i32,
        /// Rows per token of x2.
        pub heads2: i32,
        /// f32 elements from one token's first row of x1 to the next token's.
        pub ld1: i32,
        /// The same for x2.
        pub ld2: i32,
    }
}

kernel_params! {
    /// `ew_add_f32`, `ew_mul_f32`, `ew_silu_f32` (`kernels/elementwise.cu`): `out[i] = a[i] op
    /// b[i % nb]` (`nb < n`: a row-broadcast `b`).
    pub struct EwParams {
        pub a: Ptr,
        pub b: Ptr,
        pub out: Ptr,
        pub n: i32,
        pub nb: i32,
    }
}

kernel_params! {
    /// `copy2d_u32` (`kernels/elementwise.cu`): strides and counts in 4-byte words.
    pub struct Copy2dParams {
        pub dst: Ptr,
        pub src: Ptr,
        pub dst_stride: i32,
        pub src_stride: i32,
        pub rows: i32,
        pub cols: i32,
    }
}

kernel_params! {
    /// `step_advance` (`kernels/elementwise.cu`): the self-feeding end of a greedy decode step.
    pub struct StepAdvanceParams {
        pub next: Ptr,
        pub token: Ptr,
        pub pos: Ptr,
        pub history: Ptr,
        pub history_len: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `embedding_{dtype}` (`kernels/embedding.cu`).
    pub struct EmbeddingParams {
        pub table: Ptr,
        pub ids: Ptr,
        pub out: Ptr,
        pub hidden: i32,
        pub vocab: i32,
    }
}

kernel_params! {
    /// `argmax_f32` (`kernels/argmax.cu`).
    pub struct ArgmaxParams {
        pub x: Ptr,
        pub part_v: Ptr,
        pub part_i: Ptr,
        pub counter: Ptr,
        pub out: Ptr,
        pub n: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `bench_fill_u32` (`kernels/bench.cu`).
    pub struct BenchFillParams {
        pub p: Ptr,
        pub n: u64,
        pub seed: u32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `bench_read` (`kernels/bench.cu`).
    pub struct BenchReadParams {
        pub p: Ptr,
        pub sink: Ptr,
        pub n16: u64,
    }
}

/// Threads per CTA of the persistent kernel (`PST_THREADS` in `kernels/params.cuh`).
pub const PERSISTENT_THREADS: u32 = 512;

kernel_params! {
    /// One tile instruction of the persistent kernel (`kernels/persistent.cu`): rows
    /// `[row0, row0 + rows)` of `y = x · Wᵀ`, W bf16 `[n, k]`. Lives in device memory.
    pub struct PersistentInsn {
        /// W `[n, k]` bf16 (the whole matrix).
        pub w: Ptr,
        /// x `[k]` f32.
        pub x: Ptr,
        /// y `[n]` f32.
        pub y: Ptr,
        pub row0: i32,
        pub rows: i32,
        pub k: i32,
        /// -1: no wait; else wait until `counters[c] >= epoch * wait_target`.
        pub wait_counter: i32,
        pub wait_target: u32,
        /// -1: none; else `counters[c] += 1` once the rows are written.
        pub signal_counter: i32,
    }
}

kernel_params! {
    /// `gemm_prologue_f32` (`kernels/prefill.cu`): the bf16 operand of a prefill GEMM,
    /// `xb [m, k] = bf16(prologue(x))` (`pro` as [`GemvParams::pro`]), and, with `resid`, the GEMM's
    /// output pre-filled with the residual, `c [m, n] = resid` (the GEMM then adds into it with
    /// beta = 1).
    pub struct GemmPrologueParams {
        /// `x [m, k]` f32 (`[m, 2k]` for `pro` 2).
        pub x: Ptr,
        /// `pro` 1: the rms_norm weight `[k]` f32; else null.
        pub norm_w: Ptr,
        /// Nullable residual: `[m, n]` f32, or one row `[n]` (`resid_rows` 1) added to every row.
        pub resid: Ptr,
        /// Output: `x` after the prologue, rounded to bf16, `[m, k]`.
        pub xb: Ptr,
        /// With `resid`: the GEMM output `[m, n]` f32, written with the residual.
        pub c: Ptr,
        pub m: i32,
        pub k: i32,
        pub n: i32,
        /// Prologue: 0 x as is, 1 rms_norm, 2 SwiGLU of `x [m, 2k]`.
        pub pro: i32,
        pub eps: f32,
        /// Rows of `resid`: `m`, or 1 for a bias broadcast over the rows.
        pub resid_rows: i32,
    }
}

kernel_params! {
    /// The first timeout of a persistent launch (`code` 0: none), read back by the host.
    pub struct PersistentError {
        pub code: i32,
        pub abort: i32,
        pub insn: i32,
        pub counter: i32,
        pub expected: u32,
        pub seen: u32,
        pub cta: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `kv_append_{dtype}` (`kernels/prefill.cu`): stores the `t` k / v rows of a prefill chunk at
    /// cache rows `pos .. pos + t`, rounded to the cache dtype.
    pub struct KvAppendParams {
        /// `k [t, row]` f32, token `i` at `k + i * k_ld`.
        pub k: Ptr,
        /// `v [t, row]` f32, token `i` at `v + i * v_ld`.
        pub v: Ptr,
        /// K cache `[max_ctx, row]`.
        pub kc: Ptr,
        /// V cache `[max_ctx, row]`.
        pub vc: Ptr,
        /// The first token's position `i32[1]`.
        pub pos: Ptr,
        pub t: i32,
        /// Elements of one cache row (`kv_heads * head_dim`).
        pub row: i32,
        pub k_ld: i32,
        pub v_ld: i32,
        pub max_ctx: i32,
        pub pad_: i32,
    }
}

kernel_params! {
    /// `persistent_gemv` (`kernels/persistent.cu`).
    pub struct PersistentParams {
        pub insns: Ptr,
        pub queue_start: Ptr,
        pub counters: Ptr,
        pub epochs: Ptr,
        pub err: Ptr,
        /// Shared memory for weight slices, bytes; x `[max k]` f32 follows it.
        pub ring_bytes: u32,
        /// 1: ignore waits (streaming-only measurement).
        pub flags: u32,
    }
}

kernel_params! {
    /// `attention_prefill_{cache dtype}_d{D}_g{GM}` (`kernels/attention_prefill.cu`): causal
    /// attention of `t` query tokens at positions `pos .. pos + t` over cache rows `0 ..= pos + i`
    /// (the chunk's rows already appended), GQA, f32 online softmax.
    pub struct PrefillAttentionParams {
        /// `q [t, h, D]` f32, token `i` at `q + i * q_ld`.
        pub q: Ptr,
        /// K cache `[max_ctx, kvh, D]`.
        pub kc: Ptr,
        /// V cache `[max_ctx, kvh, D]`.
        pub vc: Ptr,
        /// The first token's position `i32[1]`.
        pub pos: Ptr,
        /// Output `[t, h, D]` f32.
        pub out: Ptr,
        pub t: i32,
        pub h: i32,
        pub kvh: i32,
        pub max_ctx: i32,
        /// f32 elements between consecutive tokens of `q`.
        pub q_ld: i32,
        /// Softmax scale.
        pub scale: f32,
    }
}

kernel_params! {
    /// A cuBLAS GEMM, not a kernel (host side only; no struct in `kernels/params.cuh`):
    /// `c [m, n] = b [m, k] · aᵀ + beta · c`, row-major, with `a` the weight `W [n, k]` and `b` the
    /// activations, both bf16, `c` f32, f32 accumulation (`cublasGemmEx`, `CUBLAS_COMPUTE_32F`).
    pub struct GemmParams {
        /// `W [n, k]` bf16.
        pub a: Ptr,
        /// `x [m, k]` bf16.
        pub b: Ptr,
        /// `y [m, n]` f32.
        pub c: Ptr,
        pub m: i32,
        pub n: i32,
        pub k: i32,
        /// 0: `c` is overwritten; 1: `c` (pre-filled with a residual) is added to.
        pub beta: f32,
    }
}

impl GemmParams {
    /// Floating-point operations of the GEMM (`2 m n k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Query rows (tokens x heads of one KV head) per block of the prefill attention kernel
/// (`PA_ROWS` in `kernels/params.cuh`).
pub const PREFILL_ATT_ROWS: u32 = 64;
/// Keys per shared-memory tile of the prefill attention kernel (`PA_KEYS`).
pub const PREFILL_ATT_KEYS: u32 = 32;
/// Threads per block of the prefill attention kernel (`PA_THREADS`).
pub const PREFILL_ATT_THREADS: u32 = 128;

/// Dynamic shared memory of the prefill attention kernel for head dim `d`: q `[PA_ROWS, d + 4]`,
/// k and v `[PA_KEYS, d + 4]`, and the probabilities `[PA_ROWS, PA_KEYS + 4]`, f32.
pub const fn prefill_attention_smem(d: usize) -> u32 {
    let (rows, keys) = (PREFILL_ATT_ROWS as usize, PREFILL_ATT_KEYS as usize);
    ((rows * (d + 4) + 2 * keys * (d + 4) + rows * (keys + 4)) * 4) as u32
}

/// The parameters of one launch, of whichever kernel family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Params {
    Gemv(GemvParams),
    Attention(AttentionParams),
    RmsNorm(RmsNormParams),
    NormRope(NormRopeParams),
    Ew(EwParams),
    Copy2d(Copy2dParams),
    StepAdvance(StepAdvanceParams),
    Embedding(EmbeddingParams),
    Argmax(ArgmaxParams),
    BenchFill(BenchFillParams),
    BenchRead(BenchReadParams),
    Persistent(PersistentParams),
    GemmPrologue(GemmPrologueParams),
    KvAppend(KvAppendParams),
    PrefillAttention(PrefillAttentionParams),
    /// A cuBLAS GEMM (no kernel of ours).
    Gemm(GemmParams),
}

/// Applies `$f` to the struct inside a [`Params`].
macro_rules! with_params {
    ($p:expr, $x:ident => $e:expr) => {
        match $p {
            Params::Gemv($x) => $e,
            Params::Attention($x) => $e,
            Params::RmsNorm($x) => $e,
            Params::NormRope($x) => $e,
            Params::Ew($x) => $e,
            Params::Copy2d($x) => $e,
            Params::StepAdvance($x) => $e,
            Params::Embedding($x) => $e,
            Params::Argmax($x) => $e,
            Params::BenchFill($x) => $e,
            Params::BenchRead($x) => $e,
            Params::Persistent($x) => $e,
            Params::GemmPrologue($x) => $e,
            Params::KvAppend($x) => $e,
            Params::PrefillAttention($x) => $e,
            Params::Gemm($x) => $e,
        }
    };
}

impl Params {
    /// The struct's bytes, as the kernel reads its parameter.
    pub fn bytes(&self) -> &[u8] {
        with_params!(self, p => bytemuck::bytes_of(p))
    }

    /// Every pointer field.
    pub fn ptrs_mut(&mut self) -> Vec<&mut Ptr> {
        with_params!(self, p => p.ptrs_mut())
    }

    /// `name=value` of every field.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        with_params!(self, p => p.describe())
    }

    /// The L2 prefetch range fields of kernels that can prefetch (GEMV, attention).
    pub fn prefetch_mut(&mut self) -> Option<(&mut Ptr, &mut u64)> {
        match self {
            Params::Gemv(p) => Some((&mut p.pf, &mut p.pf_bytes)),
            Params::Attention(p) => Some((&mut p.pf, &mut p.pf_bytes)),
            _ => None,
        }
    }

    /// These parameters with every symbolic pointer replaced by `resolve(region, offset)`; null and
    /// device pointers are kept.
    pub fn bind(&self, resolve: &dyn Fn(Region, usize) -> DevPtr) -> Params {
        let mut out = *self;
        for p in out.ptrs_mut() {
            if let Some((r, off)) = p.symbolic() {
                *p = Ptr::device(resolve(r, off));
            }
        }
        out
    }
}

/// Helpers of [`c_layout_assertions`]: `probe<P>::at(i)` is the address of element `i` of a static
/// array of `P`'s pointee (`char` for `void`), an address constant that converts to `P`.
const C_PROBES: &str = r#"
template <typename T> struct braid_unconst { typedef T t; };
template <typename T> struct braid_unconst<const T> { typedef T t; };
template <typename T> struct braid_cell { typedef T t; };
template <> struct braid_cell<void> { typedef char t; };
template <typename T> __device__ T braid_cells[64];
template <typename P> struct braid_probe;
template <typename T> struct braid_probe<T*> {
    __device__ static constexpr T* at(int i) {
        return braid_cells<typename braid_cell<typename braid_unconst<T>::t>::t> + i;
    }
};
"#;

/// The C source of `static_assert`s that `kernels/params.cuh`'s structs and constants match this
/// module, compiled with NVRTC by CI (`tests/nvrtc_compile.rs`). For each struct: its size equals
/// the Rust struct's; an aggregate initialised positionally with one distinct value per Rust field
/// (an address for pointers, `i + 1` for scalars) reads each value back under the Rust field's name,
/// so the C fields have the same names, order and kinds; and each field has the Rust field's size.
/// With equal total sizes and no padding on the Rust side, every offset matches. Also
/// `GEMV_THREADS` and `ATT_WARPS_OF` at every attention instantiation.
pub fn c_layout_assertions() -> String {
    fn one<P: KernelParams>(out: &mut String) {
        let name = P::C_NAME;
        let fields = P::layout();
        out.push_str(&format!(
            "static_assert(sizeof({name}) == {}, \"sizeof({name}) differs from params.rs\");\n",
            std::mem::size_of::<P>()
        ));
        let value = |i: usize, f: &FieldLayout| match f.kind {
            CKind::Pointer => format!("braid_probe<decltype({name}::{})>::at({i})", f.name),
            CKind::F32 => format!("{}.0f", i + 1),
            CKind::U64 => format!("{}ull", i + 1),
            CKind::I32 | CKind::U32 => format!("{}", i + 1),
        };
        let init: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| value(i, f))
            .collect();
        out.push_str(&format!(
            "constexpr {name} braid_check_{name} = {{{}}};\n",
            init.join(", ")
        ));
        for (i, f) in fields.iter().enumerate() {
            out.push_str(&format!(
                "static_assert(braid_check_{name}.{0} == {1} && sizeof(braid_check_{name}.{0}) == {2}, \
                 \"{name}.{0}: name, order or size differs from params.rs\");\n",
                f.name,
                value(i, f),
                f.size
            ));
        }
    }
    let mut s = String::from("#include \"params.cuh\"\n");
    s.push_str(C_PROBES);
    one::<GemvParams>(&mut s);
    one::<AttentionParams>(&mut s);
    one::<RmsNormParams>(&mut s);
    one::<NormRopeParams>(&mut s);
    one::<EwParams>(&mut s);
    one::<Copy2dParams>(&mut s);
    one::<StepAdvanceParams>(&mut s);
    one::<EmbeddingParams>(&mut s);
    one::<ArgmaxParams>(&mut s);
    one::<BenchFillParams>(&mut s);
    one::<BenchReadParams>(&mut s);
    one::<PersistentInsn>(&mut s);
    one::<PersistentError>(&mut s);
    one::<PersistentParams>(&mut s);
    s.push_str(&format!(
        "static_assert(PST_THREADS == {PERSISTENT_THREADS}, \"PST_THREADS differs from params.rs\");\n"
    ));
    one::<GemmPrologueParams>(&mut s);
    one::<KvAppendParams>(&mut s);
    one::<PrefillAttentionParams>(&mut s);
    s.push_str(&format!(
        "static_assert(GEMV_THREADS == {GEMV_THREADS}, \"GEMV_THREADS differs from params.rs\");\n"
    ));
    for (name, v) in [
        ("PA_ROWS", PREFILL_ATT_ROWS),
        ("PA_KEYS", PREFILL_ATT_KEYS),
        ("PA_THREADS", PREFILL_ATT_THREADS),
    ] {
        s.push_str(&format!(
            "static_assert({name} == {v}, \"{name} differs from params.rs\");\n"
        ));
    }
    let (dims, groups) = ATTENTION_INSTANCES;
    for d in dims {
        for gm in groups {
            s.push_str(&format!(
                "static_assert(ATT_WARPS_OF({gm}, {d}) == {}, \"ATT_WARPS_OF({gm}, {d}) differs from params.rs\");\n",
                attention_warps(gm, d)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_pointers_round_trip_and_print() {
        let p = Ptr::at(Region::Weights, 0x1230);
        assert_eq!(p.symbolic(), Some((Region::Weights, 0x1230)));
        assert_eq!(p.to_string(), "weights+0x1230");
        assert!(p.is_aligned(16) && !p.offset_by(4).is_aligned(16));
        let r = Ptr::at(Region::Scratch(Scratch::RopeTable(3)), 0);
        assert_eq!(
            r.symbolic(),
            Some((Region::Scratch(Scratch::RopeTable(3)), 0))
        );
        assert_eq!(Ptr::NULL.to_string(), "null");
        assert_eq!(Ptr::NULL.symbolic(), None);
        let d = Ptr::device(0x7f00_1234_0000);
        assert_eq!(d.symbolic(), None);
        assert_eq!(d.raw(), 0x7f00_1234_0000);
    }

    #[test]
    fn binding_replaces_symbolic_pointers_only() {
        let p = Params::Ew(EwParams {
            a: Ptr::at(Region::Arena, 256),
            b: Ptr::NULL,
            out: Ptr::at(Region::Io, 0),
            n: 7,
            nb: 7,
        });
        let bound = p.bind(&|r, off| match r {
            Region::Arena => 0x1000 + off as u64,
            _ => 0x9000 + off as u64,
        });
        let Params::Ew(e) = bound else { panic!() };
        assert_eq!(
            (e.a.raw(), e.b.raw(), e.out.raw(), e.n),
            (0x1100, 0, 0x9000, 7)
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        fn check<P: KernelParams>() {
            let l = P::layout();
            let mut at = 0;
            for f in &l {
                assert_eq!(f.offset, at, "{}.{}", P::C_NAME, f.name);
                at += f.size;
            }
            assert_eq!(at, std::mem::size_of::<P>(), "{}", P::C_NAME);
        }
        check::<GemvParams>();
        check::<AttentionParams>();
        check::<NormRopeParams>();
        check::<BenchReadParams>();
        let mut g = GemvParams::default();
        assert_eq!(g.ptrs_mut().len(), 10);
    }
}

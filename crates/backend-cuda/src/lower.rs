//! Op -> kernel lowering: turns every node of a planned graph into zero or more [`Launch`]es with
//! resolved device pointers. Leaves, constants, `reshape` and view `split`s cost no launch.
//!
//! | op | kernel (kernels/) |
//! | --- | --- |
//! | embedding | `embedding_{dtype}` (embedding.cu) |
//! | rms_norm | `rms_norm_f32` (norm.cu) |
//! | rope, fused_qk_norm_rope | `norm_rope_f32` (norm.cu) |
//! | matmul, fused_rms_norm_matmul, fused_matmul_add, fused_gated_mlp | `gemv_direct4_{dtype}`, `gemv_direct2_{dtype}`, `gemv_direct2_glu_{dtype}`, `gemv_{dtype}` or `gemv_scalar_{dtype}` (gemv.cu) |
//! | add, mul, silu | `ew_add_f32`, `ew_mul_f32`, `ew_silu_f32` (elementwise.cu) |
//! | split (not a view), concat | `copy2d_u32`, one launch per slice (elementwise.cu) |
//! | attention | `attention_{cache dtype}_d{head_dim}_g{group}` (attention.cu) |
//! | argmax | `argmax_f32` (argmax.cu), or `gemv_argmax_{dtype}` (gemv.cu) |
//!
//! Backend fusions (each decided from ops and shapes alone, each computing the same values):
//! - a `fused_qk_norm_rope` whose two outputs feed only one `attention` (as its q and k, at the same
//!   position) costs no launch of its own: the attention kernel applies the norms and the rotary
//!   embedding in its prologue (kernels/attention.cu);
//! - a gate/up `fused_rms_norm_matmul` feeding only a `fused_gated_mlp` writes silu(gate) · up in
//!   its epilogue (`gemv_direct2_glu`), and the down projection reads it as plain x;
//! - an `argmax` right after the staged GEMV that wrote its input (an LM head) runs inside that
//!   GEMV (`gemv_argmax`).
//!
//! L2 prefetch (off by default: on an H200 it cost 3-6% of the step): every GEMV and attention
//! launch can pull a later launch's weights into L2 while it runs (`l2_prefetch_share` in
//! kernels/common.cuh). With `BRAID_L2_PREFETCH=d`, the weights of launch `j` are assigned to launch
//! `j - d` (or the nearest earlier free one), at most [`L2_PREFETCH_MAX`] bytes each.
//!
//! Tuning knobs (environment variables, read when an executor is built; the defaults are the
//! fastest measured on an H200 for Qwen3-0.6B shapes):
//! - `BRAID_GEMV_KERNEL`: `direct` or `smem` for every vectorized GEMV (default: `direct` while a
//!   wave of warps covers the rows about once, `smem` for taller matrices such as an LM head);
//! - `BRAID_GEMV_ROWS2`: when the two-rows-per-warp GEMV runs: 0 never, 1 when the rows outnumber a
//!   wave of warps (default), 2 whenever a row would get a single warp;
//! - `BRAID_GEMV_BLOCKS_PER_SM`: cap on resident GEMV blocks per multiprocessor (default: all fit);
//! - `BRAID_GEMV_MAX_WPR`: cap on warps sharing one weight row (default 8);
//! - `BRAID_L2_PREFETCH`: L2 prefetch distance in launches (default 0: off);
//! - `BRAID_ATT_CLUSTER`: 0 turns off the thread-block-cluster merge of attention's KV splits
//!   (default on for sm_90+ while `--max-context` is short, see [`attention_cluster`]);
//! - `BRAID_ATT_SPLITS`: attention KV splits per KV head without a cluster (default about two
//!   blocks per SM);
//! - `BRAID_ATT_MIN_CHUNK`: smallest KV chunk per attention block (default one batch of rows);
//! - `BRAID_ATT_UNROLL`: KV rows per lane group in flight in attention (default 4);
//! - `BRAID_GEMV_GLU`: 0 turns off the SwiGLU epilogue of gate/up GEMVs;
//! - `BRAID_ARGMAX_FOLD`: 0 gives argmax its own launch.

use std::collections::HashSet;

use braid_ir::op::split_is_view;
use braid_ir::{DType, Graph, Op, TensorType, Value};
use cudarc::driver::sys;

use crate::device::{CudaDevice, DevPtr};
use crate::error::{CudaError, DriverContext};
use crate::launch::{KArg, Launch};
use crate::plan::{slot_form, Form, MemoryPlan, Region};

/// Threads per block of the GEMV kernels (8 warps).
const GEMV_THREADS: u32 = 256;
/// Largest weight range one launch prefetches into L2 (the L2 is 50-60 MB on Hopper).
pub const L2_PREFETCH_MAX: usize = 24 << 20;
/// Threads per block of the attention kernel for `gm` query heads per block and head dim `d`
/// (`ATT_WARPS_OF` in attention.cu).
fn attention_threads(gm: usize, d: usize) -> u32 {
    if gm * d <= 512 {
        256
    } else {
        128
    }
}
/// Rows of the KV cache one attention block loads at once (every warp, `ATT_UNROLL` rows in flight
/// per lane group, 4 unless `BRAID_ATT_UNROLL` says otherwise; attention.cu), for `gm` query heads
/// per block, head dim `d` and a cache of `vec` elements per 16-byte vector. A block's chunk is at
/// least this long.
fn attention_batch_rows(gm: usize, d: usize, vec: usize) -> usize {
    let warps = if gm * d <= 512 { 8 } else { 4 };
    let unroll = attention_unroll_knob().unwrap_or(4);
    let lanes_per_row = (d / vec).min(32);
    warps * (32 / lanes_per_row) * unroll
}
/// `BRAID_ATT_UNROLL`: KV rows per lane group in flight in attention, if set (1 to 16; the kernel's
/// default is 4).
fn attention_unroll_knob() -> Option<usize> {
    env_usize("BRAID_ATT_UNROLL").map(|u| u.clamp(1, 16))
}
/// Largest thread-block cluster of attention (the portable maximum on sm_90).
const ATT_CLUSTER_MAX: usize = 8;
/// Batches of rows one block of a clustered attention walks at most, at the longest context.
const ATT_CLUSTER_BATCHES: usize = 2;
/// Smallest KV chunk of a split that bounds the split count (a kernel's chunk is at least one batch
/// of rows, 32 or more).
const ATT_MIN_CHUNK: usize = 32;
/// Head dims the attention kernel is instantiated for.
const ATT_HEAD_DIMS: [usize; 3] = [64, 128, 256];
/// Query heads per KV head the attention kernel is instantiated for (a group of g uses the first
/// instantiation >= g).
const ATT_GROUPS: [usize; 4] = [1, 2, 4, 8];

/// Base device pointers of the executor's buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bases {
    pub arena: DevPtr,
    pub io: DevPtr,
    pub kv: DevPtr,
    pub weights: DevPtr,
    pub work: DevPtr,
}

/// Scratch shared by the launches that need it (they run one after another): attention's per-split
/// partial results and completion counters, argmax's per-block partials and counter. Counters start
/// at zero and are reset by the kernels themselves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Workspace {
    att_part: usize,
    att_ml: usize,
    att_counters: usize,
    am_v: usize,
    am_i: usize,
    am_counter: usize,
    /// Rotary frequency tables by `(theta bits, head_dim)`: offset and values ([`rope_inv_freq`]).
    pub rope: Vec<((u32, usize), usize, Vec<f32>)>,
    /// Bytes of the workspace buffer.
    pub bytes: usize,
}

impl Workspace {
    fn rope_offset(&self, theta: f32, d: usize) -> Option<usize> {
        self.rope
            .iter()
            .find(|(key, _, _)| *key == (theta.to_bits(), d))
            .map(|(_, off, _)| *off)
    }
}

/// Rotary frequencies `inv_freq[i] = 1 / theta^(2i / d)` for `i < d / 2`, in f32 exactly as HF's
/// default rope (and `braid_ir::interp`) computes them, so the kernels only multiply by the position.
pub fn rope_inv_freq(theta: f32, d: usize) -> Vec<f32> {
    (0..d / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32))
        .collect()
}

/// Number of KV splits (grid.y) of an attention over `kvh` KV heads and `max_ctx` rows on a device
/// with `sms` multiprocessors: about two blocks per multiprocessor at full length, at most 64.
pub fn attention_splits(kvh: usize, max_ctx: usize, sms: u32) -> usize {
    let want = env_usize("BRAID_ATT_SPLITS")
        .unwrap_or_else(|| (2 * sms as usize).div_ceil(kvh.max(1)))
        .clamp(1, 64);
    want.min(max_ctx.div_ceil(ATT_MIN_CHUNK)).max(1)
}

/// KV splits of an attention whose splits merge inside one thread-block cluster per KV head (partials
/// in distributed shared memory, no global round trip), or `None` when the global merge is used: on
/// devices before sm_90 (`cc_major` < 9), with `BRAID_ATT_CLUSTER=0`, or when `max_ctx` rows would
/// give the at most [`ATT_CLUSTER_MAX`] blocks of a cluster more than [`ATT_CLUSTER_BATCHES`]
/// batches of `batch_rows` each (long contexts want more blocks than a cluster holds).
pub fn attention_cluster(max_ctx: usize, batch_rows: usize, cc_major: i32) -> Option<usize> {
    let on = env_usize("BRAID_ATT_CLUSTER").is_none_or(|v| v != 0);
    let batches = max_ctx.div_ceil(batch_rows.max(1));
    (on && cc_major >= 9 && batches <= ATT_CLUSTER_MAX * ATT_CLUSTER_BATCHES)
        .then(|| batches.clamp(1, ATT_CLUSTER_MAX))
}

/// The attention kernel for a KV cache of `dtype`, head dim `d` and group instantiation `gm`: its
/// name and the preprocessor defines that compile only that variant of kernels/attention.cu.
/// `None` for a non-float cache dtype.
pub fn attention_variant(
    dtype: DType,
    d: usize,
    gm: usize,
) -> Option<(String, Vec<(&'static str, String)>)> {
    let suffix = dtype_suffix(dtype)?;
    let ct = match dtype {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        _ => "F32",
    };
    Some((
        format!("attention_{suffix}_d{d}_g{gm}"),
        vec![
            ("ATT_VARIANT", String::new()),
            ("ATT_SUFFIX", suffix.to_string()),
            ("ATT_CT", ct.to_string()),
            ("ATT_D", d.to_string()),
            ("ATT_GM", gm.to_string()),
        ]
        .into_iter()
        .chain(attention_unroll_knob().map(|u| ("ATT_UNROLL_N", u.to_string())))
        .collect(),
    ))
}

/// Head dims and group sizes the attention kernel is instantiated for.
pub const ATTENTION_INSTANCES: ([usize; 3], [usize; 4]) = (ATT_HEAD_DIMS, ATT_GROUPS);

/// Points launch `j - distance` (or the nearest earlier launch that can prefetch and has no
/// assignment yet) at the weights of every launch `j` that streams constant weights, capped at
/// [`L2_PREFETCH_MAX`] bytes. `distance` 0 turns prefetch off.
pub(crate) fn assign_l2_prefetch(launches: &mut [Launch], distance: usize) {
    if distance == 0 {
        return;
    }
    let mut taken = vec![false; launches.len()];
    for j in 0..launches.len() {
        let Some((ptr, bytes)) = launches[j].weight_range else {
            continue;
        };
        let Some(first) = j.checked_sub(distance) else {
            continue;
        };
        let Some(i) = (0..=first)
            .rev()
            .find(|&i| launches[i].prefetch_arg.is_some() && !taken[i])
        else {
            continue;
        };
        taken[i] = true;
        let slot = launches[i].prefetch_arg.unwrap_or_default();
        launches[i].args[slot] = KArg::Ptr(ptr);
        launches[i].args[slot + 1] = KArg::U64(bytes.min(L2_PREFETCH_MAX) as u64 & !15);
    }
}

/// A positive integer from the environment (a tuning knob), if set and valid.
fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Whether an argmax over the `len` f32 values at `x` can be computed by `prev`, the launch before it:
/// a staged GEMV (`gemv_{dtype}`, kernels/gemv.cu) of one x row whose output is exactly those
/// values. Off with `BRAID_ARGMAX_FOLD=0`.
fn argmax_folds_into(prev: &Launch, x: DevPtr, len: usize) -> bool {
    let staged = ["gemv_bf16", "gemv_f16", "gemv_f32"].contains(&prev.kernel.as_str());
    staged
        && env_usize("BRAID_ARGMAX_FOLD") != Some(0)
        && prev.grid.1 == 1
        && prev.args.get(4) == Some(&KArg::Ptr(x))
        && prev.args.get(5) == Some(&KArg::I32(len as i32))
}

/// Blocks of the argmax over `n` elements.
fn argmax_blocks(n: usize, sms: u32) -> usize {
    n.div_ceil(1024).clamp(1, 2 * sms as usize)
}

fn ty_of(g: &Graph, v: Value) -> Result<&TensorType, CudaError> {
    g.value_type(v).map_err(|e| CudaError::Graph(e.to_string()))
}

/// Sizes the workspace for every attention and argmax of `plan`.
pub(crate) fn workspace_layout(
    g: &Graph,
    plan: &MemoryPlan,
    sms: u32,
) -> Result<Workspace, CudaError> {
    let (mut part, mut ml, mut counters, mut blocks) = (0usize, 0usize, 0usize, 0usize);
    let mut rope: Vec<(f32, usize)> = Vec::new();
    for &n in &plan.order {
        let Some(node) = g.node(n.node) else { continue };
        let ins = g.inputs(n.node);
        match node.op {
            Op::Rope { theta } | Op::FusedQkNormRope { theta, .. } => {
                let d = ty_of(g, ins[0])?.last_dim();
                if !rope
                    .iter()
                    .any(|&(t, dd)| t.to_bits() == theta.to_bits() && dd == d)
                {
                    rope.push((theta, d));
                }
            }
            Op::Attention { .. } => {
                let q = ty_of(g, ins[0])?;
                let kc = ty_of(g, ins[3])?;
                let (h, d) = (q.shape[0], q.shape[1]);
                let (ctx, kvh) = (kc.shape[0], kc.shape[1]);
                let s = attention_splits(kvh, ctx, sms);
                part = part.max(h * s * d * 4);
                ml = ml.max(h * s * 2 * 4);
                counters = counters.max(kvh * 4);
            }
            Op::Argmax => {
                // Partials for argmax_f32, or for the GEMV it is folded into (8 blocks per SM at
                // most: 2,048 threads of 256-thread blocks).
                let x = ty_of(g, ins[0])?;
                blocks = blocks
                    .max(argmax_blocks(x.numel(), sms))
                    .max(8 * sms as usize);
            }
            _ => {}
        }
    }
    let al = |n: usize| n.div_ceil(256) * 256;
    let mut w = Workspace::default();
    let mut at = 0;
    for (slot, size) in [
        (&mut w.att_part, part),
        (&mut w.att_ml, ml),
        (&mut w.att_counters, counters),
        (&mut w.am_v, blocks * 4),
        (&mut w.am_i, blocks * 4),
        (&mut w.am_counter, 4),
    ] {
        *slot = at;
        at += al(size.max(4));
    }
    for (theta, d) in rope {
        w.rope
            .push(((theta.to_bits(), d), at, rope_inv_freq(theta, d)));
        at += al((d / 2).max(1) * 4);
    }
    w.bytes = at;
    Ok(w)
}

/// An operand resolved to a device pointer, with the dtype it has there.
#[derive(Clone, Debug)]
struct Operand {
    ptr: DevPtr,
    dtype: DType,
    ty: TensorType,
    /// Whether the operand is a load-time constant (in the weights buffer).
    is_const: bool,
}

/// Builds the launch list of a planned graph.
pub(crate) struct Lowerer<'a> {
    pub dev: &'a CudaDevice,
    pub g: &'a Graph,
    pub plan: &'a MemoryPlan,
    pub bases: Bases,
    pub work: Workspace,
}

fn dtype_suffix(d: DType) -> Option<&'static str> {
    match d {
        DType::BF16 => Some("bf16"),
        DType::F16 => Some("f16"),
        DType::F32 => Some("f32"),
        DType::I32 => None,
    }
}

impl Lowerer<'_> {
    /// Every launch of one decode step, in topological order.
    pub fn lower(&self) -> Result<Vec<Launch>, CudaError> {
        let absorbed = self.absorbed_qk_norm_rope();
        let glu = self.glu_epilogues();
        let mut launches = Vec::new();
        for &n in &self.plan.order {
            if self.plan.consts.contains(&n) || absorbed.contains(&n) {
                continue;
            }
            self.lower_node(n, &absorbed, &glu, &mut launches)?;
        }
        let distance = env_usize("BRAID_L2_PREFETCH").unwrap_or(0);
        assign_l2_prefetch(&mut launches, distance);
        Ok(launches)
    }

    /// The `fused_qk_norm_rope` nodes whose outputs feed only one `attention`, as its q (output 0) and
    /// k (output 1), with the same position operand: the attention kernel does their work.
    fn absorbed_qk_norm_rope(&self) -> HashSet<Value> {
        let mut absorbed = HashSet::new();
        for &n in &self.plan.order {
            let Some(node) = self.g.node(n.node) else {
                continue;
            };
            if !matches!(node.op, Op::FusedQkNormRope { .. }) {
                continue;
            }
            let out = |o: u32| Value {
                node: n.node,
                output: o,
            };
            let (uq, uk) = (self.g.uses(out(0)), self.g.uses(out(1)));
            if self.g.use_count(out(0)) != 1
                || self.g.use_count(out(1)) != 1
                || uq.len() != 1
                || uk.len() != 1
            {
                continue;
            }
            let ((a, qslot), (a2, kslot)) = (uq[0], uk[0]);
            let is_attention = self
                .g
                .node(a)
                .is_some_and(|x| matches!(x.op, Op::Attention { .. }));
            if a != a2 || qslot != 0 || kslot != 1 || !is_attention {
                continue;
            }
            let (qk_ins, att_ins) = (self.g.inputs(n.node), self.g.inputs(a));
            if qk_ins[4] == att_ins[5] {
                absorbed.insert(n);
            }
        }
        absorbed
    }

    /// The `fused_rms_norm_matmul` nodes (a gate/up projection, W = [gate; up] of `2i` rows) whose
    /// output feeds only a `fused_gated_mlp` with `i` columns: their GEMV writes silu(gate) · up
    /// (kernels/gemv.cu `gemv_direct2_glu`), and the down projection reads that as its plain x. Off
    /// with `BRAID_GEMV_GLU=0`.
    fn glu_epilogues(&self) -> HashSet<Value> {
        let mut glu = HashSet::new();
        if env_usize("BRAID_GEMV_GLU") == Some(0) {
            return glu;
        }
        for &n in &self.plan.order {
            if !matches!(
                self.g.node(n.node).map(|x| &x.op),
                Some(Op::FusedRmsNormMatmul { .. })
            ) {
                continue;
            }
            let uses = self.g.uses(n);
            if self.g.use_count(n) != 1 || uses.len() != 1 || uses[0].1 != 0 {
                continue;
            }
            let user = Value::of(uses[0].0);
            if !matches!(
                self.g.node(user.node).map(|x| &x.op),
                Some(Op::FusedGatedMlp)
            ) {
                continue;
            }
            let ins = self.g.inputs(n.node);
            let (Ok(x), Ok(w), Ok(down)) = (
                ty_of(self.g, ins[0]),
                ty_of(self.g, ins[2]),
                ty_of(self.g, self.g.inputs(user.node)[1]),
            ) else {
                continue;
            };
            let vec = if w.dtype == DType::F32 { 4 } else { 8 };
            if w.shape[0] == 2 * down.shape[1]
                && w.dtype.is_float()
                && x.last_dim().is_multiple_of(vec)
            {
                glu.insert(n);
            }
        }
        glu
    }

    fn unsupported(&self, n: Value, msg: impl Into<String>) -> CudaError {
        CudaError::Unsupported {
            node: self.plan.label(n),
            op: self.g.node(n.node).map_or("?", |x| x.op.name()).to_string(),
            msg: msg.into(),
        }
    }

    fn ptr_of_place(&self, v: Value) -> Result<DevPtr, CudaError> {
        let p = self.plan.places.get(&v).copied().ok_or_else(|| {
            CudaError::Graph(format!("{} has no device place", self.plan.label(v)))
        })?;
        let (region, offset) = self.plan.resolve(p);
        let base = match region {
            Region::Arena(_) => self.bases.arena,
            Region::Io => self.bases.io,
            Region::Kv => self.bases.kv,
            Region::Weights => self.bases.weights,
        };
        Ok(base + offset as u64)
    }

    /// Operand `slot` of node `n` (value `v`).
    fn operand(&self, n: Value, slot: usize, v: Value) -> Result<Operand, CudaError> {
        let ty = ty_of(self.g, v)?.clone();
        if self.plan.is_const(v) {
            let op = &self
                .g
                .node(n.node)
                .ok_or_else(|| self.unsupported(n, "node missing"))?
                .op;
            let form = slot_form(op, slot);
            let offset = self.plan.const_places.get(&(v, form)).ok_or_else(|| {
                CudaError::Graph(format!(
                    "constant {} was not uploaded as {form:?}",
                    self.plan.label(v)
                ))
            })?;
            let dtype = if form == Form::Raw {
                ty.dtype
            } else {
                DType::F32
            };
            return Ok(Operand {
                ptr: self.bases.weights + *offset as u64,
                dtype,
                ty,
                is_const: true,
            });
        }
        Ok(Operand {
            ptr: self.ptr_of_place(v)?,
            dtype: ty.dtype,
            ty,
            is_const: false,
        })
    }

    fn expect(&self, n: Value, what: &str, o: &Operand, dtype: DType) -> Result<(), CudaError> {
        if o.dtype != dtype {
            return Err(self.unsupported(
                n,
                format!(
                    "{what} must be {dtype} on the device, got {} ({})",
                    o.ty, o.dtype
                ),
            ));
        }
        Ok(())
    }

    fn output(&self, n: Value, o: usize) -> Result<DevPtr, CudaError> {
        self.ptr_of_place(Value {
            node: n.node,
            output: o as u32,
        })
    }

    /// The device pointer of the rotary frequency table for `theta` and head dim `d`.
    fn rope_table(&self, n: Value, theta: f32, d: usize) -> Result<DevPtr, CudaError> {
        self.work
            .rope_offset(theta, d)
            .map(|off| self.bases.work + off as u64)
            .ok_or_else(|| {
                self.unsupported(
                    n,
                    format!("no rotary table for theta {theta} and head_dim {d}"),
                )
            })
    }

    /// Lets `func` use up to the device's opt-in maximum of dynamic shared memory. (The attribute is
    /// per kernel, and several launches of one kernel may need different amounts: set the maximum
    /// once rather than the last launch's need.)
    fn allow_large_smem(
        &self,
        func: &cudarc::driver::CudaFunction,
        kernel: &str,
    ) -> Result<(), CudaError> {
        let max = self
            .dev
            .inner
            .ctx
            .attribute(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .ctx(|| "reading the shared-memory limit".into())?;
        let mut fixed = 0i32;
        // SAFETY: `func` is a live kernel handle; `fixed` is valid for writes.
        unsafe {
            sys::cuFuncGetAttribute(
                &mut fixed,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                func.cu_function(),
            )
        }
        .result()
        .ctx(|| format!("reading the static shared memory of kernel `{kernel}`"))?;
        let max = max - fixed;
        // SAFETY: `func` is a live kernel handle; the attribute takes a byte count.
        unsafe {
            sys::cuFuncSetAttribute(
                func.cu_function(),
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                max,
            )
        }
        .result()
        .ctx(|| format!("allowing {max} bytes of shared memory for kernel `{kernel}`"))
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        n: Value,
        file: &str,
        kernel: String,
        defines: &[(&str, &str)],
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: Vec<KArg>,
        bytes: usize,
    ) -> Result<Launch, CudaError> {
        let func = self.dev.kernel(file, &kernel, defines)?;
        if smem > 48 * 1024 {
            self.allow_large_smem(&func, &kernel)?;
        }
        let op = self.g.node(n.node).map_or("?", |x| x.op.name());
        Ok(Launch {
            op,
            node: self.plan.label(n),
            kernel,
            func,
            grid,
            block: (block, 1, 1),
            smem,
            cluster: None,
            args,
            bytes,
            bytes_per_kv_row: 0,
            prefetch_arg: None,
            weight_range: None,
            detail: String::new(),
        })
    }

    fn lower_node(
        &self,
        n: Value,
        absorbed: &HashSet<Value>,
        glu: &HashSet<Value>,
        out: &mut Vec<Launch>,
    ) -> Result<(), CudaError> {
        let node = self
            .g
            .node(n.node)
            .ok_or_else(|| CudaError::Graph(format!("node {} is missing", n.node.index())))?;
        let ins = self.g.inputs(n.node);
        let opnd = |slot: usize| self.operand(n, slot, ins[slot]);
        let sms = self.dev.sm_count();
        match &node.op {
            Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } | Op::Reshape { .. } => {}
            Op::Split { axis, .. } if split_is_view(*axis, &[ty_of(self.g, ins[0])?]) => {}
            Op::Embedding => {
                let table = opnd(0)?;
                let ids = opnd(1)?;
                self.expect(n, "ids", &ids, DType::I32)?;
                let suffix = dtype_suffix(table.dtype)
                    .ok_or_else(|| self.unsupported(n, "the table must be a float tensor"))?;
                let (vocab, hidden) = (table.ty.shape[0], table.ty.shape[1]);
                let nids = ids.ty.numel();
                let bytes = nids * hidden * (table.dtype.size_bytes() + 4) + nids * 4;
                out.push(self.make(
                    n,
                    "embedding.cu",
                    format!("embedding_{suffix}"),
                    &[],
                    (nids as u32, 1, 1),
                    256,
                    0,
                    vec![
                        KArg::Ptr(table.ptr),
                        KArg::Ptr(ids.ptr),
                        KArg::Ptr(self.output(n, 0)?),
                        KArg::I32(hidden as i32),
                        KArg::I32(vocab as i32),
                    ],
                    bytes,
                )?);
            }
            Op::RmsNorm { eps } => {
                let x = opnd(0)?;
                let w = opnd(1)?;
                self.expect(n, "x", &x, DType::F32)?;
                self.expect(n, "weight", &w, DType::F32)?;
                let d = x.ty.last_dim();
                let rows = x.ty.rows();
                out.push(self.make(
                    n,
                    "norm.cu",
                    "rms_norm_f32".into(),
                    &[],
                    (rows.div_ceil(8) as u32, 1, 1),
                    256,
                    0,
                    vec![
                        KArg::Ptr(x.ptr),
                        KArg::Ptr(w.ptr),
                        KArg::Ptr(self.output(n, 0)?),
                        KArg::I32(rows as i32),
                        KArg::I32(d as i32),
                        KArg::F32(*eps),
                    ],
                    (2 * rows * d + d) * 4,
                )?);
            }
            Op::Rope { theta } => {
                let x = opnd(0)?;
                let pos = opnd(1)?;
                self.expect(n, "x", &x, DType::F32)?;
                self.expect(n, "position", &pos, DType::I32)?;
                let (rows, d) = (x.ty.shape[0], x.ty.shape[1]);
                out.push(self.norm_rope(
                    n,
                    &x,
                    None,
                    self.output(n, 0)?,
                    rows,
                    None,
                    &pos,
                    d,
                    0.0,
                    *theta,
                )?);
            }
            Op::FusedQkNormRope { eps, theta } => {
                let (q, k, qn, kn, pos) = (opnd(0)?, opnd(1)?, opnd(2)?, opnd(3)?, opnd(4)?);
                for (what, o) in [("q", &q), ("k", &k), ("q_norm", &qn), ("k_norm", &kn)] {
                    self.expect(n, what, o, DType::F32)?;
                }
                self.expect(n, "position", &pos, DType::I32)?;
                let d = q.ty.shape[1];
                let second = (k.clone(), kn.clone(), self.output(n, 1)?, k.ty.shape[0]);
                out.push(self.norm_rope(
                    n,
                    &q,
                    Some(&qn),
                    self.output(n, 0)?,
                    q.ty.shape[0],
                    Some(second),
                    &pos,
                    d,
                    *eps,
                    *theta,
                )?);
            }
            Op::MatMul => {
                let (x, w) = (opnd(0)?, opnd(1)?);
                let k = x.ty.last_dim();
                out.push(self.gemv(n, &x, &w, None, None, 0, x.ty.rows(), k, 0.0)?);
            }
            Op::FusedRmsNormMatmul { eps } => {
                let (x, g, w) = (opnd(0)?, opnd(1)?, opnd(2)?);
                let k = x.ty.last_dim();
                out.push(if glu.contains(&n) {
                    self.gemv_glu(n, &x, &w, &g, k, *eps)?
                } else {
                    self.gemv(n, &x, &w, Some(&g), None, 1, x.ty.rows(), k, *eps)?
                });
            }
            Op::FusedMatmulAdd => {
                let (x, w, r) = (opnd(0)?, opnd(1)?, opnd(2)?);
                let k = x.ty.last_dim();
                out.push(self.gemv(n, &x, &w, None, Some(&r), 0, x.ty.rows(), k, 0.0)?);
            }
            Op::FusedGatedMlp => {
                let (gu, w, r) = (opnd(0)?, opnd(1)?, opnd(2)?);
                let k = w.ty.shape[1];
                // After a glu epilogue, gu holds silu(gate) · up in its first k columns.
                let pro = if glu.contains(&Value::of(ins[0].node)) {
                    0
                } else {
                    2
                };
                out.push(self.gemv(n, &gu, &w, None, Some(&r), pro, gu.ty.rows(), k, 0.0)?);
            }
            Op::Add | Op::Mul => {
                let (a, b) = (opnd(0)?, opnd(1)?);
                self.expect(n, "a", &a, DType::F32)?;
                self.expect(n, "b", &b, DType::F32)?;
                let len = a.ty.numel();
                let kernel = if matches!(node.op, Op::Add) {
                    "ew_add_f32"
                } else {
                    "ew_mul_f32"
                };
                out.push(self.make(
                    n,
                    "elementwise.cu",
                    kernel.into(),
                    &[],
                    (len.div_ceil(256).clamp(1, 8 * sms as usize) as u32, 1, 1),
                    256,
                    0,
                    vec![
                        KArg::Ptr(a.ptr),
                        KArg::Ptr(b.ptr),
                        KArg::Ptr(self.output(n, 0)?),
                        KArg::I32(len as i32),
                    ],
                    len * 12,
                )?);
            }
            Op::Silu => {
                let x = opnd(0)?;
                self.expect(n, "x", &x, DType::F32)?;
                let len = x.ty.numel();
                out.push(self.make(
                    n,
                    "elementwise.cu",
                    "ew_silu_f32".into(),
                    &[],
                    (len.div_ceil(256).clamp(1, 8 * sms as usize) as u32, 1, 1),
                    256,
                    0,
                    vec![
                        KArg::Ptr(x.ptr),
                        KArg::Ptr(self.output(n, 0)?),
                        KArg::I32(len as i32),
                    ],
                    len * 8,
                )?);
            }
            Op::Split { axis, sizes } => {
                let x = opnd(0)?;
                if x.dtype.size_bytes() != 4 {
                    return Err(
                        self.unsupported(n, format!("split of {} needs 4-byte elements", x.ty))
                    );
                }
                let outer: usize = x.ty.shape[..*axis].iter().product();
                let inner: usize = x.ty.shape[axis + 1..].iter().product();
                let src_stride = x.ty.shape[*axis] * inner;
                let mut at = 0;
                for (o, s) in sizes.iter().enumerate() {
                    let cols = s * inner;
                    out.push(self.copy2d(
                        n,
                        self.output(n, o)?,
                        cols,
                        x.ptr + (at * inner * 4) as u64,
                        src_stride,
                        outer,
                        cols,
                    )?);
                    at += s;
                }
            }
            Op::Concat { axis } => {
                let out_ty = &node.outputs[0];
                let outer: usize = out_ty.shape[..*axis].iter().product();
                let inner: usize = out_ty.shape[axis + 1..].iter().product();
                let dst_stride = out_ty.shape[*axis] * inner;
                let dst = self.output(n, 0)?;
                let mut at = 0;
                for slot in 0..ins.len() {
                    let x = opnd(slot)?;
                    if x.dtype.size_bytes() != 4 || x.dtype != out_ty.dtype {
                        return Err(self.unsupported(
                            n,
                            format!(
                                "concat input {} must be {} with 4-byte elements",
                                x.ty, out_ty.dtype
                            ),
                        ));
                    }
                    let cols = x.ty.shape[*axis] * inner;
                    out.push(self.copy2d(
                        n,
                        dst + (at * 4) as u64,
                        dst_stride,
                        x.ptr,
                        cols,
                        outer,
                        cols,
                    )?);
                    at += cols;
                }
            }
            Op::Attention { scale } => out.push(self.attention(n, &ins, *scale, absorbed)?),
            Op::Argmax => {
                let x = opnd(0)?;
                self.expect(n, "x", &x, DType::F32)?;
                let len = x.ty.numel();
                let w = self.bases.work;
                let partials = [
                    KArg::Ptr(w + self.work.am_v as u64),
                    KArg::Ptr(w + self.work.am_i as u64),
                    KArg::Ptr(w + self.work.am_counter as u64),
                ];
                if let Some(prev) = out.last_mut().filter(|l| argmax_folds_into(l, x.ptr, len)) {
                    // The GEMV that wrote x just before picks the argmax too (gemv_argmax_*).
                    let kernel = prev.kernel.replacen("gemv_", "gemv_argmax_", 1);
                    prev.func = self.dev.kernel("gemv.cu", &kernel, &[])?;
                    if prev.smem > 48 * 1024 {
                        self.allow_large_smem(&prev.func, &kernel)?;
                    }
                    prev.kernel = kernel;
                    prev.args.push(KArg::Ptr(self.output(n, 0)?));
                    prev.args.extend(partials);
                    prev.bytes += 4;
                    prev.detail.push_str(" +argmax");
                    return Ok(());
                }
                let blocks = argmax_blocks(len, sms);
                out.push(self.make(
                    n,
                    "argmax.cu",
                    "argmax_f32".into(),
                    &[],
                    (blocks as u32, 1, 1),
                    256,
                    0,
                    vec![
                        KArg::Ptr(x.ptr),
                        KArg::I32(len as i32),
                        partials[0],
                        partials[1],
                        partials[2],
                        KArg::Ptr(self.output(n, 0)?),
                    ],
                    len * 4 + 4,
                )?);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy2d(
        &self,
        n: Value,
        dst: DevPtr,
        dst_stride: usize,
        src: DevPtr,
        src_stride: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Launch, CudaError> {
        let total = rows * cols;
        self.make(
            n,
            "elementwise.cu",
            "copy2d_u32".into(),
            &[],
            (
                total
                    .div_ceil(256)
                    .clamp(1, 8 * self.dev.sm_count() as usize) as u32,
                1,
                1,
            ),
            256,
            0,
            vec![
                KArg::Ptr(dst),
                KArg::I32(dst_stride as i32),
                KArg::Ptr(src),
                KArg::I32(src_stride as i32),
                KArg::I32(rows as i32),
                KArg::I32(cols as i32),
            ],
            total * 8,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_rope(
        &self,
        n: Value,
        x1: &Operand,
        w1: Option<&Operand>,
        out1: DevPtr,
        rows1: usize,
        second: Option<(Operand, Operand, DevPtr, usize)>,
        pos: &Operand,
        d: usize,
        eps: f32,
        theta: f32,
    ) -> Result<Launch, CudaError> {
        if !d.is_multiple_of(2) {
            return Err(self.unsupported(n, format!("rope needs an even head_dim, got {d}")));
        }
        let (x2, w2, out2, rows2) = match &second {
            Some((x, w, o, r)) => (x.ptr, w.ptr, *o, *r),
            None => (0, 0, 0, 0),
        };
        let rows = rows1 + rows2;
        self.make(
            n,
            "norm.cu",
            "norm_rope_f32".into(),
            &[],
            (rows.div_ceil(8) as u32, 1, 1),
            256,
            0,
            vec![
                KArg::Ptr(x1.ptr),
                KArg::Ptr(w1.map_or(0, |w| w.ptr)),
                KArg::Ptr(out1),
                KArg::I32(rows1 as i32),
                KArg::Ptr(x2),
                KArg::Ptr(w2),
                KArg::Ptr(out2),
                KArg::I32(rows2 as i32),
                KArg::Ptr(pos.ptr),
                KArg::I32(d as i32),
                KArg::F32(eps),
                KArg::Ptr(self.rope_table(n, theta, d)?),
                KArg::I32(w1.is_some() as i32),
                KArg::I32(1),
            ],
            rows * d * 8 + 4,
        )
    }

    /// Checks a GEMV's operands (f32 x, norm weight and residual; a float weight) and returns the
    /// kernel suffix of the weight's dtype.
    fn gemv_operands(
        &self,
        n: Value,
        x: &Operand,
        w: &Operand,
        norm: Option<&Operand>,
        resid: Option<&Operand>,
    ) -> Result<&'static str, CudaError> {
        self.expect(n, "x", x, DType::F32)?;
        if let Some(g) = norm {
            self.expect(n, "norm weight", g, DType::F32)?;
        }
        if let Some(r) = resid {
            self.expect(n, "residual", r, DType::F32)?;
        }
        dtype_suffix(w.dtype)
            .ok_or_else(|| self.unsupported(n, format!("weight {} must be a float tensor", w.ty)))
    }

    /// `y [m, n] = prologue(x) · wᵀ (+ resid)`; see kernels/gemv.cu for `pro`.
    #[allow(clippy::too_many_arguments)]
    fn gemv(
        &self,
        n: Value,
        x: &Operand,
        w: &Operand,
        norm: Option<&Operand>,
        resid: Option<&Operand>,
        pro: i32,
        m: usize,
        k: usize,
        eps: f32,
    ) -> Result<Launch, CudaError> {
        let suffix = self.gemv_operands(n, x, w, norm, resid)?;
        let rows = w.ty.shape[0];
        let vec = if w.dtype == DType::F32 { 4 } else { 8 };
        let vectorized = k.is_multiple_of(vec) && w.ptr.is_multiple_of(16);
        let aligned = |o: Option<&Operand>| o.is_none_or(|o| o.ptr.is_multiple_of(16));
        let direct_ok = vectorized && aligned(Some(x)) && aligned(norm);
        let variant = std::env::var("BRAID_GEMV_KERNEL").unwrap_or_default();
        // Default: the direct path while a wave of warps covers the rows about once; the shared-memory
        // path for tall matrices (an LM head), where each warp walks many rows.
        let sms = self.dev.sm_count() as usize;
        let direct = direct_ok
            && match variant.as_str() {
                "smem" => false,
                "direct" => true,
                _ => rows <= 2 * 4 * sms * (GEMV_THREADS as usize / 32),
            };
        // Rows outnumbering one wave of warps (one row per warp): two rows per warp, all in flight.
        let wave = 4 * sms * (GEMV_THREADS as usize / 32);
        let rows2 = direct
            && !variant.starts_with("direct")
            && match env_usize("BRAID_GEMV_ROWS2").unwrap_or(1) {
                0 => false,
                1 => rows > wave,
                _ => rows * 2 > wave,
            };
        if rows2 {
            return self.gemv_rows2(n, x, w, norm, resid, pro, m, k, eps, suffix, false);
        }
        let (kernel, smem) = if direct {
            (
                format!("gemv_direct4_{suffix}"),
                if pro == 1 { (k * 4) as u32 } else { 0 },
            )
        } else if vectorized {
            (format!("gemv_{suffix}"), ((48 + k) * 4) as u32)
        } else {
            (format!("gemv_scalar_{suffix}"), ((48 + k) * 4) as u32)
        };
        let max_smem = 227 * 1024;
        if smem as usize > max_smem {
            return Err(self.unsupported(
                n,
                format!("k = {k} needs {smem} bytes of shared memory for x; at most {max_smem}"),
            ));
        }
        let func = self.dev.kernel("gemv.cu", &kernel, &[])?;
        if smem > 48 * 1024 {
            self.allow_large_smem(&func, &kernel)?;
        }
        let mut per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(GEMV_THREADS, smem as usize, None)
            .ctx(|| format!("querying the occupancy of kernel `{kernel}`"))?
            .max(1) as usize;
        if let Some(cap) = env_usize("BRAID_GEMV_BLOCKS_PER_SM") {
            per_sm = per_sm.min(cap.max(1));
        }
        let warps = (GEMV_THREADS / 32) as usize;
        let resident_warps = per_sm * self.dev.sm_count() as usize * warps;
        // Warps per row: split long rows of narrow matrices until one wave of warps is busy.
        let max_wpr = env_usize("BRAID_GEMV_MAX_WPR").unwrap_or(8).clamp(1, 8);
        let chunks = k / vec;
        let mut wpr = 1usize;
        while vectorized
            && wpr * 2 <= max_wpr
            && rows * wpr * 2 <= resident_warps
            && chunks >= 64 * wpr
        {
            wpr *= 2;
        }
        let rows_per_block = warps / wpr;
        let blocks = rows
            .div_ceil(rows_per_block)
            .min(per_sm * self.dev.sm_count() as usize)
            .max(1);
        let bytes = gemv_bytes(rows, k, m, w.dtype, pro, resid.is_some(), norm.is_some());
        let mut launch = self.make(
            n,
            "gemv.cu",
            kernel,
            &[],
            (blocks as u32, m as u32, 1),
            GEMV_THREADS,
            smem,
            vec![
                KArg::Ptr(w.ptr),
                KArg::Ptr(x.ptr),
                KArg::Ptr(norm.map_or(0, |g| g.ptr)),
                KArg::Ptr(resid.map_or(0, |r| r.ptr)),
                KArg::Ptr(self.output(n, 0)?),
                KArg::I32(rows as i32),
                KArg::I32(k as i32),
                KArg::I32(pro),
                KArg::F32(eps),
                KArg::I32(wpr as i32),
                KArg::Ptr(0),
                KArg::U64(0),
            ],
            bytes,
        )?;
        launch.prefetch_arg = Some(10);
        launch.detail = format!("{rows}x{k}");
        if w.is_const {
            launch.weight_range = Some((w.ptr, rows * k * w.dtype.size_bytes()));
        }
        Ok(launch)
    }

    /// A gate/up `fused_rms_norm_matmul` with the glu epilogue ([`Lowerer::glu_epilogues`]):
    /// `y[:, :i] = silu(gate) · up` for `w` [2i, k].
    fn gemv_glu(
        &self,
        n: Value,
        x: &Operand,
        w: &Operand,
        norm: &Operand,
        k: usize,
        eps: f32,
    ) -> Result<Launch, CudaError> {
        let suffix = self.gemv_operands(n, x, w, Some(norm), None)?;
        let aligned = [w.ptr, x.ptr, norm.ptr]
            .iter()
            .all(|p| p.is_multiple_of(16));
        if !aligned {
            return Err(self.unsupported(n, "the glu epilogue needs 16-byte aligned operands"));
        }
        let (m, rows) = (x.ty.rows(), w.ty.shape[0]);
        self.gemv_rows2(n, x, w, Some(norm), None, 1, m, k, eps, suffix, true)
            .map(|mut l| {
                l.detail = format!("{rows}x{k} +swiglu");
                l
            })
    }

    /// The two-rows-per-warp direct GEMV (kernels/gemv.cu `gemv_direct2`); with `glu`, the SwiGLU
    /// epilogue over W = [gate; up] (`gemv_direct2_glu`).
    #[allow(clippy::too_many_arguments)]
    fn gemv_rows2(
        &self,
        n: Value,
        x: &Operand,
        w: &Operand,
        norm: Option<&Operand>,
        resid: Option<&Operand>,
        pro: i32,
        m: usize,
        k: usize,
        eps: f32,
        suffix: &str,
        glu: bool,
    ) -> Result<Launch, CudaError> {
        let rows = w.ty.shape[0];
        let kernel = format!("gemv_direct2{}_{suffix}", if glu { "_glu" } else { "" });
        let smem = if pro == 1 { (k * 4) as u32 } else { 0 };
        let func = self.dev.kernel("gemv.cu", &kernel, &[])?;
        if smem > 48 * 1024 {
            self.allow_large_smem(&func, &kernel)?;
        }
        let per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(GEMV_THREADS, smem as usize, None)
            .ctx(|| format!("querying the occupancy of kernel `{kernel}`"))?
            .max(1) as usize;
        let blocks = rows
            .div_ceil(16)
            .min(per_sm * self.dev.sm_count() as usize)
            .max(1);
        let bytes = gemv_bytes(rows, k, m, w.dtype, pro, resid.is_some(), norm.is_some());
        let mut launch = self.make(
            n,
            "gemv.cu",
            kernel,
            &[],
            (blocks as u32, m as u32, 1),
            GEMV_THREADS,
            smem,
            vec![
                KArg::Ptr(w.ptr),
                KArg::Ptr(x.ptr),
                KArg::Ptr(norm.map_or(0, |g| g.ptr)),
                KArg::Ptr(resid.map_or(0, |r| r.ptr)),
                KArg::Ptr(self.output(n, 0)?),
                KArg::I32(rows as i32),
                KArg::I32(k as i32),
                KArg::I32(pro),
                KArg::F32(eps),
            ],
            bytes,
        )?;
        launch.detail = format!("{rows}x{k}");
        if w.is_const {
            launch.weight_range = Some((w.ptr, rows * k * w.dtype.size_bytes()));
        }
        Ok(launch)
    }

    fn attention(
        &self,
        n: Value,
        ins: &[Value],
        scale: f32,
        absorbed: &HashSet<Value>,
    ) -> Result<Launch, CudaError> {
        let o = |slot: usize| self.operand(n, slot, ins[slot]);
        let (v, pos) = (o(2)?, o(5)?);
        // q and k: this node's operands, or the pre-norm inputs of an absorbed fused_qk_norm_rope.
        let qk_node = Value::of(ins[0].node);
        let (q, k, norms) = if absorbed.contains(&qk_node) {
            let qk_ins = self.g.inputs(qk_node.node);
            let qo = |slot: usize| self.operand(qk_node, slot, qk_ins[slot]);
            let (eps, theta) = match self.g.node(qk_node.node).map(|x| &x.op) {
                Some(Op::FusedQkNormRope { eps, theta }) => (*eps, *theta),
                _ => {
                    return Err(
                        self.unsupported(n, "absorbed q/k producer is not fused_qk_norm_rope")
                    )
                }
            };
            let (qn, kn) = (qo(2)?, qo(3)?);
            self.expect(n, "q_norm", &qn, DType::F32)?;
            self.expect(n, "k_norm", &kn, DType::F32)?;
            let d = qn.ty.numel();
            (
                qo(0)?,
                qo(1)?,
                Some((qn.ptr, kn.ptr, eps, self.rope_table(n, theta, d)?)),
            )
        } else {
            (o(0)?, o(1)?, None)
        };
        for (what, x) in [("q", &q), ("k", &k), ("v", &v)] {
            self.expect(n, what, x, DType::F32)?;
        }
        self.expect(n, "position", &pos, DType::I32)?;
        let cache = |slot: usize| -> Result<Operand, CudaError> {
            let c = ins[slot];
            let is_leaf = self
                .g
                .node(c.node)
                .is_some_and(|x| matches!(x.op, Op::KvCache { .. }));
            if !is_leaf {
                return Err(self.unsupported(
                    n,
                    format!(
                        "operand {slot} ({}) must be a kv_cache leaf",
                        self.plan.label(c)
                    ),
                ));
            }
            o(slot)
        };
        let (kc, vc) = (cache(3)?, cache(4)?);
        if kc.dtype != vc.dtype {
            return Err(self.unsupported(
                n,
                format!("k_cache {} and v_cache {} must share a dtype", kc.ty, vc.ty),
            ));
        }
        let (h, d) = (q.ty.shape[0], q.ty.shape[1]);
        let (ctx, kvh) = (kc.ty.shape[0], kc.ty.shape[1]);
        if !ATT_HEAD_DIMS.contains(&d) {
            return Err(self.unsupported(
                n,
                format!("head_dim {d} is not supported by the attention kernel (supported: {ATT_HEAD_DIMS:?})"),
            ));
        }
        let group = h / kvh;
        let gm =
            ATT_GROUPS
                .iter()
                .copied()
                .find(|&x| x >= group)
                .ok_or_else(|| {
                    self.unsupported(
                n,
                format!("{group} query heads per KV head; the attention kernel supports at most 8"),
            )
                })?;
        let (kernel, defines) = attention_variant(kc.dtype, d, gm)
            .ok_or_else(|| self.unsupported(n, "the KV cache must be a float tensor"))?;
        let defines: Vec<(&str, &str)> = defines.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let csize = kc.dtype.size_bytes();
        let batch = attention_batch_rows(gm, d, 16 / csize);
        let cluster = attention_cluster(ctx, batch, self.dev.compute_capability().0);
        let splits = cluster.unwrap_or_else(|| attention_splits(kvh, ctx, self.dev.sm_count()));
        let w = self.bases.work;
        let mut launch = self.make(
            n,
            "attention.cu",
            kernel,
            &defines,
            (kvh as u32, splits as u32, 1),
            attention_threads(gm, d),
            0,
            vec![
                KArg::Ptr(q.ptr),
                KArg::Ptr(k.ptr),
                KArg::Ptr(v.ptr),
                KArg::Ptr(kc.ptr),
                KArg::Ptr(vc.ptr),
                KArg::Ptr(pos.ptr),
                KArg::Ptr(self.output(n, 0)?),
                KArg::Ptr(w + self.work.att_part as u64),
                KArg::Ptr(w + self.work.att_ml as u64),
                KArg::Ptr(w + self.work.att_counters as u64),
                KArg::I32(h as i32),
                KArg::I32(kvh as i32),
                KArg::I32(ctx as i32),
                KArg::F32(scale),
                KArg::Ptr(norms.map_or(0, |x| x.0)),
                KArg::Ptr(norms.map_or(0, |x| x.1)),
                KArg::F32(norms.map_or(0.0, |x| x.2)),
                KArg::Ptr(norms.map_or(0, |x| x.3)),
                KArg::Ptr(0),
                KArg::U64(0),
                KArg::I32(env_usize("BRAID_ATT_MIN_CHUNK").unwrap_or(0) as i32),
                KArg::I32(cluster.is_some() as i32),
            ],
            (2 * h * d + 2 * kvh * d) * 4 + 2 * kvh * d * csize,
        )?;
        launch.cluster = cluster.map(|s| (1, s as u32, 1));
        launch.bytes_per_kv_row = 2 * kvh * d * csize;
        launch.prefetch_arg = Some(18);
        launch.detail = format!(
            "h{h} kv{kvh} d{d}{}",
            if norms.is_some() {
                " +qk_norm_rope"
            } else {
                ""
            }
        );
        Ok(launch)
    }
}

/// Bytes one GEMV launch moves, for the profile's GB/s and `bytes_per_step`: the weight `[rows, k]`,
/// the input rows (`2k` wide for the SwiGLU prologue `pro == 2`), the output rows (read again for a
/// residual), and the norm weight.
fn gemv_bytes(
    rows: usize,
    k: usize,
    m: usize,
    w: DType,
    pro: i32,
    resid: bool,
    norm: bool,
) -> usize {
    let x_len = if pro == 2 { 2 * k } else { k };
    rows * k * w.size_bytes()
        + m * x_len * 4
        + m * rows * 4 * (1 + resid as usize)
        + if norm { k * 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_table_starts_at_one_and_decays_to_theta_power() {
        let t = rope_inv_freq(1_000_000.0, 128);
        assert_eq!(t.len(), 64);
        assert_eq!(t[0], 1.0);
        let last = 1.0 / 1_000_000f32.powf(126.0 / 128.0);
        assert_eq!(t[63], last);
        assert!(t.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn attention_splits_cover_two_blocks_per_sm_and_respect_short_contexts() {
        assert_eq!(attention_splits(8, 4096, 132), 33);
        assert_eq!(attention_splits(8, 64, 132), 2);
        assert_eq!(attention_splits(1, 1 << 20, 132), 64);
        assert_eq!(attention_threads(2, 128), 256);
        // Qwen3-0.6B's attention with a bf16 cache: 64-row batches; a cluster up to 1,024 rows.
        assert_eq!(attention_batch_rows(2, 128, 8), 64);
        assert_eq!(attention_cluster(1024, 64, 9), Some(8));
        assert_eq!(attention_cluster(1025, 64, 9), None);
        assert_eq!(attention_batch_rows(8, 128, 4), 16);
        assert_eq!(attention_cluster(1024, 128, 9), Some(8));
        assert_eq!(attention_cluster(2048, 128, 9), Some(8));
        assert_eq!(attention_cluster(2049, 128, 9), None);
        assert_eq!(attention_cluster(200, 128, 9), Some(2));
        assert_eq!(attention_cluster(1024, 128, 8), None);
        assert_eq!(attention_threads(8, 128), 128);
    }
}

//! Lowering: a pure function from a graph, a target (device facts + occupancy) and the tuning to a
//! [`Plan`]. It runs without a GPU.
//!
//! ```text
//! Graph ──MemoryPlan::new──► memory (constants, inputs, KV caches, arena by liveness)
//!       ──fusions::decide──► backend fusions (one walk)
//!       ──per node────────► launches: gemv · attention · norm · elementwise · embedding · argmax
//!       ──prefetch::assign► L2 prefetch ranges (off by default)
//!       ──────────────────► Plan { memory, scratch, launches, fusions }
//! ```
//!
//! One module per kernel family, mirroring `kernels/*.cu`:
//!
//! | op | module | kernel (kernels/) |
//! | --- | --- | --- |
//! | embedding | [`embedding`] | `embedding_{dtype}` (embedding.cu) |
//! | rms_norm, rope, fused_qk_norm_rope | [`norm`] | `rms_norm_f32`, `norm_rope_f32` (norm.cu) |
//! | matmul, fused_rms_norm_matmul, fused_matmul_add, fused_gated_mlp | [`gemv`] | `gemv_*` (gemv.cu) |
//! | the same over many rows (a prefill chunk), bf16 weights | [`gemm`] | `gemm_prologue_f32` (prefill.cu) + a cuBLAS GEMM |
//! | add, mul, silu, split (not a view), concat | [`elementwise`] | `ew_*_f32`, `copy2d_u32` (elementwise.cu) |
//! | attention | [`attention`] | `attention_{cache dtype}_d{head_dim}_g{group}` (attention.cu) |
//! | attention over `T` tokens | [`attention`] | `kv_append_{cache dtype}` (prefill.cu) + `attention_prefill_{cache dtype}_d{head_dim}_g{group}` (attention_prefill.cu) |
//! | argmax | [`argmax`] | `argmax_f32` (argmax.cu), or inside the LM head's GEMV |
//!
//! Leaves, constants, `reshape` and view `split`s cost no launch; the backend fusions of
//! [`fusions`] make some nodes cost none either. Every choice not forced by the graph or the
//! device is a [`Tuning`] knob.

pub mod argmax;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod fusions;
pub mod gemm;
pub mod gemv;
pub mod norm;
mod prefetch;

use std::collections::BTreeMap;

use braid_ir::op::split_is_view;
use braid_ir::{DType, Graph, Node, Op, RopeScaling, TensorType, Value};

use crate::error::CudaError;
use crate::facts::{KernelRef, Target};
use crate::params::{Params, Ptr, Region, Scratch};
use crate::plan::{Form, MemoryPlan, Plan, PlannedLaunch, ScratchLayout};
use crate::tuning::Tuning;
use fusions::Fusions;

/// The form in which operand `slot` of `op` takes a constant: the weight of a GEMV and an embedding
/// table in their stored dtype, everything else upcast to f32.
pub fn operand_form(op: &Op, slot: usize) -> Form {
    let raw = gemv::weight_slot(op) == Some(slot) || matches!((op, slot), (Op::Embedding, 0));
    if raw {
        Form::Raw
    } else {
        Form::F32
    }
}

/// The frequencies of a rope-bearing op: its base `theta` and scaling variant. The table itself is
/// [`braid_ir::rope_inv_freq`], the interpreter's own, so device and reference agree bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rotary {
    pub theta: f32,
    pub scaling: RopeScaling,
}

/// The kernel-name suffix of a weight or cache dtype (`None` for i32).
pub(crate) fn dtype_suffix(d: DType) -> Option<&'static str> {
    match d {
        DType::BF16 => Some("bf16"),
        DType::F16 => Some("f16"),
        DType::F32 => Some("f32"),
        DType::I32 => None,
    }
}

/// An operand resolved to a (symbolic) device address, with the dtype it has there.
#[derive(Clone, Debug)]
pub(crate) struct Operand {
    pub ptr: Ptr,
    /// The dtype of the bytes at `ptr` (an f32-form constant is f32 whatever its graph dtype).
    pub dtype: DType,
    pub ty: TensorType,
    /// Whether the operand is a load-time constant (in the weights region).
    pub is_const: bool,
}

/// Read-only access to the graph and its memory plan, shared by the fusion walk and the lowering.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub g: &'a Graph,
    pub mem: &'a MemoryPlan,
}

impl View<'_> {
    pub fn node(&self, n: Value) -> Result<&Node, CudaError> {
        self.g
            .node(n.node)
            .ok_or_else(|| CudaError::Graph(format!("node {} is missing", n.node.index())))
    }

    pub fn ty(&self, v: Value) -> Result<&TensorType, CudaError> {
        self.g
            .value_type(v)
            .map_err(|e| CudaError::Graph(e.to_string()))
    }

    /// `%7 = op`, for reports of what a launch absorbed.
    pub fn describe(&self, n: Value) -> String {
        let op = self.g.node(n.node).map_or("?", |x| x.op.name());
        format!("{} = {op}", self.mem.label(n))
    }

    pub fn unsupported(&self, n: Value, msg: impl Into<String>) -> CudaError {
        CudaError::Unsupported {
            node: self.mem.label(n),
            op: self.g.node(n.node).map_or("?", |x| x.op.name()).to_string(),
            msg: msg.into(),
        }
    }

    /// Operand `slot` of node `n`.
    pub fn operand(&self, n: Value, slot: usize) -> Result<Operand, CudaError> {
        let v = *self
            .g
            .inputs(n.node)
            .get(slot)
            .ok_or_else(|| self.unsupported(n, format!("operand {slot} is missing")))?;
        let ty = self.ty(v)?.clone();
        if self.mem.is_const(v) {
            let form = operand_form(&self.node(n)?.op, slot);
            let dtype = if form == Form::Raw {
                ty.dtype
            } else {
                DType::F32
            };
            return Ok(Operand {
                ptr: self.mem.const_ptr(v, form)?,
                dtype,
                ty,
                is_const: true,
            });
        }
        Ok(Operand {
            ptr: self.mem.ptr(v)?,
            dtype: ty.dtype,
            ty,
            is_const: false,
        })
    }

    /// The address of output `o` of node `n`.
    pub fn output(&self, n: Value, o: usize) -> Result<Ptr, CudaError> {
        self.mem.ptr(Value {
            node: n.node,
            output: o as u32,
        })
    }

    /// Checks that operand `what` has `dtype` on the device.
    pub fn expect(&self, n: Value, what: &str, o: &Operand, dtype: DType) -> Result<(), CudaError> {
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

    /// Whether `v` is the graph input called `name`.
    pub fn is_input(&self, v: Value, name: &str) -> bool {
        matches!(self.g.node(v.node).map(|x| &x.op), Some(Op::Input { name: n, .. }) if n == name)
    }
}

/// The state of one lowering: what it reads, and what the launches planned so far need.
pub(crate) struct Cx<'a> {
    pub view: View<'a>,
    pub target: &'a Target<'a>,
    pub tuning: &'a Tuning,
    pub fusions: &'a Fusions,
    /// Largest size each scratch slot must have (bytes).
    scratch: BTreeMap<Scratch, usize>,
    /// Rotary tables by `(frequencies, head_dim)`, in first-use order.
    rope: Vec<((Rotary, usize), Vec<f32>)>,
    token_limit: Option<usize>,
    max_context: Option<usize>,
    /// What the GEMM operand scratch holds: the prologue (the x value, norm weight, `pro`, eps
    /// bits, m, k) of the last GEMM prologue planned ([`gemm`] reuses it). The x is a graph value,
    /// not an address: arena bytes are reused by later values.
    pub(crate) gemm_operand: Option<(Value, Ptr, i32, u32, usize, usize)>,
}

impl Cx<'_> {
    /// A launch of `kernel` for node `n` with 1-D blocks; the rest of the fields at their defaults.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        n: Value,
        kernel: KernelRef,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        params: Params,
        bytes: usize,
    ) -> Result<PlannedLaunch, CudaError> {
        Ok(PlannedLaunch {
            op: self.view.node(n)?.op.name(),
            node: self.view.mem.label(n),
            kernel,
            grid,
            block: (block, 1, 1),
            smem,
            cluster: None,
            params,
            bytes,
            bytes_per_kv_row: 0,
            weight_range: None,
            can_prefetch: false,
            detail: String::new(),
            absorbed: Vec::new(),
        })
    }

    /// The start of scratch slot `s`, which must hold at least `bytes`.
    pub fn scratch(&mut self, s: Scratch, bytes: usize) -> Ptr {
        let e = self.scratch.entry(s).or_default();
        *e = (*e).max(bytes);
        Ptr::at(Region::Scratch(s), 0)
    }

    /// The rotary frequency table of `r` for head dim `d` (uploaded once, shared).
    pub fn rope_table(&mut self, n: Value, r: &Rotary, d: usize) -> Result<Ptr, CudaError> {
        let i = match self.rope.iter().position(|((k, kd), _)| k == r && *kd == d) {
            Some(i) => i,
            None => {
                let table = braid_ir::rope_inv_freq(r.theta, &r.scaling, d);
                self.rope.push(((r.clone(), d), table));
                self.rope.len() - 1
            }
        };
        let i = u8::try_from(i).map_err(|_| {
            self.view
                .unsupported(n, "more than 256 distinct rotary tables")
        })?;
        Ok(self.scratch(Scratch::RopeTable(i), d / 2 * 4))
    }

    /// Records an embedding table of `rows` rows indexed by the `token` input.
    pub fn note_token_limit(&mut self, rows: usize) {
        self.token_limit = Some(self.token_limit.map_or(rows, |l| l.min(rows)));
    }

    /// Records a KV cache of `rows` rows read by attention.
    pub fn note_max_context(&mut self, rows: usize) {
        self.max_context = Some(self.max_context.map_or(rows, |m| m.min(rows)));
    }

    fn lower_node(&mut self, n: Value, out: &mut Vec<PlannedLaunch>) -> Result<(), CudaError> {
        let v = self.view;
        let node = v.node(n)?;
        match &node.op {
            Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } | Op::Reshape { .. } => {}
            Op::Split { axis, .. } if split_is_view(*axis, &[v.ty(v.g.inputs(n.node)[0])?]) => {}
            Op::Embedding => out.push(embedding::lower(self, n)?),
            Op::RmsNorm { eps } => out.push(norm::rms_norm(self, n, *eps)?),
            Op::Rope { theta, scaling } => {
                let r = Rotary {
                    theta: *theta,
                    scaling: scaling.clone(),
                };
                out.push(norm::rope(self, n, &r)?)
            }
            Op::FusedQkNormRope {
                eps,
                theta,
                scaling,
            } => {
                let r = Rotary {
                    theta: *theta,
                    scaling: scaling.clone(),
                };
                out.push(norm::qk_norm_rope(self, n, *eps, &r)?)
            }
            Op::MatMul
            | Op::FusedRmsNormMatmul { .. }
            | Op::FusedRmsNormMatmulAdd { .. }
            | Op::FusedMatmulAdd
            | Op::FusedGatedMlp => gemv::lower_any(self, n, out)?,
            op @ (Op::Add | Op::Mul | Op::Silu) => out.push(elementwise::lower(self, n, op)?),
            Op::Split { axis, sizes } => elementwise::split(self, n, *axis, sizes, out)?,
            Op::Concat { axis } => elementwise::concat(self, n, *axis, out)?,
            Op::Attention { scale } => {
                let ctx = v.ty(v.g.inputs(n.node)[3])?.shape[0];
                self.note_max_context(ctx);
                if v.ty(v.g.inputs(n.node)[0])?.shape.len() == 3 {
                    attention::lower_prefill(self, n, *scale, out)?
                } else {
                    out.push(attention::lower(self, n, *scale)?)
                }
            }
            Op::Argmax => out.push(argmax::lower(self, n)?),
        }
        Ok(())
    }
}

/// Lowers `g` for `target` with `tuning`: the memory plan, the backend fusions, every launch of
/// one step with its parameters, the scratch layout.
///
/// Errors: [`CudaError::Graph`] when `g` fails [`braid_ir::verify()`]; [`CudaError::Unsupported`]
/// for an op shape the kernels do not cover (the message names the node); occupancy queries of a
/// live target can fail to compile a kernel.
pub fn lower(g: &Graph, target: &Target<'_>, tuning: &Tuning) -> Result<Plan, CudaError> {
    braid_ir::verify(g).map_err(|e| CudaError::Graph(e.to_string()))?;
    let mut memory = MemoryPlan::new(g, operand_form)?;
    let fusions = fusions::decide(&View { g, mem: &memory }, target, tuning)?;
    // A launch that does an absorbed node's work reads that node's inputs and writes its outputs:
    // their arena bytes must be live at the launch (fusions depend on alignment only, which the
    // 256-byte-aligned arena re-layout keeps).
    for (absorbed, by) in fusions.absorbed_by() {
        for v in g.inputs(absorbed.node) {
            memory.widen_lifetime(v, by);
        }
        let outputs = g.node(absorbed.node).map_or(0, |x| x.outputs.len());
        for o in 0..outputs {
            let out = Value {
                node: absorbed.node,
                output: o as u32,
            };
            memory.widen_lifetime(out, by);
        }
    }
    let view = View { g, mem: &memory };
    let mut cx = Cx {
        view,
        target,
        tuning,
        fusions: &fusions,
        scratch: BTreeMap::new(),
        rope: Vec::new(),
        token_limit: None,
        max_context: None,
        gemm_operand: None,
    };
    let mut launches = Vec::new();
    for &n in &memory.order {
        if memory.consts.contains(&n) || fusions.absorbed.contains(&n) {
            continue;
        }
        cx.lower_node(n, &mut launches)?;
    }
    prefetch::assign(&mut launches, tuning.l2_prefetch);
    let init = cx
        .rope
        .into_iter()
        .enumerate()
        .map(|(i, (_, t))| (Scratch::RopeTable(i as u8), t))
        .collect();
    let scratch = ScratchLayout::new(&cx.scratch, init);
    let (token_limit, max_context) = (cx.token_limit, cx.max_context);
    Ok(Plan {
        facts: target.facts.clone(),
        tuning: *tuning,
        fusions: fusions.notes(tuning),
        memory,
        scratch,
        launches,
        token_limit,
        max_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_weights_and_embedding_tables_keep_their_dtype() {
        assert_eq!(operand_form(&Op::MatMul, 1), Form::Raw);
        assert_eq!(operand_form(&Op::MatMul, 0), Form::F32);
        assert_eq!(operand_form(&Op::RmsNorm { eps: 1e-6 }, 1), Form::F32);
        let f = Op::FusedRmsNormMatmul { eps: 1e-6 };
        assert_eq!(operand_form(&f, 1), Form::F32);
        assert_eq!(operand_form(&f, 2), Form::Raw);
        assert_eq!(operand_form(&Op::Embedding, 0), Form::Raw);
        assert_eq!(operand_form(&Op::FusedGatedMlp, 1), Form::Raw);
        let fa = Op::FusedRmsNormMatmulAdd { eps: 1e-6 };
        assert_eq!(operand_form(&fa, 2), Form::Raw);
        assert_eq!(operand_form(&fa, 3), Form::F32);
    }
}

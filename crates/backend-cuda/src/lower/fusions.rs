//! Backend fusions: adjacent nodes the backend runs as one kernel when that computes the same
//! values. All of them are decided here, in one walk over the planned order, from ops and shapes
//! alone (never from names); the lowering then only reads the decisions.
//!
//! | fusion | condition | knob |
//! | --- | --- | --- |
//! | q/k prologue into attention | a `fused_qk_norm_rope` whose two outputs feed only one one-token `attention` (as its q and k, at the same position), or two `rope`s that do | `BRAID_ATT_QK_FOLD` |
//! | SwiGLU epilogue | a gate/up `fused_rms_norm_matmul` GEMV (W = [gate; up], `2i` rows; not a GEMM) feeding only a `fused_gated_mlp` with `i` columns, operands 16-byte aligned | `BRAID_GEMV_GLU` |
//! | argmax in the LM head | an `argmax` whose input is the output of a one-row GEMV that runs the staged kernel | `BRAID_ARGMAX_FOLD` |
//! | split read in place | a `split` of `x [T, n]` along its last axis (a strided copy for `T > 1`, e.g. a prefill chunk's packed q/k/v) whose every output is reshaped to `[T, heads, d]` and read only by `rope` / `fused_qk_norm_rope` (as x, q or k) and prefill `attention` (as k or v): those kernels read the slice of `x` with `x`'s row stride, and the split costs no launch | `BRAID_SPLIT_IN_PLACE` |

use std::collections::{HashMap, HashSet};

use braid_ir::{DType, Op, Value};

use super::gemm;
use super::gemv::{self, Variant};
use super::{Rotary, View};
use crate::error::CudaError;
use crate::facts::Target;
use crate::params::Ptr;
use crate::plan::FusionNote;
use crate::tuning::Tuning;

/// Work on q and k that an attention kernel does in its prologue instead of a launch of its own.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum QkPrologue {
    /// A `fused_qk_norm_rope` node: rms_norm then rope of q and k.
    NormRope {
        node: Value,
        eps: f32,
        rotary: Rotary,
    },
    /// Two `rope` nodes (q's and k's) with equal frequencies, no norm.
    Rope { q: Value, k: Value, rotary: Rotary },
}

/// The backend fusions of one graph.
#[derive(Debug, Default)]
pub(crate) struct Fusions {
    /// Attention node -> the q/k prologue it absorbs. (Nodes are keyed by their first output.)
    pub qk: HashMap<Value, QkPrologue>,
    /// Gate/up GEMV nodes that write silu(gate) · up.
    pub glu: HashSet<Value>,
    /// GEMV node -> the argmax node it computes too.
    pub argmax: HashMap<Value, Value>,
    /// Split nodes read in place -> the nodes whose launches read their slices.
    pub split: HashMap<Value, Vec<Value>>,
    /// Nodes that cost no launch because another launch does their work.
    pub absorbed: HashSet<Value>,
}

impl Fusions {
    /// Every absorbed node with the node whose launch does its work.
    pub fn absorbed_by(&self) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for (&att, p) in &self.qk {
            match p {
                QkPrologue::NormRope { node, .. } => out.push((*node, att)),
                QkPrologue::Rope { q, k, .. } => {
                    out.push((*q, att));
                    out.push((*k, att));
                }
            }
        }
        for (&gemv, &am) in &self.argmax {
            out.push((am, gemv));
        }
        for (&split, readers) in &self.split {
            out.extend(readers.iter().map(|&r| (split, r)));
        }
        out.sort();
        out
    }

    /// One note per fusion kind: what, its knob, how often it applied, and whether it is enabled.
    /// (The in-place split, which only prefill graphs have, is listed only when it applied or its
    /// knob is off, so decode plans print as they always have.)
    pub fn notes(&self, tuning: &Tuning) -> Vec<FusionNote> {
        let mut notes = vec![
            FusionNote {
                what: "q/k prologue (rms_norm, rope) into attention",
                knob: "BRAID_ATT_QK_FOLD=0",
                count: self.qk.len(),
                enabled: tuning.att_qk_fold,
            },
            FusionNote {
                what: "SwiGLU epilogue in the gate/up GEMV",
                knob: "BRAID_GEMV_GLU=0",
                count: self.glu.len(),
                enabled: tuning.gemv_glu,
            },
            FusionNote {
                what: "argmax inside the LM head GEMV",
                knob: "BRAID_ARGMAX_FOLD=0",
                count: self.argmax.len(),
                enabled: tuning.argmax_fold,
            },
        ];
        if !self.split.is_empty() || !tuning.split_in_place {
            notes.push(FusionNote {
                what: "split of [T, n] rows read in place (strided)",
                knob: "BRAID_SPLIT_IN_PLACE=0",
                count: self.split.len(),
                enabled: tuning.split_in_place,
            });
        }
        notes
    }

    /// Where a kernel reads value `x` when it is (a reshape of) a slice of a split read in place:
    /// the slice's start in the split's input, that input's row stride in elements, and the split.
    pub fn in_place(
        &self,
        v: &View<'_>,
        x: Value,
    ) -> Result<Option<(Ptr, usize, Value)>, CudaError> {
        let mut at = x;
        while let Some(Op::Reshape { .. }) = v.g.node(at.node).map(|n| &n.op) {
            at = v.g.inputs(at.node)[0];
        }
        let Some(Op::Split { sizes, .. }) = v.g.node(at.node).map(|n| &n.op) else {
            return Ok(None);
        };
        if !self.split.contains_key(&Value::of(at.node)) {
            return Ok(None);
        }
        let src = v.g.inputs(at.node)[0];
        let row = v.ty(src)?.last_dim();
        let col: usize = sizes[..at.output as usize].iter().sum();
        Ok(Some((
            v.mem.ptr(src)?.offset_by(col * 4),
            row,
            Value::of(at.node),
        )))
    }
}

/// Decides every backend fusion of the planned graph in one walk.
pub(crate) fn decide(
    v: &View<'_>,
    target: &Target<'_>,
    tuning: &Tuning,
) -> Result<Fusions, CudaError> {
    let mut f = Fusions::default();
    for &n in &v.mem.order {
        let Some(node) = v.g.node(n.node) else {
            continue;
        };
        match node.op {
            Op::Attention { .. } if tuning.att_qk_fold => {
                if let Some(p) = qk_prologue(v, n) {
                    match &p {
                        QkPrologue::NormRope { node, .. } => {
                            f.absorbed.insert(*node);
                        }
                        QkPrologue::Rope { q, k, .. } => {
                            f.absorbed.insert(*q);
                            f.absorbed.insert(*k);
                        }
                    }
                    f.qk.insert(n, p);
                }
            }
            Op::FusedRmsNormMatmul { .. } if tuning.gemv_glu && swiglu_epilogue(v, n, tuning) => {
                f.glu.insert(n);
            }
            Op::Split { axis, .. } if tuning.split_in_place => {
                if let Some(readers) = split_in_place(v, n, axis) {
                    f.split.insert(n, readers);
                    f.absorbed.insert(n);
                }
            }
            Op::Argmax if tuning.argmax_fold => {
                let x = v.g.inputs(n.node)[0];
                if x.output == 0 && argmax_folds(v, target, tuning, &f, x)? {
                    f.argmax.insert(x, n);
                    f.absorbed.insert(n);
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// The readers of split `n` (along `axis`) when its slices can be read in place: `n` splits an
/// f32 `x [T, n]` along its last axis with `T > 1`, and every output is used only by reshapes to
/// `[T, heads, d]` whose every use is `rope` (slot 0), `fused_qk_norm_rope` (slot 0 or 1) or an
/// attention over `T` tokens (slot 1 or 2) — the kernels that take a row stride.
fn split_in_place(v: &View<'_>, n: Value, axis: usize) -> Option<Vec<Value>> {
    let x = v.g.inputs(n.node)[0];
    let xt = v.ty(x).ok()?;
    if xt.shape.len() != 2 || axis != 1 || xt.shape[0] < 2 || xt.dtype != DType::F32 {
        return None;
    }
    // The split's input must be an arena value (so a pointer plus a stride addresses it).
    if v.mem.is_const(x) {
        return None;
    }
    let t = xt.shape[0];
    let outputs = v.g.node(n.node)?.outputs.len();
    let mut readers = Vec::new();
    for o in 0..outputs {
        let out = Value {
            node: n.node,
            output: o as u32,
        };
        if v.g.results().contains(&out) {
            return None;
        }
        for (user, _) in v.g.uses(out) {
            let r = Value::of(user);
            let rt = v.ty(r).ok()?;
            let is_reshape = matches!(v.g.node(user)?.op, Op::Reshape { .. });
            if !is_reshape || rt.shape.len() != 3 || rt.shape[0] != t || v.g.results().contains(&r)
            {
                return None;
            }
            for (reader, slot) in v.g.uses(r) {
                let ok = match &v.g.node(reader)?.op {
                    Op::Rope { .. } => slot == 0,
                    Op::FusedQkNormRope { .. } => slot <= 1,
                    Op::Attention { .. } => {
                        (slot == 1 || slot == 2)
                            && v.ty(v.g.inputs(reader)[0]).ok()?.shape.len() == 3
                    }
                    _ => false,
                };
                if !ok {
                    return None;
                }
                if !readers.contains(&Value::of(reader)) {
                    readers.push(Value::of(reader));
                }
            }
        }
    }
    readers.sort();
    (!readers.is_empty()).then_some(readers)
}

/// Whether value `x` feeds exactly one use: slot `slot` of node `user`.
fn only_use(v: &View<'_>, x: Value, user: Value, slot: u32) -> bool {
    v.g.use_count(x) == 1 && v.g.uses(x) == [(user.node, slot)]
}

/// The q/k prologue attention `n` can absorb: its q (slot 0) and k (slot 1) are the two outputs of
/// one `fused_qk_norm_rope`, or the outputs of two `rope`s with equal attributes, used only there,
/// at the attention's own position.
fn qk_prologue(v: &View<'_>, n: Value) -> Option<QkPrologue> {
    let ins = v.g.inputs(n.node);
    let (q, k, pos) = (ins[0], ins[1], ins[5]);
    if !only_use(v, q, n, 0) || !only_use(v, k, n, 1) {
        return None;
    }
    // The decode kernel's prologue only: the prefill attention (q [T, h, d]) reads its q roped.
    if v.ty(q).ok()?.shape.len() != 2 {
        return None;
    }
    let (qn, kn) = (v.g.node(q.node)?, v.g.node(k.node)?);
    match (&qn.op, &kn.op) {
        (
            Op::FusedQkNormRope {
                eps,
                theta,
                scaling,
            },
            Op::FusedQkNormRope { .. },
        ) if q.node == k.node && q.output == 0 && k.output == 1 => (v.g.inputs(q.node)[4] == pos)
            .then(|| QkPrologue::NormRope {
                node: Value::of(q.node),
                eps: *eps,
                rotary: Rotary {
                    theta: *theta,
                    scaling: scaling.clone(),
                },
            }),
        (
            Op::Rope { theta, scaling },
            Op::Rope {
                theta: tk,
                scaling: sk,
            },
        ) if theta.to_bits() == tk.to_bits() && scaling == sk => {
            let same_pos = v.g.inputs(q.node)[1] == pos && v.g.inputs(k.node)[1] == pos;
            same_pos.then(|| QkPrologue::Rope {
                q: Value::of(q.node),
                k: Value::of(k.node),
                rotary: Rotary {
                    theta: *theta,
                    scaling: scaling.clone(),
                },
            })
        }
        _ => None,
    }
}

/// Whether the gate/up GEMV `n` can write silu(gate) · up for its only user, a `fused_gated_mlp`
/// whose down projection has half as many columns as `n`'s W has rows.
fn swiglu_epilogue(v: &View<'_>, n: Value, tuning: &Tuning) -> bool {
    let uses = v.g.uses(n);
    if v.g.use_count(n) != 1 || uses.len() != 1 || uses[0].1 != 0 {
        return false;
    }
    let user = uses[0].0;
    if !matches!(v.g.node(user).map(|x| &x.op), Some(Op::FusedGatedMlp)) {
        return false;
    }
    let Ok(g) = gemv::operands(v, n, false) else {
        return false;
    };
    // A GEMM (many rows) has no SwiGLU epilogue: its consumer applies the SwiGLU in its prologue.
    if gemm::uses_gemm(&g, tuning) {
        return false;
    }
    let Ok(down) = v.ty(v.g.inputs(user)[1]) else {
        return false;
    };
    let vec = if g.w.dtype == DType::F32 { 4 } else { 8 };
    let aligned = [g.w.ptr, g.x.ptr]
        .into_iter()
        .chain(g.norm.as_ref().map(|o| o.ptr))
        .all(|p| p.is_aligned(16));
    g.rows == 2 * down.shape[1] && g.k.is_multiple_of(vec) && aligned
}

/// Whether an argmax over the output of node `p` can run inside `p`'s GEMV: `p` is a one-row GEMV
/// (with no SwiGLU epilogue) that runs the staged kernel.
fn argmax_folds(
    v: &View<'_>,
    target: &Target<'_>,
    tuning: &Tuning,
    f: &Fusions,
    p: Value,
) -> Result<bool, CudaError> {
    let is_gemv =
        v.g.node(p.node)
            .is_some_and(|x| gemv::weight_slot(&x.op).is_some());
    if !is_gemv || f.glu.contains(&p) {
        return Ok(false);
    }
    let swiglu_input = matches!(v.node(p)?.op, Op::FusedGatedMlp)
        && f.glu.contains(&Value::of(v.g.inputs(p.node)[0].node));
    let g = gemv::operands(v, p, swiglu_input)?;
    Ok(g.m == 1
        && !gemm::uses_gemm(&g, tuning)
        && gemv::variant(&g, target, tuning, false) == Variant::Staged)
}

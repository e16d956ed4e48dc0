//! The SwiGLU tail of an MLP after the gate/up merge: `silu(gate) * up`, the down projection and the
//! residual add, in one kernel (`fused_gated_mlp`, HF `Qwen3MLP` + the decoder layer's residual).

use braid_ir::Op;
use egg::{rewrite, Id, Subst};

use super::{dims_attr_of, tensor_type, usize_attr_of, var};
use crate::analysis::{BraidEGraph, BraidRewrite};

const GATE: &str = "(silu (get 0 (split ?axis ?sizes ?gu)))";
const UP: &str = "(get 1 (split ?axis ?sizes ?gu))";

/// `add(matmul(mul(silu(get0(split(gu))), get1(split(gu))), wd), r)` ⇒ `fused_gated_mlp(gu, wd, r)`,
/// with `mul` and `add` in either operand order, when `split` cuts the last axis of `gu [1, 2i]` into
/// two halves `[i, i]`.
pub fn rules() -> Vec<BraidRewrite> {
    let mul = format!("(mul {GATE} {UP})");
    let mul_swapped = format!("(mul {UP} {GATE})");
    let lhs = |m: &str, add_swapped: bool| -> egg::Pattern<_> {
        let s = if add_swapped {
            format!("(add ?r (matmul {m} ?wd))")
        } else {
            format!("(add (matmul {m} ?wd) ?r)")
        };
        s.parse()
            .unwrap_or_else(|e| panic!("bad gated-mlp pattern {s}: {e}"))
    };
    let rhs = || -> egg::Pattern<_> {
        "(fused_gated_mlp ?gu ?wd ?r)"
            .parse()
            .unwrap_or_else(|e| panic!("bad gated-mlp pattern: {e}"))
    };
    vec![
        rewrite!("gated-mlp";              { lhs(&mul, false) }         => { rhs() } if is_gate_up_split),
        rewrite!("gated-mlp-mul-swapped";  { lhs(&mul_swapped, false) } => { rhs() } if is_gate_up_split),
        rewrite!("gated-mlp-add-swapped";  { lhs(&mul, true) }          => { rhs() } if is_gate_up_split),
        rewrite!("gated-mlp-both-swapped"; { lhs(&mul_swapped, true) }  => { rhs() } if is_gate_up_split),
    ]
}

/// The split cuts `gu`'s last axis into two equal halves and `fused_gated_mlp(gu, wd, r)` type-checks.
fn is_gate_up_split(egraph: &mut BraidEGraph, _: Id, subst: &Subst) -> bool {
    let check = || -> Option<bool> {
        let gu = tensor_type(egraph, subst, var("?gu"))?;
        let wd = tensor_type(egraph, subst, var("?wd"))?;
        let r = tensor_type(egraph, subst, var("?r"))?;
        let axis = usize_attr_of(egraph, subst, var("?axis"))?;
        let sizes = dims_attr_of(egraph, subst, var("?sizes"))?;
        let halves = matches!(sizes.as_slice(), [a, b] if a == b);
        let last = axis + 1 == gu.shape.len();
        Some(halves && last && Op::FusedGatedMlp.infer(&[&gu, &wd, &r]).is_ok())
    };
    check().unwrap_or(false)
}

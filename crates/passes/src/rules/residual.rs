//! A matmul followed by a residual add (attention's `o_proj`, or the MLP's `down_proj` when the
//! gated-MLP fusion does not apply) or a bias add (Qwen2's packed q/k/v): the add happens in the
//! matmul's epilogue.

use egg::rewrite;

use crate::analysis::BraidRewrite;

/// - `add(matmul(x, w), r)` and `add(r, matmul(x, w))` ⇒ `fused_matmul_add(x, w, r)`;
/// - `add(fused_rms_norm_matmul(x, g, w){eps}, r)` (either order) ⇒
///   `fused_rms_norm_matmul_add(x, g, w, r){eps}`: with the norm theme, the whole
///   `rms_norm -> matmul -> add` chain ends in one node (a packed q/k/v projection with its bias).
///
/// `r` is a residual of the matmul's shape or a bias row `[n]` (the IR's row broadcast). If the
/// matmul's result has another consumer, the fused node would repeat the matmul (reading `w`
/// twice); the extractor's DAG cost rejects that. A rewrite whose operands do not type-check (a
/// swapped `add` whose first operand is the broadcast one) gives an e-node extraction never picks.
pub fn rules() -> Vec<BraidRewrite> {
    vec![
        rewrite!("matmul-add";         "(add (matmul ?x ?w) ?r)" => "(fused_matmul_add ?x ?w ?r)"),
        rewrite!("matmul-add-swapped"; "(add ?r (matmul ?x ?w))" => "(fused_matmul_add ?x ?w ?r)"),
        rewrite!("norm-matmul-add";
            "(add (fused_rms_norm_matmul ?eps ?x ?g ?w) ?r)" => "(fused_rms_norm_matmul_add ?eps ?x ?g ?w ?r)"),
        rewrite!("norm-matmul-add-swapped";
            "(add ?r (fused_rms_norm_matmul ?eps ?x ?g ?w))" => "(fused_rms_norm_matmul_add ?eps ?x ?g ?w ?r)"),
    ]
}

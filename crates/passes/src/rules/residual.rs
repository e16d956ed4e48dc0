//! A matmul followed by a residual add (attention's `o_proj`, or the MLP's `down_proj` when the
//! gated-MLP fusion does not apply): the add happens in the matmul's epilogue.

use egg::rewrite;

use crate::analysis::BraidRewrite;

/// `add(matmul(x, w), r)` and `add(r, matmul(x, w))` ⇒ `fused_matmul_add(x, w, r)`.
///
/// If the matmul's result has another consumer, the fused node would repeat the matmul (reading
/// `w` twice); the extractor's DAG cost rejects that.
pub fn rules() -> Vec<BraidRewrite> {
    vec![
        rewrite!("matmul-add";         "(add (matmul ?x ?w) ?r)" => "(fused_matmul_add ?x ?w ?r)"),
        rewrite!("matmul-add-swapped"; "(add ?r (matmul ?x ?w))" => "(fused_matmul_add ?x ?w ?r)"),
    ]
}

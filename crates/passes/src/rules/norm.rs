//! RMSNorm feeding a matmul (and its epilogue add, if any): one kernel normalises its input row and
//! multiplies, so the normalised activations never round-trip through memory.

use egg::rewrite;

use crate::analysis::BraidRewrite;

/// - `matmul(rms_norm(x, g){eps}, w)` ⇒ `fused_rms_norm_matmul(x, g, w){eps}`;
/// - `fused_matmul_add(rms_norm(x, g){eps}, w, r)` ⇒ `fused_rms_norm_matmul_add(x, g, w, r){eps}`
///   (the same chain reached from the residual theme's side).
///
/// When the normalised value has another consumer the norm is recomputed inside the fused kernel;
/// the extractor keeps the fusion only if it is still cheaper.
pub fn rules() -> Vec<BraidRewrite> {
    vec![
        rewrite!("rms-norm-matmul"; "(matmul (rms_norm ?eps ?x ?g) ?w)" => "(fused_rms_norm_matmul ?eps ?x ?g ?w)"),
        rewrite!("rms-norm-matmul-add";
            "(fused_matmul_add (rms_norm ?eps ?x ?g) ?w ?r)" => "(fused_rms_norm_matmul_add ?eps ?x ?g ?w ?r)"),
    ]
}

//! RMSNorm feeding a matmul: one kernel normalises its input row and multiplies, so the normalised
//! activations never round-trip through memory.

use egg::rewrite;

use crate::analysis::BraidRewrite;

/// `matmul(rms_norm(x, g){eps}, w)` ⇒ `fused_rms_norm_matmul(x, g, w){eps}`.
///
/// When the normalised value has another consumer the norm is recomputed inside the fused kernel;
/// the extractor keeps the fusion only if it is still cheaper.
pub fn rules() -> Vec<BraidRewrite> {
    vec![
        rewrite!("rms-norm-matmul"; "(matmul (rms_norm ?eps ?x ?g) ?w)" => "(fused_rms_norm_matmul ?eps ?x ?g ?w)"),
    ]
}

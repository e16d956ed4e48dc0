//! Qwen3's per-head q/k RMSNorm followed by RoPE, for q and k of one attention: one kernel
//! (`fused_qk_norm_rope`) instead of four.

use egg::{MultiPattern, Rewrite};

use super::ReportChanges;
use crate::analysis::BraidRewrite;
use crate::language::BraidLang;

/// The q and k of one `attention`, each `rope(rms_norm(., norm){eps}, position){theta, scaling}`
/// with one `eps`, `theta`, rope scaling and `position`, become the two projections of
/// `fused_qk_norm_rope(q, k, q_norm, k_norm, position){eps, theta, scaling}`. Ropes whose
/// attributes differ in any way (a Llama 3 scaling on one, the default on the other) do not match.
/// One token (`[heads, d]`) and prefill chunks (`[T, heads, d]`) fuse alike.
///
/// Anchoring on the attention node pairs the q and k of one layer (every layer shares `position`,
/// eps and theta, so a bare two-rope multi-pattern would also pair heads across layers).
pub fn rules() -> Vec<BraidRewrite> {
    vec![multi_rewrite(
        "qk-norm-rope",
        "?a = (attention ?scale ?qr ?kr ?v ?kc ?vc ?pos),
         ?qr = (rope ?theta ?scaling (rms_norm ?eps ?q ?qn) ?pos),
         ?kr = (rope ?theta ?scaling (rms_norm ?eps ?k ?kn) ?pos)",
        "?qr = (get 0 (fused_qk_norm_rope ?eps ?theta ?scaling ?q ?k ?qn ?kn ?pos)),
         ?kr = (get 1 (fused_qk_norm_rope ?eps ?theta ?scaling ?q ?k ?qn ?kn ?pos))",
    )]
}

/// `multi_rewrite!` with an applier that reports only real changes (see [`ReportChanges`]).
fn multi_rewrite(name: &str, lhs: &str, rhs: &str) -> BraidRewrite {
    let parse = |s: &str| -> MultiPattern<BraidLang> {
        s.parse()
            .unwrap_or_else(|e| panic!("bad multi-pattern in {name}: {e}"))
    };
    Rewrite::new(name, parse(lhs), ReportChanges(parse(rhs)))
        .unwrap_or_else(|e| panic!("bad rewrite {name}: {e}"))
}

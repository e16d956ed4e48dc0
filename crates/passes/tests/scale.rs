//! Fusion at Qwen3-0.6B's depth and width: fast, and still 6 kernel launches per layer (the
//! extraction's cost trade-offs depend on tensor sizes, so the real dimensions are checked too).

mod common;

use std::time::Instant;

use braid_passes::graph_cost;
use common::{
    decoder_ir, launching_kinds, launching_nodes, matmul_weight_reads, parse_ir, qwen3_ir,
    qwen3_ir_dims, run_passes, QWEN3, QWEN3_0_6B,
};

#[test]
fn twenty_eight_layers_fuse_quickly() {
    let g = parse_ir(&qwen3_ir(28));
    let start = Instant::now();
    let fused = run_passes(&g, "default");
    let elapsed = start.elapsed();
    assert_eq!(launching_nodes(&fused), 6 * 28 + 3);
    // Generous bound for a debug-profile test on a shared CPU; typically well under a second.
    assert!(elapsed.as_secs_f64() < 30.0, "fusion took {elapsed:?}");
}

#[test]
fn qwen3_0_6b_dimensions_reach_six_launches_per_layer() {
    let g = parse_ir(&qwen3_ir_dims(28, QWEN3_0_6B));
    let fused = run_passes(&g, "default");
    assert_eq!(launching_nodes(&fused), 6 * 28 + 3);
    assert_eq!(matmul_weight_reads(&fused), matmul_weight_reads(&g));
    let (before, after) = (graph_cost(&g), graph_cost(&fused));
    // 18 per layer (4 norms, 7 matmuls, 2 ropes, attention, 2 adds, silu, mul) + embedding, final
    // norm, lm_head, argmax.
    assert_eq!(before.launches, 18 * 28 + 4);
    assert!(after.bytes < before.bytes);
    assert!(after.time_us() < before.time_us());
}

#[test]
fn qwen3_0_6b_prefill_chunks_fuse_like_decode() {
    // Larger T makes the q/k/v split copy dearer; the merge must still win at real widths.
    let decode = run_passes(&parse_ir(&decoder_ir(2, QWEN3_0_6B, QWEN3)), "default");
    for t in [2, 16, 128] {
        let prefill_unfused = parse_ir(&decoder_ir(2, QWEN3_0_6B, QWEN3.prefill(t)));
        let prefill = run_passes(&prefill_unfused, "default");
        let mut kinds = launching_kinds(&prefill);
        assert_eq!(kinds.remove(&braid_ir::OpKind::Split), Some(2), "T = {t}");
        assert_eq!(kinds, launching_kinds(&decode), "T = {t}");
        assert_eq!(
            matmul_weight_reads(&prefill),
            matmul_weight_reads(&prefill_unfused)
        );
    }
}

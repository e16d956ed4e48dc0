//! Conversion and extraction: lossless round trip, no duplicated matmuls, fusions that would repeat
//! work rejected, graphs with nothing to fuse returned unchanged.

mod common;

use braid_ir::OpKind;
use braid_passes::cost::{graph_cost, kernel_launches};
use braid_passes::fusion::{fuse, FusionLimits};
use common::{
    assert_equivalent, count, fixture, launching_nodes, matmul_weight_reads, parse_ir, qwen3_ir,
    run_passes, text,
};

const ALL_FIXTURES: &[&str] = &[
    "horizontal_qkv",
    "horizontal_gate_up",
    "norm_matmul",
    "gated_mlp",
    "residual",
    "qk_norm_rope",
    "neg_norm_shared",
    "neg_matmul_shared",
    "no_pattern",
    "horizontal_mixed_dtype",
    "qwen3_1layer",
    "horizontal_qkv_bias",
    "norm_matmul_add",
];

#[test]
fn round_trip_without_rules_prints_identically() {
    for name in ALL_FIXTURES {
        let g = fixture(name);
        let (back, report) = fuse(&g, &[], &FusionLimits::default()).unwrap();
        assert_eq!(text(&back), text(&g), "{name}");
        assert_eq!(report.cost_before, report.cost_after, "{name}");
        assert_eq!(report.moves, 0, "{name}");
    }
}

#[test]
fn fusion_is_idempotent() {
    for name in ALL_FIXTURES {
        let once = run_passes(&fixture(name), "default");
        let twice = run_passes(&once, "default");
        assert_eq!(text(&twice), text(&once), "{name}");
    }
}

#[test]
fn extraction_never_duplicates_a_matmul() {
    for name in ALL_FIXTURES {
        let g = fixture(name);
        let fused = run_passes(&g, "default");
        assert_eq!(
            matmul_weight_reads(&fused),
            matmul_weight_reads(&g),
            "{name}: every matmul weight must be read exactly as often as before"
        );
    }
    let g = parse_ir(&qwen3_ir(3));
    let fused = run_passes(&g, "default");
    let reads = matmul_weight_reads(&fused);
    assert_eq!(reads, matmul_weight_reads(&g));
    // 7 matmuls per layer + lm_head before; 4 matmul-like nodes per layer + lm_head after.
    let matmul_like = |g: &braid_ir::Graph| {
        count(g, OpKind::MatMul)
            + count(g, OpKind::FusedRmsNormMatmul)
            + count(g, OpKind::FusedMatmulAdd)
            + count(g, OpKind::FusedGatedMlp)
    };
    assert_eq!(matmul_like(&g), 3 * 7 + 1);
    assert_eq!(matmul_like(&fused), 3 * 4 + 1);
}

#[test]
fn normed_value_with_second_consumer_is_not_fused() {
    let g = fixture("neg_norm_shared");
    let fused = run_passes(&g, "default");
    assert_eq!(count(&fused, OpKind::FusedRmsNormMatmul), 0);
    assert_eq!(text(&fused), text(&g));
}

#[test]
fn shared_norm_fusion_only_wins_when_cheaper() {
    // The normed row feeds two matmuls with different dtypes (no horizontal merge). Fusing the norm
    // into both drops the norm's launch and the round trip of h, reading x and g twice instead:
    // cheaper, so it is taken; the norm node itself disappears.
    let g = parse_ir(
        "weight @g : bf16[32]
weight @wa : bf16[24, 32]
weight @wb : f32[24, 32]
%x = input \"x\" : f32[1, 32]
%h = rms_norm(%x, @g) {eps = 1e-6} : f32[1, 32]
%a = matmul(%h, @wa) : f32[1, 24]
%b = matmul(%h, @wb) : f32[1, 24]
return %a, %b
",
    );
    let fused = run_passes(&g, "default");
    assert_eq!(
        count(&fused, OpKind::FusedRmsNormMatmul),
        2,
        "{}",
        text(&fused)
    );
    assert_eq!(count(&fused, OpKind::RmsNorm), 0);
    assert!(graph_cost(&fused).time_us() < graph_cost(&g).time_us());
    assert_equivalent(&g, &fused, 3, 1);
}

#[test]
fn matmul_used_twice_is_not_fused_with_its_add() {
    let g = fixture("neg_matmul_shared");
    let fused = run_passes(&g, "default");
    assert_eq!(count(&fused, OpKind::FusedMatmulAdd), 0);
    assert_eq!(count(&fused, OpKind::MatMul), 1);
    assert_eq!(text(&fused), text(&g));
}

#[test]
fn graph_without_fusable_pattern_comes_back_unchanged() {
    let g = fixture("no_pattern");
    assert_eq!(text(&run_passes(&g, "default")), text(&g));
}

#[test]
fn weights_of_different_dtypes_are_not_concatenated() {
    let g = fixture("horizontal_mixed_dtype");
    let merged = run_passes(&g, "fuse-horizontal");
    assert_eq!(text(&merged), text(&g));
    let fused = run_passes(&g, "default");
    assert_eq!(count(&fused, OpKind::Concat), 0);
    assert_equivalent(&g, &fused, 1, 1);
}

#[test]
fn qwen3_layer_reaches_six_kernel_launches() {
    for layers in 1..=3 {
        let g = parse_ir(&qwen3_ir(layers));
        let fused = run_passes(&g, "default");
        // Outside the layers: embedding, fused final norm + lm_head, argmax.
        assert_eq!(
            launching_nodes(&fused),
            6 * layers + 3,
            "{layers} layers:\n{}",
            text(&fused)
        );
        assert_eq!(kernel_launches(&fused), launching_nodes(&fused));
        assert_eq!(count(&fused, OpKind::FusedQkNormRope), layers);
        assert_eq!(count(&fused, OpKind::FusedGatedMlp), layers);
        assert_eq!(count(&fused, OpKind::FusedMatmulAdd), layers);
        assert_eq!(count(&fused, OpKind::FusedRmsNormMatmul), 2 * layers + 1);
        assert_eq!(count(&fused, OpKind::Attention), layers);
        assert_eq!(count(&fused, OpKind::Concat), 2 * layers);
    }
    // The hand-written fixture is the generator's one-layer graph.
    assert_eq!(
        text(&fixture("qwen3_1layer")),
        text(&parse_ir(&qwen3_ir(1)))
    );
    let g = fixture("qwen3_1layer");
    assert_eq!(launching_nodes(&run_passes(&g, "default")), 6 + 3);
}

#[test]
fn fusion_lowers_estimated_cost() {
    let g = fixture("qwen3_1layer");
    let (fused, report) = fuse(
        &g,
        &braid_passes::rules::all_rules(),
        &FusionLimits::default(),
    )
    .unwrap();
    assert_eq!(report.stop_reason, "Saturated");
    assert_eq!(report.cost_before, graph_cost(&g));
    assert_eq!(report.cost_after, graph_cost(&fused));
    assert!(report.cost_after.launches < report.cost_before.launches);
    // Unfused: embedding, 5 norms (input, q, k, post-attention, final), 7 matmuls + lm_head,
    // 2 ropes, attention, 2 adds, silu, mul, argmax = 22 launches.
    assert_eq!(report.cost_before.launches, 22);
    assert_eq!(report.cost_after.launches, 9);
}

//! A pass never changes what a graph computes: every rule theme and the full pipeline, run through
//! the reference interpreter before and after on fresh random weights and inputs (several seeds and
//! decode steps, so KV caches fill), agree within f32 relative L2 1e-5.

mod common;

use braid_ir::OpKind;
use common::{assert_equivalent, count, fixture, parse_ir, qwen3_ir, run_passes};

/// Runs `spec` on fixture `name`, checks the pass produced `kind`, and compares on 3 seeds.
fn check(name: &str, spec: &str, kind: OpKind) {
    let before = fixture(name);
    let after = run_passes(&before, spec);
    assert!(
        count(&after, kind) > 0,
        "{spec} on {name} produced no {kind}"
    );
    for seed in 0..3 {
        assert_equivalent(&before, &after, seed, 3);
    }
}

#[test]
fn horizontal_qkv_keeps_results() {
    check("horizontal_qkv", "fuse-horizontal", OpKind::Split);
}

#[test]
fn horizontal_gate_up_keeps_results() {
    check("horizontal_gate_up", "fuse-horizontal", OpKind::Split);
}

#[test]
fn norm_matmul_keeps_results() {
    check(
        "norm_matmul",
        "fuse-norm-matmul",
        OpKind::FusedRmsNormMatmul,
    );
}

#[test]
fn gated_mlp_keeps_results() {
    check("gated_mlp", "fuse-mlp", OpKind::FusedGatedMlp);
}

#[test]
fn residual_keeps_results() {
    check("residual", "fuse-residual", OpKind::FusedMatmulAdd);
}

#[test]
fn qk_norm_rope_keeps_results() {
    check("qk_norm_rope", "fuse-qk-norm-rope", OpKind::FusedQkNormRope);
}

#[test]
fn qwen3_default_pipeline_keeps_logits_and_tokens() {
    check("qwen3_1layer", "default", OpKind::FusedGatedMlp);
}

#[test]
fn qwen3_two_layers_default_pipeline_over_five_steps() {
    let before = parse_ir(&qwen3_ir(2));
    let after = run_passes(&before, "default");
    for seed in 10..12 {
        assert_equivalent(&before, &after, seed, 5);
    }
}

#[test]
fn qwen3_theme_passes_in_sequence_match_default() {
    let before = fixture("qwen3_1layer");
    let spec = "fuse-horizontal,fuse-norm-matmul,fuse-qk-norm-rope,fuse-mlp,fuse-residual,dce";
    let after = run_passes(&before, spec);
    assert_equivalent(&before, &after, 7, 4);
    assert_eq!(
        common::text(&after),
        common::text(&run_passes(&before, "default")),
        "the theme passes one by one should reach the same graph as `fuse`"
    );
}

#[test]
fn gated_mlp_with_swapped_operands_fuses() {
    let before = parse_ir(
        "weight @w_down : bf16[32, 48]
%gu = input \"gu\" : f32[1, 96]
%r = input \"r\" : f32[1, 32]
%g, %u = split(%gu) {axis = 1, sizes = [48, 48]} : f32[1, 48], f32[1, 48]
%sg = silu(%g) : f32[1, 48]
%m = mul(%u, %sg) : f32[1, 48]
%dn = matmul(%m, @w_down) : f32[1, 32]
%y = add(%dn, %r) : f32[1, 32]
return %y
",
    );
    let after = run_passes(&before, "fuse-mlp");
    assert_eq!(count(&after, OpKind::FusedGatedMlp), 1);
    assert_eq!(count(&after, OpKind::Silu), 0);
    assert_equivalent(&before, &after, 5, 1);
}

#[test]
fn gate_up_split_along_other_axis_or_unequal_halves_is_left_alone() {
    let before = parse_ir(
        "weight @w_down : bf16[32, 40]
%gu = input \"gu\" : f32[1, 96]
%r = input \"r\" : f32[1, 32]
%g, %u, %rest = split(%gu) {axis = 1, sizes = [40, 40, 16]} : f32[1, 40], f32[1, 40], f32[1, 16]
%sg = silu(%g) : f32[1, 40]
%m = mul(%sg, %u) : f32[1, 40]
%dn = matmul(%m, @w_down) : f32[1, 32]
%y = add(%dn, %r) : f32[1, 32]
return %y, %rest
",
    );
    let after = run_passes(&before, "fuse-mlp");
    assert_eq!(common::text(&after), common::text(&before));
}

#[test]
fn the_check_catches_a_wrong_rewrite() {
    // The gated MLP with the silu dropped computes something else: the comparison must fail.
    let before = fixture("gated_mlp");
    let wrong_text = common::fixture_text("gated_mlp").replace("mul(%sg, %u)", "mul(%g, %u)");
    let wrong = parse_ir(&wrong_text);
    let caught = std::panic::catch_unwind(|| assert_equivalent(&before, &wrong, 0, 1));
    assert!(
        caught.is_err(),
        "a graph without the silu passed the equivalence check"
    );
}

#[test]
fn horizontal_qkv_bias_keeps_results() {
    check("horizontal_qkv_bias", "fuse-horizontal", OpKind::Split);
    // With the residual theme the packed bias lands in the matmul's epilogue: one launch.
    check("horizontal_qkv_bias", "default", OpKind::FusedMatmulAdd);
    let fused = run_passes(&fixture("horizontal_qkv_bias"), "default");
    assert_eq!(
        common::launching_nodes(&fused),
        1,
        "{}",
        common::text(&fused)
    );
    assert_eq!(count(&fused, OpKind::Add), 0);
}

#[test]
fn norm_matmul_add_keeps_results_from_either_theme_order() {
    check("norm_matmul_add", "default", OpKind::FusedRmsNormMatmulAdd);
    let g = fixture("norm_matmul_add");
    let want = common::text(&run_passes(&g, "default"));
    for spec in [
        "fuse-norm-matmul,fuse-residual",
        "fuse-residual,fuse-norm-matmul",
    ] {
        let after = run_passes(&g, spec);
        assert_eq!(common::text(&after), want, "{spec}");
        assert_equivalent(&g, &after, 2, 1);
    }
}

#[test]
fn biases_that_are_not_weight_rows_of_each_part_are_left_alone() {
    // v's "bias" is a computed row, not a weight: no bias packing (it would need a run-time
    // concat); the matmuls still merge.
    let before = parse_ir(
        "weight @wq : bf16[32, 32]
weight @wk : bf16[16, 32]
weight @wv : bf16[16, 32]
weight @bq : bf16[32]
weight @bk : bf16[16]
%x = input \"x\" : f32[1, 32]
%bv = input \"bv\" : f32[16]
%q = matmul(%x, @wq) : f32[1, 32]
%k = matmul(%x, @wk) : f32[1, 16]
%v = matmul(%x, @wv) : f32[1, 16]
%qb = add(%q, @bq) : f32[1, 32]
%kb = add(%k, @bk) : f32[1, 16]
%vb = add(%v, %bv) : f32[1, 16]
return %qb, %kb, %vb
",
    );
    let after = run_passes(&before, "fuse-horizontal");
    assert_eq!(count(&after, OpKind::Add), 3, "{}", common::text(&after));
    assert_eq!(count(&after, OpKind::Concat), 1);
    assert_equivalent(&before, &after, 4, 1);
}

#[test]
fn qk_norm_rope_needs_equal_rope_attributes() {
    // k's rope has a Llama 3 scaling, q's the default: fusing them would change k.
    let text = common::fixture_text("qk_norm_rope");
    let scaled = "{theta = 1e6, rope_type = llama3, factor = 8, low_freq_factor = 1, \
                  high_freq_factor = 4, original_max_position_embeddings = 64}";
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let k_rope = lines
        .iter()
        .rposition(|l| l.contains("= rope("))
        .expect("the fixture has two ropes");
    lines[k_rope] = lines[k_rope].replace("{theta = 1e6}", scaled);
    let mixed = parse_ir(&(lines.join("\n") + "\n"));
    let after = run_passes(&mixed, "fuse-qk-norm-rope");
    assert_eq!(count(&after, OpKind::FusedQkNormRope), 0);
    assert_eq!(common::text(&after), common::text(&mixed));
    // The same scaling on both: they fuse, and the fused node keeps the scaling.
    let both = parse_ir(&text.replace("{theta = 1e6}", scaled));
    let after = run_passes(&both, "fuse-qk-norm-rope");
    assert_eq!(count(&after, OpKind::FusedQkNormRope), 1);
    assert!(
        common::text(&after).contains("{eps = 1e-6, theta = 1e6, rope_type = llama3, factor = 8e0"),
        "{}",
        common::text(&after)
    );
    assert_equivalent(&both, &after, 6, 3);
}

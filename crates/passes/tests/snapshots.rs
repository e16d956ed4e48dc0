//! Golden IR text: each rule theme on a small hand-written graph, and the full pipeline on one
//! layer of each decoder family (Qwen3 decode and prefill, Qwen2, Llama 3). Each snapshot shows the
//! input as printed, then the output.

mod common;

use braid_ir::Graph;
use common::{decoder_ir, fixture, parse_ir, run_passes, text, Arch, LLAMA3, QWEN2, QWEN3, TINY};

/// The snapshot body: the printed input, then the printed output of `spec`.
fn before_after(name: &str, spec: &str) -> String {
    graph_before_after(&fixture(name), spec)
}

/// One layer of `arch` with [`TINY`] dimensions, before and after the default pipeline.
fn layer_before_after(arch: Arch) -> String {
    graph_before_after(&parse_ir(&decoder_ir(1, TINY, arch)), "default")
}

fn graph_before_after(before: &Graph, spec: &str) -> String {
    let after = run_passes(before, spec);
    format!(
        "# before\n{}\n# after {spec}\n{}",
        text(before),
        text(&after)
    )
}

#[test]
fn horizontal_qkv() {
    insta::assert_snapshot!(before_after("horizontal_qkv", "fuse-horizontal"));
}

#[test]
fn horizontal_gate_up() {
    insta::assert_snapshot!(before_after("horizontal_gate_up", "fuse-horizontal"));
}

#[test]
fn norm_matmul() {
    insta::assert_snapshot!(before_after("norm_matmul", "fuse-norm-matmul"));
}

#[test]
fn gated_mlp() {
    insta::assert_snapshot!(before_after("gated_mlp", "fuse-mlp"));
}

#[test]
fn residual() {
    insta::assert_snapshot!(before_after("residual", "fuse-residual"));
}

#[test]
fn qk_norm_rope() {
    insta::assert_snapshot!(before_after("qk_norm_rope", "fuse-qk-norm-rope"));
}

#[test]
fn qwen3_layer_default_pipeline() {
    insta::assert_snapshot!(before_after("qwen3_1layer", "default"));
}

#[test]
fn horizontal_qkv_bias() {
    insta::assert_snapshot!(before_after("horizontal_qkv_bias", "fuse-horizontal"));
}

#[test]
fn norm_matmul_add() {
    insta::assert_snapshot!(before_after("norm_matmul_add", "default"));
}

#[test]
fn qwen3_prefill_layer_default_pipeline() {
    insta::assert_snapshot!(layer_before_after(QWEN3.prefill(4)));
}

#[test]
fn qwen2_layer_default_pipeline() {
    insta::assert_snapshot!(layer_before_after(QWEN2));
}

#[test]
fn llama3_layer_default_pipeline() {
    insta::assert_snapshot!(layer_before_after(LLAMA3));
}

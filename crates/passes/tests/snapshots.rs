//! Golden IR text: each rule theme on a small hand-written graph, and the full pipeline on a
//! one-layer Qwen3 decode step. Each snapshot shows the input as printed, then the output.

mod common;

use braid_ir::Graph;
use common::{fixture, run_passes, text};

/// The snapshot body: the printed input, then the printed output of `spec`.
fn before_after(name: &str, spec: &str) -> String {
    graph_before_after(&fixture(name), spec)
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

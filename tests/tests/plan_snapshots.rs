//! The CUDA backend's plan for whole models, built on the CPU for a recorded H200
//! (`Target::h200()`: no GPU needed), as `braid plan` prints it: one line per launch with its
//! kernel, grid, block, shared memory and bytes, and the backend fusions. Each backend fusion has a
//! snapshot with it applied (the defaults) and one with its knob turning it off.
//!
//! The recorded H200 must agree with a live one; `crates/runtime/tests/gpu_decode.rs`
//! (`live_plan_matches_the_recorded_h200_plan`) checks that on the GPU machine.

use braid_backend_cuda::lower::lower;
use braid_backend_cuda::{Plan, Target, Tuning};
use braid_ir::DType;
use braid_runtime::load::LoadedModel;
use braid_runtime::pipeline::fused_graph;

fn plan(model: &str, tuning: &Tuning) -> Plan {
    let model = LoadedModel::load(model).expect("model");
    let g = fused_graph(&model, "default", 1024, DType::BF16).expect("fused graph");
    lower(&g, &Target::h200(), tuning).expect("plan")
}

fn with(knob: &str, value: &str) -> Tuning {
    let mut t = Tuning::default();
    t.set(knob, value).expect("knob");
    t
}

fn qwen3_0_6b() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../models/qwen3-0.6b").to_string()
}

#[test]
fn tiny_model_plan() {
    insta::assert_snapshot!(plan("tiny", &Tuning::default()).text(false));
}

#[test]
fn tiny_model_plan_with_parameters() {
    insta::assert_snapshot!(plan("tiny", &Tuning::default()).text(true));
}

#[test]
fn tiny_model_plan_without_the_qk_prologue_fold() {
    let p = plan("tiny", &with("BRAID_ATT_QK_FOLD", "0"));
    assert!(p.launches.iter().any(|l| l.kernel.name == "norm_rope_f32"));
    insta::assert_snapshot!(p.text(false));
}

#[test]
fn tiny_model_plan_without_the_swiglu_epilogue() {
    let p = plan("tiny", &with("BRAID_GEMV_GLU", "0"));
    assert!(!p.launches.iter().any(|l| l.kernel.name.contains("glu")));
    insta::assert_snapshot!(p.text(false));
}

#[test]
fn tiny_model_plan_without_the_argmax_fold() {
    let p = plan("tiny", &with("BRAID_ARGMAX_FOLD", "0"));
    assert_eq!(
        p.launches.last().map(|l| l.kernel.name.as_str()),
        Some("argmax_f32")
    );
    insta::assert_snapshot!(p.text(false));
}

#[test]
fn qwen3_0_6b_plan_from_its_config() {
    let p = plan(&qwen3_0_6b(), &Tuning::default());
    // 28 layers x 5 kernels (qkv, attention, o_proj, gate/up, down) + embedding + LM head.
    assert_eq!(p.launches.len(), 28 * 5 + 2);
    insta::assert_snapshot!(p.text(false));
}

#[test]
fn plans_are_deterministic() {
    let a = plan(&qwen3_0_6b(), &Tuning::default()).text(true);
    let b = plan(&qwen3_0_6b(), &Tuning::default()).text(true);
    assert_eq!(a, b);
}

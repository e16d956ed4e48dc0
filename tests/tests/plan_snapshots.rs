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
use braid_runtime::decoder::LowerOptions;
use braid_runtime::load::LoadedModel;
use braid_runtime::pipeline::{fused_graph, fused_step_graph};

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

fn model_dir(name: &str) -> String {
    format!("{}/../models/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_family_plans_five_kernels_per_layer() {
    // qkv GEMV (with Qwen2's biases in its epilogue), attention (with both ropes folded in),
    // o_proj + residual, gate/up with the SwiGLU epilogue, down + residual; plus the embedding and
    // the LM head with its argmax. Head dims 64 and 128, GQA groups 2 to 7, hidden sizes that are
    // not multiples of 128 (576).
    for (name, layers) in [
        ("qwen3-0.6b", 28),
        ("qwen2.5-0.5b", 24),
        ("llama-3.2-1b", 16),
        ("smollm2-135m", 30),
    ] {
        let p = plan(&model_dir(name), &Tuning::default());
        assert_eq!(p.launches.len(), layers * 5 + 2, "{name}");
    }
}

#[test]
fn llama_3_2_1b_plan_from_its_config() {
    insta::assert_snapshot!(plan(&model_dir("llama-3.2-1b"), &Tuning::default()).text(false));
}

#[test]
fn qwen2_5_0_5b_plan_from_its_config() {
    insta::assert_snapshot!(plan(&model_dir("qwen2.5-0.5b"), &Tuning::default()).text(false));
}

fn prefill_plan(model: &str, tokens: usize, tuning: &Tuning) -> Plan {
    prefill_plan_with(model, "default", tokens, tuning)
        .unwrap_or_else(|e| panic!("prefill plan of {model}: {e}"))
}

fn prefill_plan_with(
    model: &str,
    passes: &str,
    tokens: usize,
    tuning: &Tuning,
) -> Result<Plan, String> {
    let model = LoadedModel::load(model).map_err(|e| format!("{e:#}"))?;
    let opts = LowerOptions::decode(1024, DType::BF16).with_tokens(tokens, false);
    let g = fused_step_graph(&model, passes, opts).map_err(|e| format!("{e:#}"))?;
    lower(&g, &Target::h200(), tuning).map_err(|e| e.to_string())
}

#[test]
fn every_fixture_family_plans_its_prefill_step_fused_and_unfused() {
    // Unfused, Qwen2's (and attention_bias Llama's) projection biases are `add(x [T, n], bias
    // [n])` nodes: one row broadcast over the chunk, which the elementwise kernel must accept.
    for name in ["tiny-qwen3", "tiny-qwen2", "tiny-llama", "tiny-llama-bias"] {
        let dir = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        for passes in ["none", "default"] {
            let p = prefill_plan_with(&dir, passes, 8, &Tuning::default())
                .unwrap_or_else(|e| panic!("{name} --passes {passes}: {e}"));
            assert!(p.gemm_count() > 0, "{name} --passes {passes}: no GEMM");
        }
    }
}

#[test]
fn tiny_model_prefill_plan() {
    let p = prefill_plan("tiny", 64, &Tuning::default());
    // Per layer: qkv (prologue + GEMM), q/k norm + rope (the split read in place), KV append,
    // attention, o_proj, gate/up, down (prologue + GEMM each); embedding and the LM head GEMV.
    assert_eq!(p.launches.len(), 2 * 11 + 2);
    assert_eq!(p.gemm_count(), 2 * 4);
    insta::assert_snapshot!(p.text(false));
}

#[test]
fn qwen3_0_6b_prefill_plan_from_its_config() {
    let p = prefill_plan(&qwen3_0_6b(), 512, &Tuning::default());
    // Per layer the passes keep q, k and v apart (for T > 1 the packed split is a copy to them):
    // 3 GEMMs behind one shared prologue, norm + rope, KV append, attention, 3 x (prologue +
    // GEMM).
    assert_eq!(p.launches.len(), 28 * 13 + 2);
    let prologues = p
        .launches
        .iter()
        .filter(|l| l.kernel.name == "gemm_prologue_f32")
        .count();
    assert_eq!(prologues, 28 * 4);
    insta::assert_snapshot!(p.text(false));
}

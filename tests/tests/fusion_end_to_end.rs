//! The fusion pipeline on whole Qwen3 decode graphs: launch counts, equivalence, snapshots, and
//! identical greedy generations with and without fusion.

use braid_ir::{stats::stats, text, DType};
use braid_runtime::engine::{generate, GenerateOptions};
use braid_runtime::load::LoadedModel;
use braid_runtime::pipeline::{open_backend, run_passes, BackendRequest, Device};
use braid_runtime::reference::rel_l2;
use braid_runtime::sampling::SamplingParams;
use braid_tests::{cpu_logits, fixture};

fn fixture_model() -> LoadedModel {
    LoadedModel::load(fixture("tiny-qwen3").to_str().unwrap()).expect("load fixture")
}

#[test]
fn qwen3_launches_per_layer_drop_to_six() {
    let model = fixture_model();
    let layers = model.config.num_hidden_layers;
    let mut g = model.lower(64, DType::F32).unwrap();
    let before = stats(&g);
    // Per layer: 4 rms_norm (input, q_norm, k_norm, post-attention) + 7 matmul (q, k, v, o, gate,
    // up, down) + 2 rope + attention + 2 add + silu + mul = 18; plus embedding, final rms_norm,
    // lm_head matmul, argmax.
    assert_eq!(before.launches, 18 * layers + 4, "{}", before.to_text());
    run_passes(&mut g, "default", &[], &mut |_, _| {}).unwrap();
    let after = stats(&g);
    // Per layer: fused_rms_norm_matmul x2, fused_qk_norm_rope, attention, fused_matmul_add,
    // fused_gated_mlp; plus embedding, fused final norm + lm_head, argmax.
    assert_eq!(after.launches, 6 * layers + 3, "{}", after.to_text());
    assert_eq!(
        after.ops.get("matmul"),
        None,
        "every matmul should be fused: {}",
        after.to_text()
    );
}

#[test]
fn fused_graph_snapshot() {
    let model = fixture_model();
    let mut g = model.lower(64, DType::F32).unwrap();
    run_passes(&mut g, "default", &[], &mut |_, _| {}).unwrap();
    insta::assert_snapshot!("qwen3_2layer_fused", text::print(&g));
}

#[test]
fn unfused_graph_snapshot_round_trips() {
    let model = fixture_model();
    let g = model.lower(64, DType::F32).unwrap();
    let printed = text::print(&g);
    let reparsed = text::parse(&printed).expect("parse printed graph");
    assert_eq!(text::print(&reparsed), printed);
    insta::assert_snapshot!("qwen3_2layer_unfused", printed);
}

#[test]
fn fused_and_unfused_logits_agree_on_the_tiny_model() {
    let model = LoadedModel::load("tiny").unwrap();
    let tokens = [9707u32, 11, 1879, 0, 151644, 42, 7, 99];
    let unfused = cpu_logits(&model, "none", &tokens);
    let fused = cpu_logits(&model, "default", &tokens);
    for (pos, (a, b)) in fused.iter().zip(&unfused).enumerate() {
        let e = rel_l2(a, b);
        assert!(e <= 1e-5, "position {pos}: fused vs unfused rel L2 {e:.3e}");
    }
}

#[test]
fn greedy_tokens_identical_with_and_without_fusion() {
    let model = LoadedModel::load("tiny").unwrap();
    let prompt = model.prompt_tokens("Hello", false, false).unwrap();
    let run = |passes: &str| {
        let req = BackendRequest::new(Device::Cpu, passes, 64);
        let mut backend = open_backend(&model, &req).unwrap();
        let opts = GenerateOptions {
            max_tokens: 16,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![],
            stop_strings: vec![],
        };
        let mut toks = Vec::new();
        generate(backend.as_mut(), &prompt, &opts, &mut |t| {
            toks.push(t);
            Ok(())
        })
        .unwrap();
        toks
    };
    let none = run("none");
    assert_eq!(none.len(), 16);
    assert_eq!(run("default"), none);
}

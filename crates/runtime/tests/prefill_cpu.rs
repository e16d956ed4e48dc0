//! The prefill step over `T` prompt tokens, on the CPU reference interpreter: for the built-in tiny
//! model and the committed `tests/fixtures/tiny-qwen3` checkpoint, unfused and fused, one
//! `T`-token step computes what `T` decode steps compute (the last token's logits and greedy
//! token; every token's logits with `all_logits`), leaves the same KV cache (decoding on after it
//! gives the same logits), and chunks that follow earlier tokens in the cache agree too. The CPU
//! backend's batched prefill and its all-position logits agree with token-by-token prefill.

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, Tensor};
use braid_runtime::engine::{DecodeBackend, PrefillMode};
use braid_runtime::load::LoadedModel;
use braid_runtime::pipeline::{open_backend, BackendRequest, Device, StepGraphs};
use braid_runtime::reference::rel_l2;

const CTX: usize = 32;

fn fixture(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/").to_string() + name
}

/// Runs `ids` (as many as `g` takes) at `position`; returns (logits, next token).
fn run(g: &Graph, it: &mut Interpreter<'_>, ids: &[u32], position: usize) -> (Vec<f32>, u32) {
    let ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let inputs = [
        ("token", Tensor::i32([ids.len()], ids)),
        ("position", Tensor::i32([1], vec![position as i32])),
    ];
    let r = it.run(g, &inputs).unwrap_or_else(|e| panic!("{e}"));
    let logits = r.iter().find(|t| t.ty.dtype == DType::F32).expect("logits");
    let next = r.iter().find(|t| t.ty.dtype == DType::I32).expect("next");
    (logits.data.clone(), next.ints[0] as u32)
}

fn check_model(model: &LoadedModel, label: &str) {
    let vocab = model.config.vocab_size;
    let prompt: Vec<u32> = (0..11u32).map(|i| (i * 7919 + 13) % vocab as u32).collect();
    for passes in ["none", "default"] {
        let steps = StepGraphs::new(model, passes, CTX, DType::F32);
        let decode = steps.graph(1, false).expect("decode step");
        let weights = model.weights().expect("weights");
        // Token by token: the reference.
        let mut by_token = Interpreter::new(weights);
        let want: Vec<(Vec<f32>, u32)> = prompt
            .iter()
            .enumerate()
            .map(|(p, &t)| run(&decode, &mut by_token, &[t], p))
            .collect();
        // Chunks: the whole prompt at once, and chunks after earlier tokens in the cache.
        for chunks in [vec![11], vec![4, 7], vec![1, 2, 8]] {
            let mut by_chunk = Interpreter::new(weights);
            let mut at = 0;
            for &c in &chunks {
                let g = steps.graph(c, false).expect("prefill step");
                let (logits, next) = run(&g, &mut by_chunk, &prompt[at..at + c], at);
                at += c;
                assert_eq!(logits.len(), vocab, "{label} {passes}: one row of logits");
                let err = rel_l2(&logits, &want[at - 1].0);
                assert!(
                    err <= 1e-5,
                    "{label} {passes} chunks {chunks:?}: logits at {} rel L2 {err:.3e}",
                    at - 1
                );
                assert_eq!(next, want[at - 1].1, "{label} {passes} chunks {chunks:?}");
            }
            // The caches hold the same rows: decoding on gives the same logits.
            let mut tok = want[prompt.len() - 1].1;
            let mut reference = Interpreter::new(weights);
            for (p, &t) in prompt.iter().enumerate() {
                run(&decode, &mut reference, &[t], p);
            }
            for p in prompt.len()..prompt.len() + 3 {
                let (a, na) = run(&decode, &mut by_chunk, &[tok], p);
                let (b, nb) = run(&decode, &mut reference, &[tok], p);
                let err = rel_l2(&a, &b);
                assert!(
                    err <= 1e-5,
                    "{label} {passes}: decode after prefill, position {p}: rel L2 {err:.3e}"
                );
                assert_eq!(na, nb);
                tok = na;
            }
        }
        // Every token's logits.
        let all = steps.graph(prompt.len(), true).expect("all-logits step");
        let mut it = Interpreter::new(weights);
        let (logits, next) = run(&all, &mut it, &prompt, 0);
        assert_eq!(logits.len(), vocab * prompt.len());
        for (p, (w, _)) in want.iter().enumerate() {
            let err = rel_l2(&logits[p * vocab..(p + 1) * vocab], w);
            assert!(
                err <= 1e-5,
                "{label} {passes}: all logits row {p}: {err:.3e}"
            );
        }
        assert_eq!(next, want[prompt.len() - 1].1);
    }
}

#[test]
fn the_tiny_models_prefill_step_equals_its_decode_steps() {
    check_model(&LoadedModel::load("tiny").expect("tiny"), "tiny");
}

#[test]
fn the_fixture_checkpoints_prefill_step_equals_its_decode_steps() {
    let m = LoadedModel::load(&fixture("tiny-qwen3")).expect("fixture");
    check_model(&m, "tiny-qwen3");
}

#[test]
fn one_token_steps_are_the_decode_step() {
    let m = LoadedModel::load("tiny").expect("tiny");
    let steps = StepGraphs::new(&m, "default", CTX, DType::F32);
    let a = braid_ir::text::print(&steps.graph(1, false).unwrap());
    let b = braid_ir::text::print(&steps.graph(1, true).unwrap());
    let c = braid_ir::text::print(
        &braid_runtime::pipeline::fused_graph(&m, "default", CTX, DType::F32).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
}

fn backend<'m>(m: &'m LoadedModel, prefill: PrefillMode) -> Box<dyn DecodeBackend + 'm> {
    let req = BackendRequest {
        prefill,
        ..BackendRequest::new(Device::Cpu, "default", CTX)
    };
    open_backend(m, &req).expect("CPU backend")
}

#[test]
fn the_cpu_backends_batched_prefill_equals_token_by_token() {
    let m = LoadedModel::load("tiny").expect("tiny");
    let prompt: Vec<u32> = (0..13u32).map(|i| i * 911 % 5000).collect();
    let mut token = backend(&m, PrefillMode::Token);
    let mut batched = backend(&m, PrefillMode::Batched { chunk: 4 });
    // 13 tokens in chunks of at most 4: 4, 4, 4, 1, after a reused prefix of 2.
    for b in [&mut token, &mut batched] {
        b.reset().unwrap();
        b.prefill(&prompt[..2], 0, false).unwrap();
    }
    let a = token.prefill(&prompt[2..], 2, true).unwrap();
    let b = batched.prefill(&prompt[2..], 2, true).unwrap();
    assert_eq!(a.next_token, b.next_token);
    let err = rel_l2(b.logits.as_ref().unwrap(), a.logits.as_ref().unwrap());
    assert!(err <= 1e-5, "{err:e}");
    // Greedy decoding goes on identically.
    let (mut ta, mut tb) = (a.next_token, b.next_token);
    for p in prompt.len()..prompt.len() + 8 {
        ta = token.step(ta, p, false).unwrap().next_token;
        tb = batched.step(tb, p, false).unwrap().next_token;
        assert_eq!(ta, tb, "position {p}");
    }
    // All-position logits: one batched step against the steps one by one.
    for b in [&mut token, &mut batched] {
        b.reset().unwrap();
    }
    let want = token.prefill_logits(&prompt, 0).unwrap();
    let got = batched.prefill_logits(&prompt, 0).unwrap();
    assert_eq!(got.len(), prompt.len());
    for (p, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_l2(g, w);
        assert!(err <= 1e-5, "position {p}: {err:e}");
    }
    // An empty prompt is a clear error.
    let e = batched.prefill(&[], 0, false).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

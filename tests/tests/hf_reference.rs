//! The CPU engine against transformers' float32 teacher-forced logits on committed random-weight
//! Qwen3 checkpoints (made by `scripts/make_checkpoint.py` on the GPU machine): relative L2 error
//! at most 1e-4 at every position, unfused and fused.

use braid_runtime::load::LoadedModel;
use braid_runtime::reference::{compare, Reference};
use braid_tests::{cpu_logits, fixture};

const BAR: f64 = 1e-4;

fn check_fixture(name: &str, passes: &str) {
    let dir = fixture(name);
    let model = LoadedModel::load(dir.to_str().unwrap()).expect("load fixture checkpoint");
    let reference = Reference::load(&dir.join("reference.safetensors")).expect("load reference");
    assert_eq!(reference.vocab, model.config.vocab_size);
    let logits = cpu_logits(&model, passes, &reference.tokens);
    let mut worst = 0f64;
    for (pos, l) in logits.iter().enumerate() {
        let e = compare(l, reference.oracle(pos));
        assert!(
            e.rel_l2 <= BAR,
            "{name} --passes {passes}: position {pos}: rel L2 {:.3e} > {BAR:e}",
            e.rel_l2
        );
        assert!(
            e.top1_agrees,
            "{name} --passes {passes}: position {pos}: top-1 differs"
        );
        worst = worst.max(e.rel_l2);
    }
    // The bar must be meaningful: transformers' own bf16 forward is far outside it.
    let bf16 = compare(reference.bf16(0), reference.oracle(0));
    assert!(
        bf16.rel_l2 > 10.0 * BAR,
        "reference bf16 logits look identical to f32: {:.3e}",
        bf16.rel_l2
    );
    eprintln!(
        "{name} --passes {passes}: worst rel L2 {worst:.3e} over {} positions",
        logits.len()
    );
}

#[test]
fn tied_two_layer_checkpoint_matches_transformers_unfused() {
    check_fixture("tiny-qwen3", "none");
}

#[test]
fn tied_two_layer_checkpoint_matches_transformers_fused() {
    check_fixture("tiny-qwen3", "default");
}

#[test]
fn untied_gqa4_checkpoint_matches_transformers() {
    check_fixture("tiny-qwen3-untied", "none");
    check_fixture("tiny-qwen3-untied", "default");
}

//! The CPU engine against transformers' float32 teacher-forced logits on committed random-weight
//! checkpoints of every family (made by `scripts/make_checkpoint.py`: the Qwen3 ones on the GPU
//! machine with transformers 5.17, the Llama and Qwen2 ones on the CPU with transformers 5.24;
//! the commands are in the script's docstring): relative L2 error at most 1e-4 at every position,
//! unfused and fused.

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

#[test]
fn llama3_rope_scaled_tied_checkpoint_matches_transformers() {
    // Llama 3 layout, llama3 rope scaling (original_max_position_embeddings 32, so that all three
    // frequency bands occur within 16 positions), 4 query heads sharing one KV head, tied head.
    check_fixture("tiny-llama", "none");
    check_fixture("tiny-llama", "default");
}

#[test]
fn qwen2_biased_untied_checkpoint_matches_transformers() {
    // Qwen2 layout: q/k/v projections with biases, head_dim derived (128 / 4), untied head.
    check_fixture("tiny-qwen2", "none");
    check_fixture("tiny-qwen2", "default");
}

#[test]
fn llama_with_attention_bias_matches_transformers() {
    // LlamaForCausalLM with attention_bias: q/k/v and o_proj biases; default rope (SmolLM2's
    // theta 1e5), untied head.
    check_fixture("tiny-llama-bias", "none");
    check_fixture("tiny-llama-bias", "default");
}

#[test]
fn the_llama_fixture_depends_on_its_rope_scaling() {
    // With plain rope frequencies the same weights are far past the bar: the fixture checks the
    // llama3 formula, not only the layer structure.
    let dir = fixture("tiny-llama");
    let mut model = LoadedModel::load(dir.to_str().unwrap()).expect("load fixture checkpoint");
    assert!(matches!(
        model.config.rope_scaling,
        braid_ir::RopeScaling::Llama3 { .. }
    ));
    model.config.rope_scaling = braid_ir::RopeScaling::Default;
    let reference = Reference::load(&dir.join("reference.safetensors")).expect("load reference");
    let logits = cpu_logits(&model, "default", &reference.tokens);
    let worst = logits
        .iter()
        .enumerate()
        .map(|(pos, l)| compare(l, reference.oracle(pos)).rel_l2)
        .fold(0f64, f64::max);
    assert!(
        worst > 100.0 * BAR,
        "default rope is too close: {worst:.3e}"
    );
}

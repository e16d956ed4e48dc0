//! Decoder families through the default pipeline: Qwen3 (q/k norm), Qwen2 (q/k/v biases) and
//! Llama 3 (rope scaling), each as a decode step and as a prefill chunk of `T` tokens. Prefill fuses
//! into the same nodes as decode; every fused graph computes what the unfused one does; and one
//! prefill chunk computes what `T` decode steps do.

mod common;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, OpKind, Tensor};
use common::{
    assert_equivalent, assert_equivalent_at, count, decoder_ir, launching_kinds, launching_nodes,
    matmul_weight_reads, parse_ir, random_weights, rel_l2, run_passes, text, Arch, LLAMA3, QWEN2,
    QWEN3, TINY,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tokens of a prefill chunk ([`TINY`]'s cache holds 8 rows: two chunks).
const T: usize = 4;

/// Each family, with its kernel-launching nodes per decode layer: Qwen3 fuses q/k norm and rope
/// into one node; Qwen2 and Llama 3 have no q/k norm and keep two ropes.
const FAMILIES: [(&str, Arch, usize); 3] = [
    ("qwen3", QWEN3, 6),
    ("qwen2", QWEN2, 7),
    ("llama3", LLAMA3, 7),
];

fn unfused(layers: usize, arch: Arch) -> Graph {
    parse_ir(&decoder_ir(layers, TINY, arch))
}

#[test]
fn prefill_fuses_into_the_same_nodes_as_decode() {
    for (name, arch, per_layer) in FAMILIES {
        for layers in 1..=2 {
            let decode = run_passes(&unfused(layers, arch), "default");
            let prefill_unfused = unfused(layers, arch.prefill(T));
            let prefill = run_passes(&prefill_unfused, "default");
            // Outside the layers: embedding, fused final norm + lm_head, argmax.
            assert_eq!(
                launching_nodes(&decode),
                per_layer * layers + 3,
                "{name} decode, {layers} layers:\n{}",
                text(&decode)
            );
            // Node for node the same launches, except that each layer's packed q/k/v split cuts
            // [T, n] rows: a strided copy for T > 1 (`Op::launches_kernel`), a view for one row.
            let mut kinds = launching_kinds(&prefill);
            assert_eq!(
                kinds.remove(&OpKind::Split),
                Some(layers),
                "{name} prefill:\n{}",
                text(&prefill)
            );
            assert_eq!(kinds, launching_kinds(&decode), "{name}, {layers} layers");
            assert_eq!(launching_nodes(&prefill), launching_nodes(&decode) + layers);
            // No matmul duplicated; the splits are the q/k/v ones and the last-row split feeding
            // the LM head, which stays a view (the gate/up split is inside fused_gated_mlp).
            assert_eq!(
                matmul_weight_reads(&prefill),
                matmul_weight_reads(&prefill_unfused)
            );
            assert_eq!(count(&prefill, OpKind::Split), layers + 1);
        }
    }
}

#[test]
fn each_family_reaches_its_fused_nodes() {
    let layers = 2;
    let kinds = |arch: Arch| launching_kinds(&run_passes(&unfused(layers, arch), "default"));
    let get =
        |k: &std::collections::BTreeMap<OpKind, usize>, kind| k.get(&kind).copied().unwrap_or(0);
    let qwen3 = kinds(QWEN3);
    assert_eq!(get(&qwen3, OpKind::FusedQkNormRope), layers);
    assert_eq!(get(&qwen3, OpKind::Rope), 0);
    assert_eq!(get(&qwen3, OpKind::FusedRmsNormMatmul), 2 * layers + 1);
    assert_eq!(get(&qwen3, OpKind::FusedRmsNormMatmulAdd), 0);
    // Qwen2: the biased q/k/v projection is one fused_rms_norm_matmul_add; no add is left over.
    let qwen2 = kinds(QWEN2);
    assert_eq!(get(&qwen2, OpKind::FusedRmsNormMatmulAdd), layers);
    assert_eq!(get(&qwen2, OpKind::FusedRmsNormMatmul), layers + 1);
    assert_eq!(get(&qwen2, OpKind::Rope), 2 * layers);
    assert_eq!(get(&qwen2, OpKind::Add), 0);
    let llama3 = kinds(LLAMA3);
    assert_eq!(get(&llama3, OpKind::FusedRmsNormMatmul), 2 * layers + 1);
    assert_eq!(get(&llama3, OpKind::Rope), 2 * layers);
    for k in [&qwen3, &qwen2, &llama3] {
        assert_eq!(get(k, OpKind::Attention), layers);
        assert_eq!(get(k, OpKind::FusedMatmulAdd), layers);
        assert_eq!(get(k, OpKind::FusedGatedMlp), layers);
        assert_eq!(get(k, OpKind::MatMul), 0);
        assert_eq!(get(k, OpKind::RmsNorm), 0);
    }
    // Llama 3's scaling survives the e-graph.
    let llama = text(&run_passes(&unfused(1, LLAMA3), "default"));
    assert_eq!(
        llama.matches("rope_type = llama3, factor = 3.2e1").count(),
        2,
        "{llama}"
    );
}

#[test]
fn fused_graphs_keep_results_for_decode_and_prefill() {
    for (i, (name, arch, _)) in FAMILIES.into_iter().enumerate() {
        let seed = 100 + i as u64;
        let before = unfused(2, arch);
        let after = run_passes(&before, "default");
        let worst = assert_equivalent(&before, &after, seed, 5);
        assert!(worst <= 1e-5, "{name}");
        // Two chunks: the second follows the first's tokens in the cache.
        let before = unfused(2, arch.prefill(T));
        let after = run_passes(&before, "default");
        assert_equivalent_at(&before, &after, seed, &[0, T]);
    }
}

#[test]
fn theme_passes_one_by_one_reach_the_default_result_for_decode() {
    let spec = "fuse-horizontal,fuse-norm-matmul,fuse-qk-norm-rope,fuse-mlp,fuse-residual,dce";
    for (name, arch, _) in FAMILIES {
        let g = unfused(1, arch);
        assert_eq!(
            text(&run_passes(&g, spec)),
            text(&run_passes(&g, "default")),
            "{name}"
        );
    }
}

#[test]
fn alone_the_horizontal_pass_keeps_a_prefill_gate_up_apart() {
    // For T > 1 the split after a merged matmul is a copy. On its own, fuse-horizontal sees only
    // that cost (the gate/up split feeds silu and mul, not yet fused_gated_mlp), so it merges q/k/v
    // (three launches become two) but not gate/up (two stay two, plus the copy). `fuse` sees the
    // gated-MLP fusion that absorbs the split and merges both: phase ordering, not a lost fusion.
    let g = unfused(1, QWEN3.prefill(T));
    let alone = run_passes(&g, "fuse-horizontal");
    assert_eq!(count(&alone, OpKind::Concat), 1, "{}", text(&alone));
    assert!(text(&alone).contains("concat(@model.layers.0.self_attn.q_proj.weight"));
    let all = run_passes(&g, "default");
    assert_eq!(count(&all, OpKind::Concat), 2);
    assert_eq!(count(&all, OpKind::FusedGatedMlp), 1);
}

/// One run of `g` on the token ids `ids` (as many as `g` takes), the first at `position`.
fn run_ids(g: &Graph, it: &mut Interpreter<'_>, ids: &[i32], position: usize) -> Vec<Tensor> {
    let inputs = [
        ("token", Tensor::i32([ids.len()], ids.to_vec())),
        ("position", Tensor::i32([1], vec![position as i32])),
    ];
    it.run(g, &inputs).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_prefill_chunk_computes_what_t_decode_steps_compute() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (name, arch, _) in FAMILIES {
        let decode = unfused(2, arch);
        let prefill_unfused = unfused(2, arch.prefill(T));
        let weights = random_weights(&decode, 11);
        assert_eq!(random_weights(&prefill_unfused, 11).len(), weights.len());
        for prefill in [
            prefill_unfused.clone(),
            run_passes(&prefill_unfused, "default"),
        ] {
            let mut by_token = Interpreter::new(&weights);
            let mut by_chunk = Interpreter::new(&weights);
            for chunk in 0..2 {
                let ids: Vec<i32> = (0..T).map(|_| rng.random_range(0..256)).collect();
                let got = run_ids(&prefill, &mut by_chunk, &ids, chunk * T);
                let mut want = Vec::new();
                for (t, id) in ids.iter().enumerate() {
                    want = run_ids(&decode, &mut by_token, &[*id], chunk * T + t);
                }
                assert_eq!(got[0].ty, want[0].ty);
                assert_eq!(got[0].ty.dtype, DType::F32);
                let err = rel_l2(&got[0].data, &want[0].data);
                assert!(
                    err <= 1e-6,
                    "{name} chunk {chunk}: logits relative L2 {err:e}"
                );
                assert_eq!(
                    got[1].ints, want[1].ints,
                    "{name} chunk {chunk}: next token"
                );
            }
        }
    }
}

//! Every decoder family through the runtime's one lowering (`braid_runtime::decoder`) and the
//! default passes, from the real configs in `models/`: the fused nodes each family reaches, the
//! launches per layer, and a snapshot of one fused layer per family.

use braid_ir::{stats::stats, text, DType, Graph};
use braid_runtime::decoder::{lower_decode_step, LowerOptions, WeightTypes};
use braid_runtime::model::{Family, Qwen3Config};
use braid_runtime::pipeline::run_passes;

fn config(name: &str) -> Qwen3Config {
    let path = format!(
        "{}/../models/{name}/config.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Qwen3Config::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"))
}

/// The fused decode step of `c` with weights declared bf16 (as `braid graph` on a config
/// directory) and a small KV cache.
fn fused(c: &Qwen3Config, passes: &str) -> Graph {
    let opts = LowerOptions::decode(64, DType::BF16);
    let mut g = lower_decode_step(c, WeightTypes::Declared(DType::BF16), opts).expect("lower");
    run_passes(&mut g, passes, &[], &mut |_, _| {}).expect("passes");
    g
}

/// The real configs, with the family each must be and its kernel-launching nodes per fused layer.
const REAL: [(&str, Family, usize); 4] = [
    ("qwen3-0.6b", Family::Qwen3, 6),
    ("qwen2.5-0.5b", Family::Qwen2, 7),
    ("llama-3.2-1b", Family::Llama, 7),
    ("smollm2-135m", Family::Llama, 7),
];

#[test]
fn every_real_config_fuses_to_its_launches_per_layer() {
    for (name, family, per_layer) in REAL {
        let c = config(name);
        assert_eq!(c.family, family, "{name}");
        let layers = c.num_hidden_layers;
        let unfused = stats(&fused(&c, "none"));
        let s = stats(&fused(&c, "default"));
        // Outside the layers: embedding, the final norm fused with the LM head, argmax.
        assert_eq!(
            s.launches,
            per_layer * layers + 3,
            "{name}:\n{}",
            s.to_text()
        );
        assert!(unfused.launches > s.launches);
        let get = |op: &str| s.ops.get(op).copied().unwrap_or(0);
        for op in ["matmul", "rms_norm", "add", "silu", "mul"] {
            assert_eq!(get(op), 0, "{name}: {op} left unfused\n{}", s.to_text());
        }
        assert_eq!(get("attention"), layers, "{name}");
        assert_eq!(get("fused_matmul_add"), layers, "{name}");
        assert_eq!(get("fused_gated_mlp"), layers, "{name}");
        match family {
            // q/k norm and rope in one node.
            Family::Qwen3 => {
                assert_eq!(get("fused_qk_norm_rope"), layers);
                assert_eq!(get("fused_rms_norm_matmul"), 2 * layers + 1);
            }
            // The q/k/v biases ride in the packed q/k/v GEMV's epilogue.
            Family::Qwen2 => {
                assert_eq!(get("fused_rms_norm_matmul_add"), layers);
                assert_eq!(get("fused_rms_norm_matmul"), layers + 1);
                assert_eq!(get("rope"), 2 * layers);
            }
            Family::Llama => {
                assert_eq!(get("fused_rms_norm_matmul"), 2 * layers + 1);
                assert_eq!(get("rope"), 2 * layers);
            }
        }
    }
}

#[test]
fn llama3_rope_scaling_reaches_the_fused_graph() {
    let mut c = config("llama-3.2-1b");
    c.num_hidden_layers = 1;
    let printed = text::print(&fused(&c, "default"));
    assert_eq!(
        printed
            .matches(
                "theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0, \
                 high_freq_factor = 4e0, original_max_position_embeddings = 8192"
            )
            .count(),
        2,
        "{printed}"
    );
}

/// One fused layer of the real config `name`, printed.
fn one_layer(name: &str) -> String {
    let mut c = config(name);
    c.num_hidden_layers = 1;
    text::print(&fused(&c, "default"))
}

#[test]
fn fused_layer_snapshot_qwen3() {
    insta::assert_snapshot!("qwen3_0_6b_one_fused_layer", one_layer("qwen3-0.6b"));
}

#[test]
fn fused_layer_snapshot_qwen2() {
    insta::assert_snapshot!("qwen2_5_0_5b_one_fused_layer", one_layer("qwen2.5-0.5b"));
}

#[test]
fn fused_layer_snapshot_llama() {
    insta::assert_snapshot!("llama_3_2_1b_one_fused_layer", one_layer("llama-3.2-1b"));
}

//! `config.json` of every decoder family: the real configs in `models/`, family detection from
//! `architectures` / `model_type`, per-family defaults and tensor schemas, rope scaling in both
//! config generations, and every refused config naming the file and the field.

use std::path::{Path, PathBuf};

use braid_ir::RopeScaling;
use braid_runtime::model::{Family, LoadError, Qwen3Config, TensorRole};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn real(name: &str) -> Qwen3Config {
    let path = repo_root().join("models").join(name).join("config.json");
    Qwen3Config::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn real_json(name: &str) -> Value {
    let path = repo_root().join("models").join(name).join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = real_json(name);
    edit(v.as_object_mut().expect("object"));
    v
}

fn parse(v: &Value) -> Result<Qwen3Config, LoadError> {
    Qwen3Config::from_json_str(&v.to_string(), Path::new("/models/x/config.json"))
}

/// Parses `v`, expects an error whose message names the file and every needle.
fn expect_error(v: &Value, needles: &[&str]) -> LoadError {
    let err = parse(v).expect_err("config should be rejected");
    let msg = err.to_string();
    assert!(msg.contains("/models/x/config.json"), "no file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
    err
}

/// The shape of tensor `name` in `c`'s schema.
fn shape(c: &Qwen3Config, name: &str) -> Option<Vec<usize>> {
    c.tensor_specs()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.shape)
}

#[test]
fn llama_3_2_1b_config_loads() {
    let c = real("llama-3.2-1b");
    assert_eq!(c.family, Family::Llama);
    assert_eq!(c.model_type, "llama");
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (2048, 8192, 16)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (32, 8));
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab_size, 128_256);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.rope_theta, 5e5);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![128_001]);
    assert!(!c.qkv_bias() && !c.o_bias());
    // 9 tensors per layer (no q/k norm, no biases) + embedding + final norm; tied head.
    assert_eq!(c.tensor_specs().len(), 16 * 9 + 2);
    assert_eq!(shape(&c, "model.layers.0.self_attn.q_norm.weight"), None);
    assert_eq!(
        shape(&c, "model.layers.0.self_attn.k_proj.weight"),
        Some(vec![512, 2048])
    );
}

#[test]
fn smollm2_config_derives_head_dim() {
    let c = real("smollm2-135m");
    assert_eq!(c.family, Family::Llama);
    // No head_dim in the file: 576 / 9.
    assert_eq!(c.head_dim, 64);
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (9, 3));
    assert_eq!(c.rope_scaling, RopeScaling::Default);
    assert_eq!(c.rope_theta, 1e5);
    assert_eq!(c.max_position_embeddings, 8192);
    assert_eq!(c.eos_token_ids, vec![0]);
}

#[test]
fn qwen2_5_config_has_qkv_biases() {
    let c = real("qwen2.5-0.5b");
    assert_eq!(c.family, Family::Qwen2);
    assert_eq!((c.hidden_size, c.head_dim), (896, 64));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (14, 2));
    assert!(c.qkv_bias() && !c.o_bias());
    assert_eq!(
        shape(&c, "model.layers.3.self_attn.q_proj.bias"),
        Some(vec![896])
    );
    assert_eq!(
        shape(&c, "model.layers.3.self_attn.v_proj.bias"),
        Some(vec![128])
    );
    assert_eq!(shape(&c, "model.layers.3.self_attn.o_proj.bias"), None);
    // 9 + 3 biases per layer.
    assert_eq!(c.tensor_specs().len(), 24 * 12 + 2);
    let biases = c
        .tensor_specs()
        .iter()
        .filter(|s| s.role == TensorRole::Bias)
        .count();
    assert_eq!(biases, 24 * 3);
    // Qwen2 has no attention_bias switch: its q/k/v biases are unconditional, o_proj has none.
    let c = parse(&edited("qwen2.5-0.5b", |m| {
        m.insert("attention_bias".into(), json!(true));
    }))
    .expect("loads");
    assert!(c.qkv_bias() && !c.o_bias());
}

#[test]
fn attention_bias_adds_qkv_and_o_biases_to_llama_and_qwen3() {
    let c = parse(&edited("llama-3.2-1b", |m| {
        m.insert("attention_bias".into(), json!(true));
    }))
    .expect("loads");
    assert!(c.qkv_bias() && c.o_bias());
    assert_eq!(
        shape(&c, "model.layers.0.self_attn.o_proj.bias"),
        Some(vec![2048])
    );
    assert_eq!(
        shape(&c, "model.layers.0.self_attn.k_proj.bias"),
        Some(vec![512])
    );
    assert_eq!(c.tensor_specs().len(), 16 * 13 + 2);
    let mut q3 = Qwen3Config::tiny();
    q3.attention_bias = true;
    // 11 + 4 biases per layer; embedding, final norm and the untied lm_head.
    assert_eq!(q3.tensor_specs().len(), 2 * 15 + 3);
}

#[test]
fn transformers5_rope_parameters_with_llama3_load() {
    // As transformers 5 writes it (the committed tiny-llama fixture).
    let path = repo_root().join("tests/fixtures/tiny-llama/config.json");
    let c = Qwen3Config::from_file(&path).expect("fixture config");
    assert_eq!(c.family, Family::Llama);
    assert_eq!(c.rope_theta, 5e5);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32,
        }
    );
    let path = repo_root().join("tests/fixtures/tiny-qwen2/config.json");
    let c = Qwen3Config::from_file(&path).expect("fixture config");
    assert_eq!((c.family, c.head_dim), (Family::Qwen2, 32));
    assert!(!c.tie_word_embeddings);
}

#[test]
fn the_family_follows_architectures_then_model_type() {
    // No architectures: model_type decides.
    let c = parse(&edited("llama-3.2-1b", |m| {
        m.remove("architectures");
    }))
    .expect("model_type alone");
    assert_eq!(c.family, Family::Llama);
    // architectures and model_type disagree.
    let v = edited("llama-3.2-1b", |m| {
        m.insert("model_type".into(), json!("qwen2"));
    });
    let err = expect_error(
        &v,
        &["model_type", "\"qwen2\"", "\"llama\"", "LlamaForCausalLM"],
    );
    assert!(matches!(err, LoadError::InvalidField { .. }));
    // Not a list of strings.
    let v = edited("llama-3.2-1b", |m| {
        m.insert("architectures".into(), json!("LlamaForCausalLM"));
    });
    expect_error(&v, &["`architectures`", "list"]);
}

#[test]
fn unknown_architectures_list_the_supported_ones() {
    let supported = ["Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"];
    let v = edited("llama-3.2-1b", |m| {
        m.insert("architectures".into(), json!(["MistralForCausalLM"]));
        m.insert("model_type".into(), json!("mistral"));
    });
    let mut needles = vec!["`architectures`", "MistralForCausalLM", "\"mistral\""];
    needles.extend(supported);
    let err = expect_error(&v, &needles);
    assert!(matches!(err, LoadError::Unsupported { .. }));
    // Without architectures the model_type is named.
    let v = edited("llama-3.2-1b", |m| {
        m.remove("architectures");
        m.insert("model_type".into(), json!("gemma2"));
    });
    let mut needles = vec!["`model_type`", "\"gemma2\""];
    needles.extend(supported);
    expect_error(&v, &needles);
}

#[test]
fn llama_defaults_follow_llama_config() {
    let c = parse(&edited("smollm2-135m", |m| {
        m.remove("num_key_value_heads");
        m.remove("max_position_embeddings");
        m.remove("tie_word_embeddings");
    }))
    .expect("loads with defaults");
    assert_eq!(c.num_key_value_heads, 9);
    assert_eq!(c.max_position_embeddings, 2048);
    assert!(!c.tie_word_embeddings);
    // Without head_dim, hidden_size must split evenly over the heads.
    let v = edited("smollm2-135m", |m| {
        m.insert("num_attention_heads".into(), json!(10));
        m.insert("num_key_value_heads".into(), json!(5));
    });
    expect_error(&v, &["num_attention_heads", "divisor of hidden_size = 576"]);
}

#[test]
fn llama3_scaling_is_read_from_either_generation() {
    let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    // 4.x: `type` instead of `rope_type`.
    let old = parse(&edited("llama-3.2-1b", |m| {
        m.insert(
            "rope_scaling".into(),
            json!({"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        );
    }))
    .expect("4.x type key");
    // 5.x: everything in rope_parameters.
    let new = parse(&edited("llama-3.2-1b", |m| {
        m.remove("rope_scaling");
        m.remove("rope_theta");
        let mut p = scaling.clone();
        p["rope_theta"] = json!(500000.0);
        m.insert("rope_parameters".into(), p);
    }))
    .expect("5.x rope_parameters");
    // Both, agreeing.
    let both = parse(&edited("llama-3.2-1b", |m| {
        m.insert("rope_scaling".into(), scaling.clone());
        let mut p = scaling.clone();
        p["rope_theta"] = json!(500000.0);
        m.insert("rope_parameters".into(), p);
    }))
    .expect("both forms");
    assert_eq!(old.rope_scaling, new.rope_scaling);
    assert_eq!(both.rope_scaling, new.rope_scaling);
    assert_eq!(new.rope_theta, 5e5);
    // original_max_position_embeddings defaults to max_position_embeddings (transformers'
    // standardize_rope_params).
    let c = parse(&edited("llama-3.2-1b", |m| {
        m.insert(
            "rope_scaling".into(),
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
        );
        m.insert("max_position_embeddings".into(), json!(4096));
    }))
    .expect("defaulted original_max_position_embeddings");
    assert!(matches!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            original_max_position_embeddings: 4096,
            ..
        }
    ));
}

#[test]
fn bad_rope_scaling_is_refused() {
    let with = |scaling: Value| {
        edited("llama-3.2-1b", |m| {
            m.insert("rope_scaling".into(), scaling);
        })
    };
    let err = expect_error(
        &with(json!({"rope_type": "yarn", "factor": 4.0})),
        &["rope_scaling.rope_type", "yarn", "rope scaling"],
    );
    assert!(matches!(err, LoadError::Unsupported { .. }));
    let err = expect_error(
        &with(json!({"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0})),
        &["rope_scaling.factor", "missing"],
    );
    assert!(matches!(err, LoadError::MissingField { .. }));
    expect_error(
        &with(
            json!({"rope_type": "llama3", "factor": "32", "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0}),
        ),
        &["rope_scaling.factor", "a number"],
    );
    expect_error(
        &with(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                     "high_freq_factor": 4.0}),
        ),
        &["`rope_scaling`", "high_freq_factor"],
    );
    // rope_scaling and rope_parameters that disagree.
    let v = edited("llama-3.2-1b", |m| {
        m.insert(
            "rope_parameters".into(),
            json!({"rope_theta": 500000.0, "rope_type": "default"}),
        );
    });
    expect_error(&v, &["`rope_scaling`", "rope_parameters"]);
    // Rope over part of each head.
    let v = edited("llama-3.2-1b", |m| {
        m.insert("partial_rotary_factor".into(), json!(0.5));
    });
    expect_error(&v, &["`partial_rotary_factor`", "unsupported"]);
}

#[test]
fn unsupported_layer_features_are_refused() {
    let v = edited("llama-3.2-1b", |m| {
        m.insert("mlp_bias".into(), json!(true));
    });
    let err = expect_error(&v, &["`mlp_bias`", "bias", "unsupported"]);
    assert!(matches!(err, LoadError::Unsupported { .. }));
    // Sliding-window layers, when the window is in use.
    let v = edited("qwen2.5-0.5b", |m| {
        m.insert("use_sliding_window".into(), json!(true));
    });
    expect_error(&v, &["`use_sliding_window`", "sliding-window"]);
    let v = edited("qwen2.5-0.5b", |m| {
        m.insert(
            "layer_types".into(),
            json!(["full_attention", "linear_attention"]),
        );
    });
    expect_error(&v, &["`layer_types[1]`", "linear_attention"]);
    // transformers ignores `sliding_attention` entries while use_sliding_window is off.
    parse(&edited("qwen2.5-0.5b", |m| {
        m.insert(
            "layer_types".into(),
            json!(["full_attention", "sliding_attention"]),
        );
    }))
    .expect("sliding layers without a window");
}

#[test]
fn configs_of_every_family_round_trip_through_json() {
    for name in ["llama-3.2-1b", "smollm2-135m", "qwen2.5-0.5b", "qwen3-0.6b"] {
        let c = real(name);
        let back = Qwen3Config::from_json_str(&c.to_json_string(), Path::new("<round trip>"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, c, "{name}");
    }
    let mut c = real("llama-3.2-1b");
    c.attention_bias = true;
    let back = Qwen3Config::from_json_str(&c.to_json_string(), Path::new("<round trip>"))
        .expect("attention_bias round trip");
    assert_eq!(back, c);
}

//! `config.json` loading: the real Qwen3-0.6B file, both rope_theta forms, and every rejected
//! config, each error naming the file and the field.

use std::path::{Path, PathBuf};

use braid_runtime::model::{LoadError, Qwen3Config, TensorRole};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `value` as `config.json` in a fresh temp dir and loads it.
fn load(value: &Value) -> (tempfile::TempDir, PathBuf, Result<Qwen3Config, LoadError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json")).expect("write");
    let result = Qwen3Config::from_file(&path);
    (dir, path, result)
}

/// Qwen3-0.6B's config as transformers 4.51 writes it.
fn base() -> Value {
    let text = std::fs::read_to_string(repo_root().join("models/qwen3-0.6b/config.json"))
        .expect("models/qwen3-0.6b/config.json");
    serde_json::from_str(&text).expect("valid json")
}

fn edited(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = base();
    edit(v.as_object_mut().expect("object"));
    v
}

/// Loads `value`, expects an error, and checks its message names the file and every `needles`.
fn expect_error(value: &Value, needles: &[&str]) -> LoadError {
    let (_dir, path, result) = load(value);
    let err = result.expect_err("config should be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
    err
}

#[test]
fn real_qwen3_config_loads() {
    let c = Qwen3Config::from_file(&repo_root().join("models/qwen3-0.6b/config.json"))
        .expect("real config loads");
    assert_eq!(c.model_type, "qwen3");
    assert_eq!(c.hidden_size, 1024);
    assert_eq!(c.intermediate_size, 3072);
    assert_eq!(c.num_hidden_layers, 28);
    assert_eq!(c.num_attention_heads, 16);
    assert_eq!(c.num_key_value_heads, 8);
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.vocab_size, 151_936);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.max_position_embeddings, 40_960);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.bos_token_id, Some(151_643));
    assert_eq!(c.eos_token_ids, vec![151_645]);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    // 1 embedding + 28 * 11 per layer + final norm, no lm_head (tied).
    assert_eq!(c.tensor_specs().len(), 1 + 28 * 11 + 1);
    assert_eq!(c.lm_head_name(), "model.embed_tokens.weight");
}

#[test]
fn transformers5_fixture_with_rope_parameters_loads() {
    let path = repo_root().join("tests/fixtures/tiny-qwen3/config.json");
    let c = Qwen3Config::from_file(&path).expect("transformers 5.x config loads");
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    assert_eq!((c.hidden_size, c.head_dim, c.vocab_size), (128, 32, 512));
}

#[test]
fn rope_parameters_form_is_read() {
    let v = edited(|m| {
        m.remove("rope_theta");
        m.insert(
            "rope_parameters".into(),
            json!({"rope_theta": 5e5, "rope_type": "default"}),
        );
        m.remove("torch_dtype");
        m.insert("dtype".into(), json!("float16"));
    });
    let (_d, _p, c) = load(&v);
    let c = c.expect("rope_parameters form loads");
    assert_eq!(c.rope_theta, 5e5);
    assert_eq!(c.torch_dtype.as_deref(), Some("float16"));
}

#[test]
fn rope_scaling_is_rejected() {
    let v = edited(|m| {
        m.remove("rope_theta");
        m.insert(
            "rope_parameters".into(),
            json!({"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}),
        );
    });
    let err = expect_error(&v, &["rope_parameters.rope_type", "yarn", "rope scaling"]);
    assert!(matches!(err, LoadError::Unsupported { .. }));

    let v = edited(|m| {
        m.insert(
            "rope_scaling".into(),
            json!({"type": "linear", "factor": 2.0}),
        );
    });
    expect_error(&v, &["rope_scaling.type", "linear", "rope scaling"]);
}

#[test]
fn conflicting_rope_theta_is_rejected() {
    let v = edited(|m| {
        m.insert("rope_parameters".into(), json!({"rope_theta": 1e4}));
    });
    expect_error(&v, &["rope_parameters.rope_theta", "1000000"]);
}

#[test]
fn missing_rope_theta_is_rejected() {
    let v = edited(|m| {
        m.remove("rope_theta");
    });
    let err = expect_error(&v, &["missing field `rope_theta`", "rope_parameters"]);
    assert!(matches!(err, LoadError::MissingField { .. }));
}

#[test]
fn missing_config_file_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    let err = Qwen3Config::from_file(&path).expect_err("no file");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn malformed_json_reports_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        "{\n  \"hidden_size\": 1024,\n  \"vocab_size\": ,\n}\n",
    )
    .expect("write");
    let err = Qwen3Config::from_file(&path).expect_err("malformed");
    let msg = err.to_string();
    match &err {
        LoadError::Json { line, column, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*column, 17);
        }
        other => panic!("expected a JSON error, got {other}"),
    }
    assert!(
        msg.starts_with(&format!("{}:3:17: malformed JSON", path.display())),
        "{msg}"
    );
    // The location is said once, not repeated by serde_json's own suffix.
    assert!(!msg.contains("at line"), "{msg}");
}

#[test]
fn unknown_model_type_is_rejected() {
    let v = edited(|m| {
        m.insert("model_type".into(), json!("llama"));
    });
    let err = expect_error(&v, &["model_type", "\"llama\"", "\"qwen3\""]);
    assert!(matches!(err, LoadError::InvalidField { .. }));
}

#[test]
fn missing_fields_are_named() {
    for field in [
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
    ] {
        let v = edited(|m| {
            m.remove(field);
        });
        let err = expect_error(&v, &[&format!("missing field `{field}`")]);
        assert!(matches!(err, LoadError::MissingField { .. }), "{field}");
    }
}

#[test]
fn wrong_json_type_names_the_field() {
    let v = edited(|m| {
        m.insert("hidden_size".into(), json!("1024"));
    });
    expect_error(&v, &["`hidden_size`", "\"1024\"", "integer"]);
    let v = edited(|m| {
        m.insert("eos_token_id".into(), json!([151645, "x"]));
    });
    expect_error(&v, &["`eos_token_id`", "\"x\"", "token id"]);
}

#[test]
fn heads_that_do_not_divide_are_rejected() {
    let v = edited(|m| {
        m.insert("num_key_value_heads".into(), json!(5));
    });
    expect_error(
        &v,
        &[
            "num_key_value_heads",
            "5",
            "divisor of num_attention_heads = 16",
        ],
    );
}

#[test]
fn zero_sizes_and_odd_head_dim_are_rejected() {
    for field in [
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "head_dim",
        "intermediate_size",
    ] {
        let v = edited(|m| {
            m.insert(field.into(), json!(0));
        });
        expect_error(&v, &[&format!("`{field}` = 0"), "positive integer"]);
    }
    let v = edited(|m| {
        m.insert("head_dim".into(), json!(127));
    });
    expect_error(&v, &["`head_dim` = 127", "even"]);
    let v = edited(|m| {
        m.insert("rms_norm_eps".into(), json!(-1.0));
    });
    expect_error(&v, &["`rms_norm_eps`", "positive"]);
}

#[test]
fn unsupported_features_are_rejected() {
    let cases: [(&str, Value, &str); 3] = [
        ("mlp_bias", json!(true), "bias"),
        ("use_sliding_window", json!(true), "sliding-window"),
        ("hidden_act", json!("gelu"), "silu"),
    ];
    for (field, value, why) in cases {
        let v = edited(|m| {
            m.insert(field.into(), value);
        });
        let err = expect_error(&v, &[&format!("`{field}`"), why, "unsupported"]);
        assert!(matches!(err, LoadError::Unsupported { .. }));
    }
}

#[test]
fn defaults_follow_transformers() {
    let v = edited(|m| {
        m.remove("head_dim");
        m.remove("tie_word_embeddings");
        m.remove("max_position_embeddings");
        m.remove("rms_norm_eps");
        m.insert("eos_token_id".into(), json!([151645, 151643]));
    });
    let (_d, _p, c) = load(&v);
    let c = c.expect("loads with defaults");
    // Qwen3Config's default head_dim is 128, not hidden_size / heads (Qwen2 and Llama derive it:
    // tests/loader_families.rs).
    assert_eq!(c.head_dim, 128);
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.max_position_embeddings, 32_768);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.eos_token_ids, vec![151_645, 151_643]);
    assert_eq!(c.lm_head_name(), "lm_head.weight");

    // Qwen3Config's default num_key_value_heads is 32, which 16 query heads cannot share.
    let v = edited(|m| {
        m.remove("num_key_value_heads");
    });
    expect_error(
        &v,
        &[
            "num_key_value_heads",
            "32",
            "divisor of num_attention_heads = 16",
        ],
    );
}

#[test]
fn non_object_root_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, "[1, 2]").expect("write");
    let msg = Qwen3Config::from_file(&path)
        .expect_err("array")
        .to_string();
    assert!(
        msg.contains("JSON object") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
}

#[test]
fn tiny_config_is_valid_and_round_trips() {
    let tiny = Qwen3Config::tiny();
    tiny.validate(Path::new("<tiny>")).expect("tiny is valid");
    assert_eq!(tiny.num_hidden_layers, 2);
    assert_eq!((tiny.num_attention_heads, tiny.num_key_value_heads), (4, 2));
    assert_eq!(
        (tiny.hidden_size, tiny.head_dim, tiny.intermediate_size),
        (64, 16, 128)
    );
    // Every id of the real tokenizer (added tokens end at 151668) has an embedding row.
    assert!(tiny.vocab_size > 151_668);
    assert!(
        !tiny.tie_word_embeddings,
        "a tied random lm_head only repeats the prompt"
    );
    assert_eq!(tiny.eos_token_ids, vec![151_645]);
    let back = Qwen3Config::from_json_str(&tiny.to_json_string(), Path::new("<tiny>"))
        .expect("serialized tiny config reads back");
    assert_eq!(back, tiny);
}

#[test]
fn tensor_specs_have_qwen3_shapes() {
    let mut c = Qwen3Config::tiny();
    c.tie_word_embeddings = false;
    let specs = c.tensor_specs();
    let shape = |name: &str| {
        specs
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.shape.clone())
            .unwrap_or_else(|| panic!("no spec for {name}"))
    };
    assert_eq!(shape("model.embed_tokens.weight"), vec![151_936, 64]);
    assert_eq!(
        shape("model.layers.1.self_attn.q_proj.weight"),
        vec![64, 64]
    );
    assert_eq!(
        shape("model.layers.1.self_attn.k_proj.weight"),
        vec![32, 64]
    );
    assert_eq!(
        shape("model.layers.0.self_attn.o_proj.weight"),
        vec![64, 64]
    );
    assert_eq!(shape("model.layers.0.self_attn.q_norm.weight"), vec![16]);
    assert_eq!(shape("model.layers.0.mlp.gate_proj.weight"), vec![128, 64]);
    assert_eq!(shape("model.layers.0.mlp.down_proj.weight"), vec![64, 128]);
    assert_eq!(shape("lm_head.weight"), vec![151_936, 64]);
    assert_eq!(specs.len(), 1 + 2 * 11 + 2);
    let norms = specs.iter().filter(|s| s.role == TensorRole::Norm).count();
    assert_eq!(norms, 2 * 4 + 1);
}

#[test]
fn sizes_whose_tensors_would_not_fit_are_rejected() {
    // Each size alone is within bounds; the q projection (heads x head_dim) is not.
    let v = edited(|m| {
        m.insert("num_attention_heads".into(), json!(1 << 20));
        m.insert("num_key_value_heads".into(), json!(1 << 20));
        m.insert("head_dim".into(), json!(1 << 20));
    });
    expect_error(&v, &["`num_attention_heads`", "q projection"]);
    // Every tensor fits, but the whole model is more than 2^52 parameters.
    let v = edited(|m| {
        m.insert("hidden_size".into(), json!(1 << 24));
        m.insert("intermediate_size".into(), json!(1 << 24));
        m.insert("num_hidden_layers".into(), json!(4096));
    });
    expect_error(&v, &["`num_hidden_layers`", "2^52 parameters"]);
}

#[test]
fn an_eos_id_past_the_vocabulary_is_a_warning() {
    let v = edited(|m| {
        m.insert("vocab_size".into(), json!(1000));
        m.insert("eos_token_id".into(), json!([5, 151645]));
    });
    let (_dir, _path, result) = load(&v);
    let c = result.expect("loads");
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("eos_token_id 151645") && w[0].contains("vocab_size = 1000"));
}

//! Safetensors checkpoints: single file, sharded with an index, tied and untied lm_head, the
//! in-memory random weights, and every rejected checkpoint, each error naming the file, the
//! tensor and the expectation. Fixtures are written with safetensors' own `serialize`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use braid_ir::{DType, WeightSource};
use braid_runtime::model::{Checkpoint, LoadError, Qwen3Config, TensorRole};
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView as StView;
use safetensors::Dtype;
use serde_json::json;

/// A small config with a small vocabulary so fixtures stay a few kB.
fn small_config(tied: bool) -> Qwen3Config {
    Qwen3Config {
        vocab_size: 96,
        tie_word_embeddings: tied,
        ..Qwen3Config::tiny()
    }
}

/// One tensor to write: dtype, shape, little-endian bytes.
#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Random non-zero bf16 tensors for every tensor `config` needs.
fn tensors_for(config: &Qwen3Config, seed: u64) -> BTreeMap<String, Raw> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    config
        .tensor_specs()
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let bytes = (0..n)
                .flat_map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)).to_le_bytes())
                .collect();
            let raw = Raw {
                dtype: Dtype::BF16,
                shape: s.shape,
                bytes,
            };
            (s.name, raw)
        })
        .collect()
}

/// Writes `tensors` as one safetensors file.
fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let views: Vec<(String, StView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let view = StView::new(t.dtype, t.shape.clone(), &t.bytes).expect("valid view");
            (name.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, bytes).expect("write safetensors");
}

/// A temp dir holding `model.safetensors` with `tensors`.
fn single_file_dir(tensors: &BTreeMap<String, Raw>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("model.safetensors");
    write_safetensors(&file, tensors);
    (dir, file)
}

/// Asserts `err`'s message contains every needle (the file path among them).
fn assert_names(err: &LoadError, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
}

#[test]
fn single_file_checkpoint_opens_and_validates() {
    let config = small_config(true);
    let tensors = tensors_for(&config, 1);
    let (dir, file) = single_file_dir(&tensors);
    let ck = Checkpoint::open(dir.path()).expect("opens");
    ck.validate(&config).expect("valid");
    assert_eq!(ck.len(), tensors.len());
    assert_eq!(ck.files().collect::<Vec<_>>(), vec![file.as_path()]);
    let names: Vec<&str> = ck.tensor_names().collect();
    let expected: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
    let total: usize = tensors.values().map(|t| t.bytes.len()).sum();
    assert_eq!(ck.total_bytes(), total);
    // Views are the bytes that were written.
    for (name, t) in &tensors {
        let v = ck.get(name).expect("present");
        assert_eq!(v.dtype, DType::BF16);
        assert_eq!(v.shape, t.shape.as_slice());
        assert_eq!(v.bytes, t.bytes.as_slice(), "{name}");
    }
    assert!(ck.get("no.such.tensor").is_none());
    let err = ck.tensor("no.such.tensor").expect_err("absent");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor `no.such.tensor` is missing",
            dir.path().display()
        )
    );
    // Opening the file itself works too.
    let ck2 = Checkpoint::open(&file).expect("opens the file");
    assert_eq!(ck2.len(), ck.len());
}

#[test]
fn real_transformers_fixtures_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    for name in ["tiny-qwen3", "tiny-qwen3-untied"] {
        let dir = root.join(name);
        let config = Qwen3Config::from_file(&dir.join("config.json")).expect("config");
        let ck = Checkpoint::open(&dir).expect("checkpoint");
        ck.validate(&config)
            .expect("transformers-written checkpoint validates");
        assert_eq!(
            ck.get("lm_head.weight").is_some(),
            !config.tie_word_embeddings
        );
        let norm = ck
            .get("model.norm.weight")
            .expect("norm")
            .to_f32()
            .expect("f32");
        assert!(norm.iter().all(|x| x.is_finite()) && norm.iter().any(|x| *x != 0.0));
    }
}

#[test]
fn tied_and_untied_lm_head() {
    // Untied config: lm_head.weight is required.
    let untied = small_config(false);
    let mut tensors = tensors_for(&untied, 2);
    let (dir, file) = single_file_dir(&tensors);
    Checkpoint::open(dir.path())
        .expect("opens")
        .validate(&untied)
        .expect("untied checkpoint validates");

    tensors.remove("lm_head.weight");
    write_safetensors(&file, &tensors);
    let ck = Checkpoint::open(dir.path()).expect("opens");
    let err = ck.validate(&untied).expect_err("lm_head missing");
    assert!(matches!(err, LoadError::MissingTensor { .. }));
    assert_names(
        &err,
        &[
            &dir.path().display().to_string(),
            "`lm_head.weight`",
            "[96, 64]",
        ],
    );
    // The same file is a valid tied checkpoint.
    ck.validate(&small_config(true))
        .expect("tied validates without lm_head");
    assert_eq!(
        small_config(true).lm_head_name(),
        "model.embed_tokens.weight"
    );
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let config = small_config(true);
    let mut tensors = tensors_for(&config, 3);
    tensors.remove("model.layers.1.self_attn.k_norm.weight");
    let (dir, _file) = single_file_dir(&tensors);
    let err = Checkpoint::open(dir.path())
        .expect("opens")
        .validate(&config)
        .expect_err("missing tensor");
    assert!(matches!(err, LoadError::MissingTensor { .. }));
    assert_names(
        &err,
        &[
            &dir.path().display().to_string(),
            "`model.layers.1.self_attn.k_norm.weight`",
            "missing",
            "[16]",
        ],
    );
}

#[test]
fn wrong_shape_is_named_with_expected_and_found() {
    let config = small_config(true);
    let mut tensors = tensors_for(&config, 4);
    // k_proj written as if there were 4 KV heads instead of 2.
    let name = "model.layers.0.self_attn.k_proj.weight";
    let t = tensors.get_mut(name).expect("k_proj");
    t.shape = vec![64, 64];
    t.bytes = vec![0x3f; 64 * 64 * 2];
    let (dir, file) = single_file_dir(&tensors);
    let err = Checkpoint::open(dir.path())
        .expect("opens")
        .validate(&config)
        .expect_err("wrong shape");
    assert!(matches!(err, LoadError::TensorShape { .. }));
    assert_names(
        &err,
        &[
            &file.display().to_string(),
            &format!("`{name}`"),
            "shape [64, 64]",
            "expected [32, 64]",
        ],
    );
}

#[test]
fn non_float_dtypes_are_rejected() {
    let config = small_config(true);
    for (dtype, width, shown) in [(Dtype::I32, 4, "I32"), (Dtype::F64, 8, "F64")] {
        let mut tensors = tensors_for(&config, 5);
        let name = "model.norm.weight";
        let t = tensors.get_mut(name).expect("norm");
        t.dtype = dtype;
        t.bytes = (0..64 * width).map(|i| i as u8).collect();
        let (dir, file) = single_file_dir(&tensors);
        let ck = Checkpoint::open(dir.path()).expect("opens: other dtypes are legal safetensors");
        let err = ck.validate(&config).expect_err("non-float dtype");
        assert!(matches!(err, LoadError::TensorDtype { .. }));
        assert_names(
            &err,
            &[
                &file.display().to_string(),
                "`model.norm.weight`",
                shown,
                "BF16, F16 or F32",
            ],
        );
        // F64 has no IR dtype: the view is absent and `tensor` says why.
        if dtype == Dtype::F64 {
            assert!(ck.get(name).is_none());
            let err = ck.tensor(name).expect_err("no IR dtype");
            assert_names(
                &err,
                &[&file.display().to_string(), "`model.norm.weight`", "F64"],
            );
        } else {
            assert_eq!(ck.get(name).expect("i32 view").dtype, DType::I32);
        }
    }
}

#[test]
fn f16_and_f32_weights_are_accepted() {
    let config = small_config(true);
    let mut tensors = tensors_for(&config, 6);
    let q = tensors
        .get_mut("model.layers.0.self_attn.q_proj.weight")
        .expect("q");
    q.dtype = Dtype::F32;
    q.bytes = (0..64 * 64)
        .flat_map(|i| (i as f32 * 1e-3).to_le_bytes())
        .collect();
    let n = tensors.get_mut("model.norm.weight").expect("norm");
    n.dtype = Dtype::F16;
    n.bytes = (0..64)
        .flat_map(|i| half::f16::from_f32(1.0 + i as f32 / 64.0).to_le_bytes())
        .collect();
    let (dir, _file) = single_file_dir(&tensors);
    let ck = Checkpoint::open(dir.path()).expect("opens");
    ck.validate(&config).expect("f16/f32 are float dtypes");
    let q = ck.get("model.layers.0.self_attn.q_proj.weight").expect("q");
    assert_eq!(q.dtype, DType::F32);
    assert_eq!(q.to_f32().expect("f32")[5], 5.0f32 * 1e-3);
    let n = ck.get("model.norm.weight").expect("norm");
    assert_eq!(n.dtype, DType::F16);
    assert_eq!(n.to_f32().expect("f32")[32], 1.5);
}

#[test]
fn truncated_and_corrupt_files_name_the_file() {
    let config = small_config(true);
    let tensors = tensors_for(&config, 7);
    let (dir, file) = single_file_dir(&tensors);
    let full = std::fs::read(&file).expect("read");

    // Cut in the middle of the tensor data.
    std::fs::write(&file, &full[..full.len() - 100]).expect("truncate");
    let err = Checkpoint::open(dir.path()).expect_err("truncated");
    assert!(matches!(err, LoadError::Safetensors { .. }));
    assert_names(
        &err,
        &[
            &file.display().to_string(),
            "not a valid safetensors file",
            "truncated or corrupt",
            "model.norm.weight",
        ],
    );

    // Cut inside the header.
    std::fs::write(&file, &full[..20]).expect("truncate header");
    let err = Checkpoint::open(dir.path()).expect_err("truncated header");
    assert_names(
        &err,
        &[&file.display().to_string(), "invalid header length"],
    );

    // Empty file, and garbage.
    for bytes in [&b""[..], &b"not a safetensors file at all"[..]] {
        std::fs::write(&file, bytes).expect("write");
        let err = Checkpoint::open(dir.path()).expect_err("corrupt");
        assert!(matches!(err, LoadError::Safetensors { .. }), "{err}");
        assert_names(&err, &[&file.display().to_string(), "safetensors"]);
    }
}

#[test]
fn directory_without_weights_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Checkpoint::open(dir.path()).expect_err("empty dir");
    assert!(matches!(err, LoadError::NoCheckpoint { .. }));
    assert_names(
        &err,
        &[
            &dir.path().display().to_string(),
            "model.safetensors",
            "model.safetensors.index.json",
        ],
    );
    let missing = dir.path().join("nope.safetensors");
    let err = Checkpoint::open(&missing).expect_err("no file");
    assert!(matches!(err, LoadError::Io { .. }));
    assert_names(&err, &[&missing.display().to_string()]);
}

/// Splits `tensors` over two shards (layer 1 and lm_head in the second) and writes the index.
fn write_sharded(dir: &Path, tensors: &BTreeMap<String, Raw>) -> PathBuf {
    let (second, first): (BTreeMap<_, _>, BTreeMap<_, _>) = tensors
        .clone()
        .into_iter()
        .partition(|(n, _)| n.starts_with("model.layers.1.") || n == "lm_head.weight");
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_safetensors(&dir.join(names[0]), &first);
    write_safetensors(&dir.join(names[1]), &second);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.iter().zip([&first, &second]) {
        for name in part.keys() {
            weight_map.insert(name.clone(), json!(shard));
        }
    }
    let total: usize = tensors.values().map(|t| t.bytes.len()).sum();
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(&path, serde_json::to_string_pretty(&index).expect("json")).expect("write");
    path
}

#[test]
fn sharded_checkpoint_with_index() {
    let config = small_config(false);
    let tensors = tensors_for(&config, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let index = write_sharded(dir.path(), &tensors);

    let ck = Checkpoint::open(dir.path()).expect("sharded opens");
    ck.validate(&config).expect("sharded validates");
    assert_eq!(ck.len(), tensors.len());
    assert_eq!(ck.files().count(), 2);
    assert_eq!(ck.origin(), index.as_path());
    let shard2 = dir.path().join("model-00002-of-00002.safetensors");
    assert_eq!(ck.file_of("lm_head.weight"), Some(shard2.as_path()));
    for (name, t) in &tensors {
        assert_eq!(
            ck.get(name).expect("present").bytes,
            t.bytes.as_slice(),
            "{name}"
        );
    }
    // The index file itself opens the same checkpoint.
    assert_eq!(
        Checkpoint::open(&index).expect("index opens").len(),
        tensors.len()
    );

    // A wrong shape in a shard names the shard, not the index.
    let mut bad = tensors.clone();
    let up = bad
        .get_mut("model.layers.1.mlp.up_proj.weight")
        .expect("up");
    up.shape = vec![64, 128];
    write_safetensors(
        &shard2,
        &bad.clone()
            .into_iter()
            .filter(|(n, _)| n.starts_with("model.layers.1.") || n == "lm_head.weight")
            .collect(),
    );
    let err = Checkpoint::open(dir.path())
        .expect("opens")
        .validate(&config)
        .expect_err("wrong shape in shard 2");
    assert_names(
        &err,
        &[
            &shard2.display().to_string(),
            "`model.layers.1.mlp.up_proj.weight`",
            "[64, 128]",
            "expected [128, 64]",
        ],
    );
}

#[test]
fn broken_indexes_are_rejected() {
    let config = small_config(true);
    let tensors = tensors_for(&config, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let index = write_sharded(dir.path(), &tensors);
    let index_text = std::fs::read_to_string(&index).expect("read");
    let mut value: serde_json::Value = serde_json::from_str(&index_text).expect("json");

    // A tensor the index places in a shard that does not hold it.
    value["weight_map"]["model.norm.weight"] = json!("model-00002-of-00002.safetensors");
    std::fs::write(&index, value.to_string()).expect("write");
    let err = Checkpoint::open(dir.path()).expect_err("misplaced tensor");
    assert!(matches!(err, LoadError::Index { .. }));
    assert_names(
        &err,
        &[
            &index.display().to_string(),
            "`model.norm.weight`",
            "model-00002-of-00002.safetensors",
            "model-00001-of-00002.safetensors",
        ],
    );

    // A shard that does not exist.
    value["weight_map"]["model.norm.weight"] = json!("model-00003-of-00002.safetensors");
    std::fs::write(&index, value.to_string()).expect("write");
    let err = Checkpoint::open(dir.path()).expect_err("missing shard");
    assert!(matches!(err, LoadError::Io { .. }));
    assert_names(&err, &["model-00003-of-00002.safetensors"]);

    // No weight_map.
    std::fs::write(&index, r#"{"metadata": {}}"#).expect("write");
    let err = Checkpoint::open(dir.path()).expect_err("no weight_map");
    assert_names(
        &err,
        &[&index.display().to_string(), "missing field `weight_map`"],
    );

    // Malformed JSON.
    std::fs::write(&index, "{\"weight_map\": {").expect("write");
    let err = Checkpoint::open(dir.path()).expect_err("malformed index");
    assert!(matches!(err, LoadError::Json { .. }));
    assert_names(&err, &[&index.display().to_string(), "malformed JSON"]);
}

#[test]
fn tiny_random_weights_are_deterministic_and_plausible() {
    let config = Qwen3Config::tiny();
    let a = Checkpoint::random(&config, 7);
    a.validate(&config)
        .expect("tiny weights fit the tiny config");
    assert_eq!(a.len(), config.tensor_specs().len());
    let b = Checkpoint::random(&config, 7);
    let c = Checkpoint::random(&config, 8);
    let q = "model.layers.1.self_attn.q_proj.weight";
    assert_eq!(a.get(q).expect("q").bytes, b.get(q).expect("q").bytes);
    assert_ne!(a.get(q).expect("q").bytes, c.get(q).expect("q").bytes);
    // Tensors draw from per-name streams: distinct tensors of one shape differ.
    let k0 = a.get("model.layers.0.self_attn.k_proj.weight").expect("k0");
    let v0 = a.get("model.layers.0.self_attn.v_proj.weight").expect("v0");
    assert_ne!(k0.bytes, v0.bytes);

    // Pooled per role (a single 16-element norm gain is too small a sample for its std).
    let mut pooled: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for spec in config.tensor_specs() {
        let view = a.get(&spec.name).expect("present");
        assert_eq!(view.dtype, DType::BF16);
        assert_eq!(view.shape, spec.shape.as_slice());
        let x = view.to_f32().expect("bf16 decodes");
        assert!(x.iter().all(|v| v.is_finite()), "{}", spec.name);
        assert!(x.iter().any(|v| *v != x[0]), "{} is constant", spec.name);
        let slot = usize::from(spec.role == TensorRole::Norm);
        pooled[slot].extend(x.iter().map(|v| f64::from(*v)));
    }
    for (x, (want_mean, want_std)) in pooled.iter().zip([(0.0, 0.02), (1.0, 0.1)]) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (mean - want_mean).abs() < want_std * 0.3,
            "mean {mean}, want {want_mean}"
        );
        assert!(
            (std / want_std - 1.0).abs() < 0.1,
            "std {std}, want {want_std}"
        );
    }
    // Untied (the built-in tiny model): lm_head is generated too; tied: it is not.
    assert!(a.get("lm_head.weight").is_some());
    let tied = Qwen3Config {
        tie_word_embeddings: true,
        vocab_size: 96,
        ..Qwen3Config::tiny()
    };
    let t = Checkpoint::random(&tied, 1);
    t.validate(&tied).expect("tied tiny validates");
    assert!(t.get("lm_head.weight").is_none());
    assert!(a.origin().display().to_string().contains("seed 7"));
    assert!(a.total_bytes() > 151_936 * 64 * 2);
}

#[test]
fn loaded_model_parts_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Checkpoint>();
    assert_send_sync::<braid_runtime::model::Tokenizer>();
    assert_send_sync::<braid_runtime::model::ChatTemplate>();
    assert_send_sync::<LoadError>();
}

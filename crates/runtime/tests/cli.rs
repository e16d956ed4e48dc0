//! The `braid` binary end to end: the README's first command, graph/opt, and clear errors.

use std::process::Command;

fn braid(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .output()
        .expect("run braid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn generate_streams_text_from_the_tiny_model() {
    let (ok, out, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--prompt",
        "Hello",
        "--max-tokens",
        "6",
    ]);
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty(), "no text generated");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let args = [
        "generate",
        "--device",
        "cpu",
        "--max-tokens",
        "8",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ];
    let (ok, a, err) = braid(&args);
    assert!(ok, "{err}");
    let (_, b, _) = braid(&args);
    assert_eq!(a, b);
}

#[test]
fn graph_stats_lists_ops_then_totals() {
    let (ok, out, err) = braid(&["graph", "--model", "tiny", "--stats"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let n = lines.len();
    assert!(lines[n - 2].starts_with("nodes "), "{out}");
    assert!(lines[n - 1].starts_with("launches "), "{out}");
    let ops: Vec<&str> = lines[..n - 2]
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = ops.clone();
    sorted.sort();
    assert_eq!(ops, sorted, "op lines must be sorted");
    assert!(ops.contains(&"fused_rms_norm_matmul"), "{out}");
}

#[test]
fn opt_reads_what_graph_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.ir");
    let (ok, ir, err) = braid(&["graph", "--model", "tiny", "--passes", "none"]);
    assert!(ok, "{err}");
    std::fs::write(&path, &ir).unwrap();
    let (ok, same, err) = braid(&["opt", path.to_str().unwrap(), "--passes", "none"]);
    assert!(ok, "{err}");
    assert_eq!(same, ir);
    let (ok, fused, err) = braid(&["opt", path.to_str().unwrap(), "--passes", "default"]);
    assert!(ok, "{err}");
    let (_, expected, _) = braid(&["graph", "--model", "tiny"]);
    assert_eq!(
        fused, expected,
        "opt --passes default must equal graph --passes default"
    );
}

#[test]
fn opt_reports_line_and_column_of_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ir");
    std::fs::write(
        &path,
        "%0 = input \"x\" : f32[1, 4]\n%1 = silu(%7) : f32[1, 4]\nreturn %1\n",
    )
    .unwrap();
    let (ok, _, err) = braid(&["opt", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.ir:2:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // a GPU machine: covered by the GPU tests
    }
    let (ok, _, err) = braid(&["generate", "--device", "cuda", "--max-tokens", "2"]);
    assert!(!ok);
    assert!(err.contains("--device cuda"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn overlong_request_is_refused_up_front() {
    let (ok, _, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--max-context",
        "16",
        "--max-tokens",
        "20",
    ]);
    assert!(!ok);
    assert!(err.contains("--max-context"), "{err}");
}

#[test]
fn unknown_pass_lists_the_valid_names() {
    let (ok, _, err) = braid(&["graph", "--passes", "no-such-pass"]);
    assert!(!ok);
    assert!(err.contains("no-such-pass"), "{err}");
}

#[test]
fn missing_model_directory_is_named() {
    let (ok, _, err) = braid(&["graph", "--model", "/nonexistent/qwen3"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/qwen3"), "{err}");
}

#[test]
fn check_without_a_reference_or_positions_is_an_error() {
    let (ok, _, err) = braid(&["check", "--device", "cpu"]);
    assert!(!ok);
    assert!(err.contains("reference.safetensors"), "{err}");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tiny-qwen3"
    );
    let (ok, _, err) = braid(&[
        "check",
        "--model",
        fixture,
        "--device",
        "cpu",
        "--positions",
        "0",
    ]);
    assert!(!ok);
    assert!(err.contains("no positions"), "{err}");
    let (ok, out, err) = braid(&[
        "check",
        "--model",
        fixture,
        "--device",
        "cpu",
        "--positions",
        "4",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("check passed"), "{out}");
}

#[test]
fn prompt_alone_longer_than_the_context_is_refused() {
    let prompt = "one two three four five six seven eight nine ten eleven twelve";
    let (ok, out, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--max-context",
        "8",
        "--max-tokens",
        "1",
        "--prompt",
        prompt,
    ]);
    assert!(!ok, "accepted: {out}");
    assert!(out.is_empty(), "generated before refusing: {out}");
    assert!(
        err.contains("--max-context") && err.contains("holds 8"),
        "{err}"
    );
}

#[test]
fn check_fails_on_weights_that_disagree_with_the_reference() {
    let fixture = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tiny-qwen3"
    ));
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "reference.safetensors"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    // Flip the sign of every bf16 of the first tensor (the embedding, tied to the lm_head).
    let mut bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let (header, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let (a, b) = meta.info("model.embed_tokens.weight").unwrap().data_offsets;
    let data = 8 + header;
    for i in (data + a + 1..data + b).step_by(2) {
        bytes[i] ^= 0x80;
    }
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let model = dir.path().to_str().unwrap();
    let (ok, out, err) = braid(&["check", "--model", model, "--device", "cpu"]);
    assert!(!ok, "a wrong checkpoint passed:\n{out}");
    assert!(err.contains("check FAILED"), "{out}\n{err}");
    assert!(
        out.contains("braid (cpu)") && out.contains("rel_l2"),
        "{out}"
    );
}

#[test]
fn check_passes_on_the_llama_and_qwen2_fixtures() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let fixture = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let (ok, out, err) = braid(&["check", "--model", &fixture, "--device", "cpu"]);
        assert!(ok, "{name}: {out}\n{err}");
        assert!(out.contains("positions 16"), "{name}: {out}");
        assert!(out.contains("check passed"), "{name}: {out}");
    }
}

#[test]
fn an_unknown_architecture_is_refused_with_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
        "vocab_size": 32, "rope_theta": 1e4
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let (ok, _, err) = braid(&["graph", "--model", dir.path().to_str().unwrap()]);
    assert!(!ok);
    for needle in [
        "config.json",
        "MistralForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen2ForCausalLM",
        "LlamaForCausalLM",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn graph_and_plan_print_the_prefill_step() {
    let (ok, out, err) = braid(&["graph", "--prefill", "4", "--passes", "none"]);
    assert!(ok, "{err}");
    assert!(out.contains("input \"token\" : i32[4]"), "{out}");
    assert!(out.contains(": f32[4, 4, 16]"), "{out}");
    // The LM head reads the last row: a split along axis 0.
    assert!(
        out.contains("split(") && out.contains("{axis = 0, sizes = [3, 1]}"),
        "{out}"
    );
    let (ok, out, err) = braid(&["graph", "--prefill", "4", "--all-logits"]);
    assert!(ok, "{err}");
    assert!(out.contains(": f32[4, 151936]"), "{out}");
    let (ok, out, err) = braid(&["plan", "--prefill", "64"]);
    assert!(ok, "{err}");
    assert!(out.contains("cublas_gemm_bf16 64x128x64"), "{out}");
    assert!(out.contains("attention_prefill_mma_bf16_d16_g2"), "{out}");
    let (ok, _, err) = braid(&["graph", "--prefill", "0"]);
    assert!(!ok && err.contains("--prefill"), "{err}");
}

#[test]
fn generate_prefills_batched_or_token_by_token_alike() {
    let run = |mode: &str| {
        let (ok, out, err) = braid(&[
            "generate",
            "--device",
            "cpu",
            "--prompt",
            "one two three four five six seven eight nine ten",
            "--max-tokens",
            "6",
            "--prefill",
            mode,
            "--prefill-chunk",
            "4",
        ]);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(run("batched"), run("token"));
}

#[test]
fn an_empty_prompt_is_a_clear_error_in_both_prefill_modes() {
    for mode in ["batched", "token"] {
        let (ok, out, err) = braid(&[
            "generate",
            "--device",
            "cpu",
            "--prompt",
            "",
            "--max-tokens",
            "2",
            "--prefill",
            mode,
        ]);
        assert!(!ok, "accepted: {out}");
        assert!(err.contains("the prompt is empty"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

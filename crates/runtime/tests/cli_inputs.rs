//! The `braid` binary against bad and unusual input: every failure is one clear `error:` line that
//! names what was wrong, nothing panics, aborts or hangs, and output piped into a reader that stops
//! early ends quietly.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs braid with `args` and `stdin`; returns (success, stdout, stderr).
fn braid_in(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run braid");
    let mut input = child.stdin.take().expect("stdin");
    // braid may exit before reading stdin (an error): a closed pipe here is fine.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().expect("wait for braid");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "braid {args:?} panicked:\n{stderr}"
    );
    assert!(
        out.status.code().is_some(),
        "braid {args:?} was killed by a signal:\n{stderr}"
    );
    (out.status.success(), stdout, stderr)
}

fn braid(args: &[&str]) -> (bool, String, String) {
    braid_in(args, "")
}

/// Asserts braid fails with an `error:` message containing every one of `needles`.
fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let (ok, out, err) = braid(args);
    assert!(!ok, "braid {args:?} succeeded:\n{out}\n{err}");
    for n in needles {
        assert!(err.contains(n), "braid {args:?}: {n:?} not in:\n{err}");
    }
    err
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/tiny-qwen3")
}

fn qwen3_config_dir() -> String {
    repo()
        .join("models/qwen3-0.6b")
        .to_str()
        .unwrap()
        .to_string()
}

/// A copy of the tiny-qwen3 fixture (config, weights, reference) in a temporary directory.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "reference.safetensors"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// The fixture's safetensors header (as JSON) and data bytes.
fn fixture_tensors() -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

/// Writes a safetensors file from header text and data.
fn write_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_closed_stdout_ends_braid_quietly() {
    // `braid graph --format dot | head -1`, and a large text graph read for one line.
    let config = qwen3_config_dir();
    for format in ["dot", "text"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
            .args([
                "graph", "--model", &config, "--passes", "none", "--format", format,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run braid");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty());
        // The reader is dropped here: braid's next write meets a closed pipe.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "{format}: {err}");
        assert!(
            err.trim().is_empty(),
            "a closed pipe is not an error: {err}"
        );
    }
    // Text streaming from generate into a reader that takes one byte.
    let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "generate",
            "--device",
            "cpu",
            "--max-tokens",
            "200",
            "Hello",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run braid");
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut child.stdout.take().unwrap(), &mut byte).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn max_context_is_bounded_by_the_model_and_by_memory() {
    fails_with(
        &[
            "generate",
            "--device",
            "cpu",
            "--max-context",
            "99999999999",
            "--max-tokens",
            "2",
        ],
        &["--max-context 99999999999"],
    );
    fails_with(
        &[
            "generate",
            "--device",
            "cpu",
            "--max-context",
            "18446744073709551615",
            "--max-tokens",
            "2",
        ],
        &["--max-context 18446744073709551615"],
    );
    // Past the tiny model's max_position_embeddings (40960): refused unless asked for.
    fails_with(
        &[
            "generate",
            "--device",
            "cpu",
            "--max-context",
            "50000",
            "--max-tokens",
            "2",
        ],
        &["max_position_embeddings = 40960", "--allow-long-context"],
    );
    let (ok, out, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--max-context",
        "50000",
        "--allow-long-context",
        "--max-tokens",
        "1",
    ]);
    assert!(ok && !out.is_empty(), "{err}");
    // Two billion rows: a terabyte of KV cache, refused before allocating, with both figures.
    let err = fails_with(
        &[
            "generate",
            "--device",
            "cpu",
            "--max-context",
            "2000000000",
            "--allow-long-context",
            "--max-tokens",
            "2",
        ],
        &["KV cache needs 1.02 TB", "1024000000000 bytes", "available"],
    );
    assert!(err.lines().count() == 1, "{err}");
    fails_with(
        &[
            "generate",
            "--device",
            "cpu",
            "--max-tokens",
            "99999999999999",
        ],
        &["--max-tokens 99999999999999", "--max-context"],
    );
    fails_with(
        &["graph", "--max-context", "0"],
        &["--max-context", ">= 1, got 0"],
    );
}

#[test]
fn out_of_range_numbers_name_the_option_and_the_range() {
    for (opt, value, expected) in [
        ("--temperature", "-1", ">= 0, got -1"),
        ("--temperature", "nan", ">= 0"),
        ("--top-k", "-3", ">= 0, got -3"),
        ("--top-p", "0", "(0, 1], got 0"),
        ("--top-p", "1.5", "(0, 1], got 1.5"),
        ("--seed", "-1", "unsigned"),
        ("--seed", "18446744073709551616", "0..=18446744073709551615"),
        ("--max-tokens", "-5", ">= 1, got -5"),
        ("--max-tokens", "0", ">= 1, got 0"),
        ("--max-context", "-1", ">= 1, got -1"),
        ("--max-tokens", "ten", "whole number"),
    ] {
        fails_with(
            &["generate", "--device", "cpu", opt, value],
            &[opt, expected],
        );
    }
    fails_with(&["bench", "--repeat", "0"], &["--repeat", ">= 1"]);
    fails_with(
        &["bench", "--prompt-len", "128,-2"],
        &["--prompt-len", "got -2"],
    );
    fails_with(&["check", "--positions", "-4"], &["--positions", "got -4"]);
}

#[test]
fn prompts_come_from_stdin_a_file_or_a_positional_argument() {
    let base = ["generate", "--device", "cpu", "--max-tokens", "3"];
    let run = |extra: &[&str], stdin: &str| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (ok, out, err) = braid_in(&args, stdin);
        assert!(ok, "{extra:?}: {err}");
        out
    };
    let want = run(&["--prompt", "Why is the sky blue?"], "");
    assert_eq!(run(&["Why is the sky blue?"], ""), want);
    assert_eq!(run(&["--prompt", "-"], "Why is the sky blue?"), want);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt.txt");
    std::fs::write(&file, "Why is the sky blue?").unwrap();
    assert_eq!(run(&["--prompt-file", s(&file)], ""), want);
    assert_eq!(run(&["--prompt-file", "-"], "Why is the sky blue?"), want);
    assert_ne!(run(&["--prompt", "-"], "something else"), want);
    // Two sources at once, a missing file, a non-UTF-8 file, an empty prompt.
    fails_with(
        &["generate", "--prompt", "a", "b"],
        &["cannot be used with"],
    );
    fails_with(
        &["generate", "--prompt-file", "/nonexistent/prompt.txt"],
        &["/nonexistent/prompt.txt"],
    );
    std::fs::write(&file, [0xff, 0xfe, 0x00]).unwrap();
    fails_with(
        &["generate", "--device", "cpu", "--prompt-file", s(&file)],
        &["prompt.txt", "not UTF-8"],
    );
    let (ok, _, err) = braid_in(&["generate", "--device", "cpu", "--prompt", "-"], "");
    assert!(!ok && err.contains("empty"), "{err}");
    // An endless source is read up to a bound, not until memory runs out.
    if Path::new("/dev/zero").exists() {
        fails_with(
            &["generate", "--prompt-file", "/dev/zero"],
            &["--prompt-file /dev/zero", "MiB"],
        );
        fails_with(&["opt", "/dev/zero"], &["/dev/zero", "MiB of IR text"]);
    }
}

#[test]
fn system_prompt_goes_through_the_chat_template() {
    fails_with(&["generate", "--system", "Be brief."], &["--chat"]);
    let (ok, out, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--chat",
        "--system",
        "Be brief.",
        "--max-tokens",
        "2",
        "Hi",
    ]);
    assert!(ok && !out.is_empty(), "{err}");
    let (_, plain, _) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--chat",
        "--max-tokens",
        "2",
        "Hi",
    ]);
    let (_, json_sys, _) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--chat",
        "--system",
        "Be brief.",
        "--max-tokens",
        "1",
        "--json",
        "Hi",
    ]);
    let (_, json_plain, _) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--chat",
        "--max-tokens",
        "1",
        "--json",
        "Hi",
    ]);
    let tokens = |j: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        v["prompt_tokens"].as_u64().unwrap()
    };
    assert!(
        tokens(&json_sys) > tokens(&json_plain) + 3,
        "the system message is not in the prompt ({plain})"
    );
}

#[test]
fn deep_configs_fuse_in_bounded_time() {
    // 512 layers of Qwen3-0.6B's shape: one e-graph for the whole step took minutes.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo().join("models/qwen3-0.6b/config.json")).unwrap();
    let deep = config.replace("\"num_hidden_layers\": 28", "\"num_hidden_layers\": 512");
    assert_ne!(deep, config);
    std::fs::write(dir.path().join("config.json"), deep).unwrap();
    let start = std::time::Instant::now();
    let (ok, out, err) = braid(&["graph", "--model", s(dir.path()), "--stats"]);
    assert!(ok, "{err}");
    assert!(
        out.ends_with(&format!("launches {}\n", 6 * 512 + 3)),
        "{out}"
    );
    let secs = start.elapsed().as_secs_f64();
    assert!(secs < 300.0, "512 layers took {secs:.0} s");
}

#[test]
fn a_broken_tokenizer_or_template_fails_only_what_needs_it() {
    let dir = fixture_copy();
    let d = s(dir.path());
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": "{{ messages[0].content }}{{ nothing.here }}"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let (ok, _, err) = braid(&["graph", "--model", d, "--stats"]);
    assert!(ok, "graph needs neither: {err}");
    let (ok, _, err) = braid(&["check", "--model", d, "--device", "cpu", "--positions", "2"]);
    assert!(ok, "check needs neither: {err}");
    fails_with(
        &["generate", "--model", d, "--device", "cpu"],
        &["tokenizer.json"],
    );
    // A good tokenizer: plain generate works, --chat names the template's undefined variable.
    std::fs::copy(
        repo().join("models/qwen3-0.6b/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    // The real tokenizer's ids run past the fixture's vocabulary (512): a clear error, not a crash.
    fails_with(
        &[
            "generate", "--model", d, "--device", "cpu", "--prompt", "Hello",
        ],
        &["vocab_size is 512", "disagree"],
    );
    fails_with(
        &[
            "generate", "--model", d, "--device", "cpu", "--chat", "--prompt", "!",
        ],
        &["tokenizer_config.json", "`nothing.here`"],
    );
}

#[test]
fn a_missing_file_is_named_with_its_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_with(&["graph", "--model", s(dir.path())], &["config.json"]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    fails_with(
        &["graph", "--model", "/nonexistent/qwen3"],
        &["/nonexistent/qwen3", "no such directory"],
    );
    fails_with(&["graph", "--model", ""], &["--model"]);
    let err = fails_with(&["opt", "/nonexistent/step.ir"], &["/nonexistent/step.ir"]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn unusual_checkpoints_are_refused_or_reported_by_name() {
    let (header, data) = fixture_tensors();
    let dir = fixture_copy();
    let st = dir.path().join("model.safetensors");
    let d = s(dir.path());
    // Two tensors whose bytes overlap: both are named.
    let mut by_start: Vec<(u64, String)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap(), k.clone()))
        .collect();
    by_start.sort();
    let (first, second) = (by_start[3].1.clone(), by_start[4].1.clone());
    let mut h = header.clone();
    let offsets = h[&second]["data_offsets"].clone();
    let (a, b) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    h[&second]["data_offsets"] = serde_json::json!([a - 2, b - 2]);
    write_safetensors(&st, &serde_json::Value::Object(h).to_string(), &data);
    fails_with(
        &["graph", "--model", d],
        &[&format!("`{first}`"), &format!("`{second}`"), "overlap"],
    );
    // A name listed twice in the header.
    let text = serde_json::Value::Object(header.clone()).to_string();
    let dup = format!(
        "{}, \"{second}\": {}}}",
        &text[..text.len() - 1],
        header[&second]
    );
    write_safetensors(&st, &dup, &data);
    fails_with(&["graph", "--model", d], &[&format!("`{second}`"), "twice"]);
    // A NaN in a weight: named with its element, before any step runs.
    let target = "model.layers.1.mlp.down_proj.weight";
    let start = header[target]["data_offsets"][0].as_u64().unwrap() as usize;
    let mut nan = data.clone();
    nan[start + 6..start + 8].copy_from_slice(&0x7fc0u16.to_le_bytes());
    write_safetensors(&st, &text, &nan);
    fails_with(
        &["check", "--model", d, "--device", "cpu"],
        &[&format!("`{target}`"), "element 3 is NaN"],
    );
    // A tensor Qwen3 does not use: a warning naming it, and the run goes on.
    let mut h = header.clone();
    let end = data.len() as u64;
    h.insert(
        "vision.proj.weight".into(),
        serde_json::json!({"dtype": "BF16", "shape": [2], "data_offsets": [end, end + 4]}),
    );
    let mut extra = data.clone();
    extra.extend_from_slice(&[0; 4]);
    write_safetensors(&st, &serde_json::Value::Object(h).to_string(), &extra);
    let (ok, _, err) = braid(&["check", "--model", d, "--device", "cpu", "--positions", "2"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("`vision.proj.weight`"),
        "{err}"
    );
    // The fixture's eos id (151645) is past its 512-token vocabulary: said, not refused.
    assert!(err.contains("eos_token_id 151645"), "{err}");
}

#[test]
fn check_honours_max_context_and_prints_json() {
    let f = fixture();
    let f = s(&f);
    fails_with(
        &[
            "check",
            "--model",
            f,
            "--device",
            "cpu",
            "--max-context",
            "4",
        ],
        &["--max-context 4", "--positions 4"],
    );
    let (ok, out, err) = braid(&[
        "check",
        "--model",
        f,
        "--device",
        "cpu",
        "--max-context",
        "4",
        "--positions",
        "4",
        "--json",
        "--verbose",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["passed"], true);
    assert_eq!(v["braid"]["positions"], 4);
    assert_eq!(v["batched_prefill"]["positions"], 4);
    // Both paths' positions: the batched prefill's, then the decode steps'.
    let rows = v["per_position"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["path"], "prefill");
    assert_eq!(rows[7]["path"], "decode");
    // --max-context 4 leaves no room past the 4 positions for the continuation check.
    assert!(v.get("continuation").is_none(), "{v}");
    assert!(v["transformers_bf16"]["rel_l2"].as_f64().unwrap() > 0.0);
}

#[test]
fn generate_json_has_text_tokens_timings_and_stop_reason() {
    let (ok, out, err) = braid(&[
        "generate",
        "--device",
        "cpu",
        "--max-tokens",
        "3",
        "--json",
        "Hello",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(v["generated_tokens"], 3);
    assert_eq!(v["stop_reason"], "max_tokens");
    assert!(v["text"].is_string());
    assert!(v["timings"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(v["timings"]["decode_tok_per_s"].is_number());
}

#[test]
fn bench_sweeps_lists_and_repeats() {
    let args = [
        "bench",
        "--device",
        "cpu",
        "--prompt-len",
        "2,4",
        "--gen",
        "2",
        "--repeat",
        "2",
    ];
    let (ok, md, err) = braid(&args);
    assert!(ok, "{err}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 4, "header, rule, two rows:\n{md}");
    assert!(rows[2].contains(" ± "), "{md}");
    let mut csv_args = args.to_vec();
    csv_args.extend(["--format", "csv"]);
    let (ok, csv, err) = braid(&csv_args);
    assert!(ok, "{err}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("model,device,"), "{csv}");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (ok, json, err) = braid(&json_args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["prompt_len"], 4);
    assert_eq!(rows[0]["repeat"], 2);
    assert!(rows[0]["tok_per_s"]["std"].is_number());
    fails_with(
        &[
            "bench",
            "--device",
            "cpu",
            "--prompt-len",
            "1000",
            "--gen",
            "100",
            "--max-context",
            "512",
        ],
        &["1100 positions", "--max-context 512"],
    );
}

#[test]
fn options_that_cannot_combine_are_refused() {
    fails_with(
        &["graph", "--stats", "--format", "dot"],
        &["--stats", "--format"],
    );
    fails_with(
        &["bench", "--json", "--format", "csv"],
        &["--json", "--format"],
    );
}

#[test]
fn logging_is_validated_quiet_about_egg_and_plain_when_piped() {
    fails_with(
        &["--log", "verbose", "graph"],
        &["--log verbose", "`verbose`"],
    );
    fails_with(&["--log", "info=loud", "graph"], &["--log info=loud"]);
    let (ok, _, err) = braid(&["--log", "info", "graph", "--stats"]);
    assert!(ok, "{err}");
    assert!(err.contains("pass done"), "{err}");
    assert!(
        !err.contains("egg::"),
        "egg's internals are off unless asked for:\n{err}"
    );
    assert!(!err.contains('\u{1b}'), "no ANSI colours on a pipe:\n{err}");
    let (ok, _, err) = braid(&["--log", "warn,egg=info", "graph", "--stats"]);
    assert!(ok, "{err}");
    assert!(err.contains("egg::"), "egg's logs when named:\n{err}");
}

#[test]
fn device_auto_says_when_it_falls_back_to_the_cpu() {
    if Path::new("/dev/nvidia0").exists() {
        return; // a GPU machine: auto picks the GPU
    }
    let (ok, _, err) = braid(&["generate", "--max-tokens", "1"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("--device auto") && err.contains("CPU"),
        "{err}"
    );
    let err = fails_with(&["profile"], &["needs an NVIDIA GPU"]);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn help_says_what_the_defaults_and_needs_are() {
    let (ok, help, _) = braid(&["check", "--help"]);
    assert!(ok);
    let model_line = help
        .lines()
        .skip_while(|l| !l.contains("--model"))
        .take(3)
        .collect::<String>();
    assert!(!model_line.contains("default: tiny"), "{help}");
    let (_, help, _) = braid(&["profile", "--help"]);
    assert!(help.contains("GPU"), "{help}");
    let (_, help, _) = braid(&["generate", "--help"]);
    for opt in [
        "--prompt-file",
        "--system",
        "--json",
        "[PROMPT]",
        "--allow-long-context",
    ] {
        assert!(help.contains(opt), "{opt} missing:\n{help}");
    }
}

#[test]
fn progress_and_the_model_summary_show_only_when_asked_or_on_a_terminal() {
    let (ok, _, err) = braid(&["graph", "--stats"]);
    assert!(ok);
    assert!(
        !err.contains("parameters"),
        "piped stderr stays quiet:\n{err}"
    );
    let (ok, _, err) = braid(&[
        "--progress",
        "always",
        "generate",
        "--device",
        "cpu",
        "--max-tokens",
        "1",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        err.matches("model tiny (Qwen3, 2 layers").count(),
        1,
        "the summary once:\n{err}"
    );
    assert!(err.contains("bf16") && err.contains("on cpu"), "{err}");
}

#[test]
fn odd_ir_text_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.ir");
    std::fs::write(&path, [0xff_u8, 0xfe, 0x41]).unwrap();
    fails_with(&["opt", s(&path)], &["odd.ir", "not UTF-8"]);
    // Shapes far past any memory: printed and fused without computing a byte of them.
    std::fs::write(
        &path,
        "%0 = input \"x\" : f32[99999999999, 99999999999]\n%1 = silu(%0) : f32[99999999999, 99999999999]\nreturn %1\n",
    )
    .unwrap();
    let _ = braid(&["opt", s(&path)]);
    std::fs::write(&path, "").unwrap();
    let _ = braid(&["opt", s(&path), "--stats"]);
    let (ok, _, err) = braid_in(&["opt", "-"], "%0 = silu(%0) : f32[1]\nreturn %0\n");
    assert!(!ok && err.contains("<stdin>"), "{err}");
}

#[test]
fn pass_lists_and_references_are_checked_before_any_work() {
    fails_with(
        &["graph", "--passes", "nope"],
        &["--passes", "`nope`", "fuse"],
    );
    let many = vec!["dce"; 65].join(",");
    fails_with(&["graph", "--passes", &many], &["65 passes", "at most 64"]);
    fails_with(
        &["check", "--reference", "/nonexistent/reference.safetensors"],
        &["/nonexistent/reference.safetensors", "no such file"],
    );
    if Path::new("/dev/zero").exists() {
        fails_with(
            &["check", "--reference", "/dev/zero"],
            &["/dev/zero", "not a regular file"],
        );
    }
}

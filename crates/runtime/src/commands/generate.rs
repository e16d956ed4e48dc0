//! `braid generate`: prompt -> streamed text (or one JSON object with `--json`).

use std::cell::Cell;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::{DeviceArg, GenerateArgs};
use crate::engine::{check_context, generate as run_generation, EngineError, GenerateOptions};
use crate::load::LoadedModel;
use crate::model::ChatMessage;
use crate::pipeline::{open_backend, open_gpu, BackendRequest, Device};
use crate::sampling::SamplingParams;
use crate::ui;

/// The prompt when none is given.
pub const DEFAULT_PROMPT: &str = "Hello";

/// The longest prompt read from standard input or a file: far more text than any context holds, and
/// a bound on what `--prompt-file /dev/zero` reads.
pub const MAX_PROMPT_BYTES: u64 = 16 << 20;

/// Reads at most [`MAX_PROMPT_BYTES`] of `reader` as UTF-8 text; `what` names the source.
fn read_prompt(reader: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_PROMPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what}: cannot read it"))?;
    if bytes.len() as u64 > MAX_PROMPT_BYTES {
        bail!(
            "{what}: more than {} MiB of prompt (no context holds that many tokens)",
            MAX_PROMPT_BYTES >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads the prompt from standard input (`--prompt -`, `--prompt-file -`).
fn read_stdin() -> Result<String> {
    if std::io::stdin().is_terminal() {
        ui::note("reading the prompt from standard input (end it with Ctrl-D)");
    }
    read_prompt(std::io::stdin().lock(), "the prompt on standard input")
}

/// Reads a prompt file.
fn read_prompt_file(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        return read_stdin();
    }
    let what = format!("--prompt-file {}", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("{what}: cannot open it"))?;
    read_prompt(file, &what)
}

/// The prompt text from the positional argument, `--prompt` (`-` = stdin) or `--prompt-file`.
pub fn prompt_text(args: &GenerateArgs) -> Result<String> {
    if let Some(path) = &args.prompt_file {
        return read_prompt_file(path);
    }
    match args.prompt.as_deref().or(args.prompt_text.as_deref()) {
        Some("-") => read_stdin(),
        Some(p) => Ok(p.to_string()),
        None => Ok(DEFAULT_PROMPT.to_string()),
    }
}

/// Resolves `--device auto` to the CPU or the GPU, saying on stderr when it falls back to the CPU.
pub fn resolve_device(device: DeviceArg) -> Device {
    match device {
        DeviceArg::Auto => match open_gpu() {
            Ok(_) => Device::Cuda,
            Err(e) => {
                let mut why = format!("{e:#}");
                // The driver loader lists every library name it tried; the gist is enough here.
                if let Some(a) = why.find(" (searched [") {
                    if let Some(len) = why[a..].find("])") {
                        why.replace_range(a..a + len + 2, "");
                    }
                }
                let why = why.lines().next().unwrap_or_default();
                ui::note(&format!(
                    "--device auto: no usable GPU ({why}); running on the CPU reference interpreter"
                ));
                Device::Cpu
            }
        },
        d => d.into(),
    }
}

/// Runs `braid generate`: tokens stream to stdout as they are decoded; `--stats` adds timings on
/// stderr; `--json` prints one object at the end instead.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    let text = prompt_text(args)?;
    let model = LoadedModel::load(&args.model.model)?;
    let max_context = args.model.build.max_context(&model.config)?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.as_str()));
        }
        messages.push(ChatMessage::user(text.as_str()));
        model.chat_tokens(&messages, args.no_think)?
    } else {
        model.text_tokens(&text)?
    };
    // Refuse an overlong request before paying for backend set-up.
    if args.max_tokens > max_context {
        bail!(
            "--max-tokens {} is more than the context holds ({max_context} positions); lower \
             --max-tokens or raise --max-context",
            args.max_tokens
        );
    }
    check_context(prompt.len(), args.max_tokens, max_context)?;
    let device = resolve_device(args.device);
    let request = BackendRequest {
        device,
        passes: &args.model.build.passes,
        max_context,
        exec: crate::pipeline::exec_options(!args.no_graph)?,
        prefill: args.prefill.mode(),
    };
    let tokenizer = model.tokenizer()?;
    ui::info(&format!("model {} on {}", model.summary(), device.name()));
    let mut backend = {
        let _task = ui::Task::spinner(&format!(
            "fusing the decode step and setting up the {} backend",
            if device == Device::Cuda {
                "CUDA"
            } else {
                "CPU"
            }
        ));
        let mut backend = open_backend(&model, &request)?;
        // Set-up (a batched prefill's chunk steps) is not part of the prefill time or the TTFT.
        backend.warm_prefill(prompt.len())?;
        backend
    };
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens: model.stop_tokens(),
        stop_strings: Vec::new(),
    };
    let mut decoder = tokenizer.stream(false);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut ids = Vec::new();
    let mut text_out = String::new();
    // A write error (a closed pipe) is kept here: the engine only carries a message.
    let write_error: Cell<Option<std::io::Error>> = Cell::new(None);
    let stream = !args.json;
    let result = run_generation(backend.as_mut(), &prompt, &opts, &mut |tok| {
        ids.push(tok);
        let piece = decoder
            .step(tok)
            .map_err(|e| EngineError::Output(e.to_string()))?
            .unwrap_or_default();
        if !stream {
            text_out.push_str(&piece);
            return Ok(());
        }
        out.write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| {
                let msg = e.to_string();
                write_error.set(Some(e));
                EngineError::Output(msg)
            })
    });
    if let Some(e) = write_error.take() {
        return Err(anyhow::Error::new(e).context("writing the generated text to stdout"));
    }
    let stats = result.map_err(|e| {
        let msg = e.to_string();
        let err = anyhow::Error::new(e);
        if msg.contains("NaN") {
            err.context(
                "the decode step produced NaN logits: every weight is finite, so an activation \
                 overflowed (are the checkpoint's values of a sane magnitude?)",
            )
        } else {
            err
        }
    })?;
    let tail = decoder.finish()?.unwrap_or_default();
    let stop_reason = if stats.stopped() {
        "stop_token"
    } else {
        "max_tokens"
    };
    if args.json {
        text_out.push_str(&tail);
        let obj = serde_json::json!({
            "model": model.source,
            "device": backend.name(),
            "prompt_tokens": stats.prompt_tokens,
            "text": text_out,
            "tokens": ids,
            "generated_tokens": stats.generated_tokens,
            "stop_reason": stop_reason,
            "timings": {
                "prefill_ms": stats.prefill.as_secs_f64() * 1e3,
                "ttft_ms": stats.ttft.as_secs_f64() * 1e3,
                "decode_ms": stats.decode.as_secs_f64() * 1e3,
                "decode_steps": stats.decode_steps,
                "decode_tok_per_s": stats.decode_tok_per_s(),
            },
        });
        writeln!(out, "{obj}").context("writing to stdout")?;
    } else {
        writeln!(out, "{tail}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    if args.stats {
        ui::eprint_line(&format!(
            "[{}] prompt {} tokens in {:.1} ms ({} prefill; first token after {:.1} ms); generated {} tokens in {:.1} ms ({:.1} tok/s){}",
            backend.name(),
            stats.prompt_tokens,
            stats.prefill.as_secs_f64() * 1e3,
            match args.prefill.mode() {
                crate::engine::PrefillMode::Token => "token-by-token",
                crate::engine::PrefillMode::Batched { .. } => "batched",
            },
            stats.ttft.as_secs_f64() * 1e3,
            stats.generated_tokens,
            stats.decode.as_secs_f64() * 1e3,
            stats.decode_tok_per_s(),
            if stats.stopped() {
                "; stopped at a stop token"
            } else {
                ""
            },
        ));
    }
    Ok(())
}

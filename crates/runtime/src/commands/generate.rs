//! `braid generate`: prompt -> streamed text.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::GenerateArgs;
use crate::engine::{check_context, generate as run_generation, EngineError, GenerateOptions};
use crate::load::LoadedModel;
use crate::pipeline::{self, open_backend, BackendRequest};
use crate::sampling::SamplingParams;

/// Runs `braid generate`: tokens stream to stdout as they are decoded; `--stats` adds timings on stderr.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    let model = LoadedModel::load(&args.model.model)?;
    let prompt = model.prompt_tokens(&args.prompt, args.chat, args.no_think)?;
    let request = BackendRequest {
        device: args.device.into(),
        passes: &args.model.passes,
        max_context: args.model.max_context,
        exec: pipeline::exec_options(!args.no_graph)?,
        prefill: args.prefill.mode(),
    };
    // Refuse an overlong request before paying for backend set-up.
    check_context(prompt.len(), args.max_tokens, args.model.max_context)?;
    let mut backend = open_backend(&model, &request)?;
    // Set-up (a batched prefill's chunk steps) is not part of the prefill time or the TTFT.
    backend.warm_prefill(prompt.len())?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens: model.stop_tokens(),
        stop_strings: Vec::new(),
    };
    let mut decoder = model.tokenizer()?.stream(false);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stats = run_generation(backend.as_mut(), &prompt, &opts, &mut |tok| {
        let piece = decoder
            .step(tok)
            .map_err(|e| EngineError::Output(e.to_string()))?;
        out.write_all(piece.unwrap_or_default().as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| EngineError::Output(e.to_string()))
    })?;
    let tail = decoder.finish()?.unwrap_or_default();
    writeln!(out, "{tail}").context("writing to stdout")?;
    if args.stats {
        eprintln!(
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
        );
    }
    Ok(())
}

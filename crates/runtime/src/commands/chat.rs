//! `braid chat`: a multi-turn conversation on stdin/stdout.
//!
//! Each line read is a user turn. The whole conversation is rendered with the model's chat
//! template every turn, and the engine [`Session`] reuses the KV-cache rows of the longest token
//! prefix it shares with the previous turn, so only the new turn is prefilled (for Qwen3 the
//! previous answer is prefilled again too: its template drops the thinking block of earlier
//! answers, so the cached answer tokens and the re-rendered ones differ). Answers stream to stdout;
//! prompts, notices and `--stats` go to stderr. `/reset` starts a new conversation (the system
//! message stays), `/exit` (or end of input) quits, Ctrl-C stops the current answer and keeps the
//! conversation; a second Ctrl-C before the next answer starts exits.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli::ChatArgs;
use crate::engine::{EngineError, GenerateOptions, Session, StopReason};
use crate::load::LoadedModel;
use crate::model::ChatMessage;
use crate::pipeline::{open_backend, BackendRequest};
use crate::sampling::SamplingParams;

/// Exit status after a second Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_ON_SECOND_INTERRUPT: i32 = 130;

/// Runs `braid chat` until `/exit` or the end of stdin.
///
/// Errors: bad sampling options; the model has no tokenizer or chat template; backend set-up or
/// generation failures; stdin or stdout failing.
pub fn chat(args: &ChatArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    let model = LoadedModel::load(&args.model.model)?;
    let tokenizer = model.tokenizer()?.clone();
    let template = model.chat_template()?.clone();
    let request = BackendRequest {
        device: args.device.into(),
        passes: &args.model.build.passes,
        max_context: args.model.build.max_context(&model.config)?,
        exec: crate::pipeline::exec_options(!args.no_graph)?,
        prefill: Default::default(),
    };
    let mut session = Session::new(open_backend(&model, &request)?);
    let max_context = session.backend().max_context();

    // Ctrl-C sets the flag (the answer being generated stops at its next token); a second one
    // while the flag is still set exits. The shutdown action must be registered first.
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        EXIT_ON_SECOND_INTERRUPT,
        interrupted.clone(),
    )
    .context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .context("installing the Ctrl-C handler")?;

    let start: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    let mut history = start.clone();
    eprintln!(
        "braid chat: {} on {} ({max_context}-token context). /reset starts over, /exit quits, \
         Ctrl-C stops an answer.",
        model.source,
        session.backend().name()
    );
    let stdout = std::io::stdout();
    let mut turn: u64 = 0;
    let mut lines = std::io::stdin().lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = start.clone();
                eprintln!("(new conversation)");
                continue;
            }
            cmd if cmd.starts_with('/') => {
                eprintln!("unknown command {cmd}: /reset starts over, /exit quits");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(input));
        let text = template.render(&history, true, args.no_think.then_some(false))?;
        let prompt = tokenizer.encode(&text, false)?;
        // The first token comes from the last prompt step and the last is never fed back.
        let room = (max_context + 1).saturating_sub(prompt.len());
        if room == 0 {
            history.pop();
            eprintln!(
                "the conversation is {} tokens and no longer fits the {max_context}-token context \
                 (--max-context); /reset starts over",
                prompt.len()
            );
            continue;
        }
        let opts = GenerateOptions {
            max_tokens: args.max_tokens.min(room),
            sampling: SamplingParams {
                seed: args.seed.wrapping_add(turn),
                ..sampling
            },
            stop_tokens: model.stop_tokens(),
            stop_strings: Vec::new(),
        };
        interrupted.store(false, Ordering::SeqCst);
        let mut answer = String::new();
        let mut out = stdout.lock();
        let mut decoder = tokenizer.stream(true);
        let g = session.generate(&prompt, &opts, &mut decoder, &mut |t| {
            answer.push_str(t.text);
            out.write_all(t.text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| EngineError::Output(format!("writing to stdout: {e}")))?;
            Ok(if interrupted.swap(false, Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        answer.push_str(&g.tail);
        writeln!(out, "{}", g.tail).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
        drop(out);
        if g.stats.stop_reason == StopReason::Cancelled {
            eprintln!("[stopped]");
        }
        history.push(ChatMessage::assistant(answer));
        turn += 1;
        if args.stats {
            let s = &g.stats;
            eprintln!(
                "[turn {turn}] prompt {} tokens ({} cached, {} prefilled in {:.1} ms); generated {} \
                 tokens, first after {:.1} ms, {:.1} tok/s; {}",
                s.prompt_tokens,
                s.cached_tokens,
                s.prompt_tokens - s.cached_tokens,
                s.prefill.as_secs_f64() * 1e3,
                s.generated_tokens,
                s.ttft.as_secs_f64() * 1e3,
                s.decode_tok_per_s(),
                s.stop_reason.as_str(),
            );
        }
    }
    Ok(())
}

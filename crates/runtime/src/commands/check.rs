//! `braid check`: braid's teacher-forced logits against transformers' reference.
//!
//! With batched prefill (the default) three checks run, each against the same bars:
//! 1. every position's logits from one batched prefill step over the whole reference prompt;
//! 2. every position's logits from decode steps, one token at a time (the decode path; its line
//!    is `braid (<backend>)`, as before batched prefill existed);
//! 3. greedy continuation: after a batched prefill and after a token-by-token prefill of the
//!    prompt, [`CONTINUATION`] greedy tokens each; they must agree, except that a near-tie (the
//!    two candidates' logits closer than [`NEAR_TIE`] of the logits' RMS, where bf16 rounding
//!    may pick either) may flip the rest of the sequence: that is reported, not failed.
//!
//! With `--prefill token` only the decode-step check runs.

use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::cli::CheckArgs;
use crate::commands::generate::resolve_device;
use crate::engine::{prefill_by_token, DecodeBackend, PrefillMode};
use crate::load::LoadedModel;
use crate::pipeline::{open_backend, BackendRequest};
use crate::reference::{compare, summarize, Reference, Summary};
use crate::ui;

/// The CPU reference interpreter computes in f32 like the oracle: its bar is absolute.
pub const CPU_MAX_REL_L2: f64 = 1e-4;
/// A bf16 backend may have at most this multiple of transformers-bf16's relative L2 error.
pub const BF16_REL_L2_FACTOR: f64 = 2.0;
/// ...and at most this many points less top-1 agreement than transformers-bf16.
pub const BF16_TOP1_SLACK_POINTS: f64 = 2.0;
/// Greedy tokens compared after batched and token-by-token prefill.
pub const CONTINUATION: usize = 64;
/// A divergence of the greedy continuations is a near-tie when the token-by-token run's logits of
/// the two tokens differ by at most this fraction of that step's logits' RMS.
pub const NEAR_TIE: f64 = 0.05;

/// A summary as JSON.
fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "positions": s.positions,
        "rel_l2": s.rel_l2,
        "worst_rel_l2": s.worst_rel_l2,
        "max_abs": s.max_abs,
        "top1_percent": s.top1_percent,
    })
}

/// Runs `braid check`; exits with an error when braid is past the bar.
pub fn check(args: &CheckArgs) -> Result<()> {
    let spec = match (&args.model, &args.reference) {
        (Some(m), _) => m.as_str(),
        (None, Some(_)) => "tiny",
        (None, None) => bail!(
            "braid check needs --model DIR holding reference.safetensors (scripts/make_checkpoint.py \
             writes one), or --reference FILE"
        ),
    };
    if spec == "tiny" && args.reference.is_none() {
        bail!("braid check needs --model DIR holding reference.safetensors (scripts/make_checkpoint.py writes one), or --reference FILE");
    }
    let model = LoadedModel::load(spec)?;
    let path = match &args.reference {
        Some(p) => p.clone(),
        None => std::path::Path::new(spec).join("reference.safetensors"),
    };
    if !path.is_file() {
        bail!(
            "{}: {} (expected reference.safetensors written by scripts/make_checkpoint.py)",
            path.display(),
            if path.exists() {
                "not a regular file"
            } else {
                "no such file"
            }
        );
    }
    let reference = Reference::load(&path)?;
    let t = args
        .positions
        .unwrap_or(reference.tokens.len())
        .min(reference.tokens.len());
    if t == 0 {
        bail!(
            "{}: no positions to check (--positions 0 or an empty reference)",
            path.display()
        );
    }
    if let Some(bad) = reference
        .tokens
        .iter()
        .find(|&&id| id as usize >= model.config.vocab_size)
    {
        bail!(
            "{}: token id {bad} is outside the model's vocabulary ({})",
            path.display(),
            model.config.vocab_size
        );
    }
    if reference.vocab != model.config.vocab_size {
        bail!(
            "{}: logits have vocab {}, the model has {}",
            path.display(),
            reference.vocab,
            model.config.vocab_size
        );
    }
    let prefill = args.prefill.mode();
    let batched = matches!(prefill, PrefillMode::Batched { .. });
    // The continuation check decodes CONTINUATION tokens past the prompt.
    let needed = if batched { t + CONTINUATION } else { t };
    let max_context = args.build.max_context_or(&model.config, needed)?;
    if t > max_context {
        bail!(
            "--max-context {max_context} holds fewer positions than the {t} to check ({}); pass \
             --positions {max_context} or raise --max-context",
            if args.positions.is_some() {
                "--positions".to_string()
            } else {
                format!("all of {}", path.display())
            }
        );
    }
    // A --max-context below `needed` shortens the continuation (to nothing when it leaves no room).
    let continuation_tokens = if batched {
        CONTINUATION.min(max_context - t)
    } else {
        0
    };
    let device = resolve_device(args.device);
    let req = BackendRequest {
        device,
        passes: &args.build.passes,
        max_context,
        exec: crate::pipeline::exec_options(!args.no_graph)?,
        prefill,
    };
    ui::info(&format!("model {} on {}", model.summary(), device.name()));
    let mut backend = {
        let _task = ui::Task::spinner("fusing the decode step and setting up the backend");
        open_backend(&model, &req)?
    };
    let name = backend.name();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let v = reference.vocab;
    let tokens = &reference.tokens[..t];
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    if batched {
        backend.reset()?;
        let logits = backend.prefill_logits(tokens, 0)?;
        let s = score(&logits, &reference, args, "prefill", &mut rows, &mut out)?;
        summaries.push((
            "batched_prefill",
            format!("braid ({name}, batched prefill)"),
            s,
        ));
    }
    backend.reset()?;
    let mut logits = Vec::with_capacity(t);
    for (pos, &tok) in tokens.iter().enumerate() {
        let step = backend.step(tok, pos, true)?;
        logits.push(step.logits.context("the backend returned no logits")?);
    }
    let s = score(&logits, &reference, args, "decode", &mut rows, &mut out)?;
    summaries.push(("braid", format!("braid ({name})"), s));
    let oracle = &reference.logits_f32[..t * v];
    let hf = {
        let per: Vec<_> = (0..t)
            .map(|p| compare(reference.bf16(p), reference.oracle(p)))
            .collect();
        summarize(&per, &reference.logits_bf16[..t * v], oracle)
    };
    let fp32_backend = name == "cpu";
    let passes = |s: &Summary| {
        if fp32_backend {
            s.worst_rel_l2 <= CPU_MAX_REL_L2
        } else {
            s.rel_l2 <= BF16_REL_L2_FACTOR * hf.rel_l2
                && s.top1_percent >= hf.top1_percent - BF16_TOP1_SLACK_POINTS
        }
    };
    let bar = if fp32_backend {
        format!("worst per-position rel_l2 <= {CPU_MAX_REL_L2:e} (f32 reference interpreter)")
    } else {
        format!(
            "rel_l2 <= {BF16_REL_L2_FACTOR} x {:.3e} and top1 >= {:.1}% - {BF16_TOP1_SLACK_POINTS} points",
            hf.rel_l2, hf.top1_percent
        )
    };
    let mut failed = Vec::new();
    for (key, _, s) in &summaries {
        if !passes(s) {
            failed.push(if *key == "braid" {
                "the decode steps' logits"
            } else {
                "the batched prefill's logits"
            });
        }
    }
    let cont = if continuation_tokens > 0 {
        Some(continuation(backend.as_mut(), tokens, continuation_tokens)?)
    } else {
        None
    };
    if matches!(&cont, Some(c) if !c.passed) {
        failed.push("the greedy continuation after batched prefill");
    }
    if args.json {
        let mut obj = serde_json::json!({
            "model": model.source,
            "reference": path.display().to_string(),
            "device": name,
            "passes": args.build.passes,
            "transformers_bf16": summary_json(&hf),
            "bar": bar,
            "passed": failed.is_empty(),
        });
        for (key, _, s) in &summaries {
            obj[*key] = summary_json(s);
        }
        if let Some(c) = &cont {
            obj["continuation"] = serde_json::json!({
                "tokens": c.tokens,
                "agree": c.agree,
                "near_tie": c.agree < c.tokens && c.passed,
                "passed": c.passed,
            });
        }
        if args.verbose {
            obj["per_position"] = serde_json::Value::Array(rows);
        }
        writeln!(out, "{obj}")?;
    } else {
        let mut line = |who: &str, s: &Summary| {
            writeln!(
                out,
                "{who:<32} positions {}  rel_l2 {:.3e}  worst {:.3e}  max_abs {:.3e}  top1 {:.1}%",
                s.positions, s.rel_l2, s.worst_rel_l2, s.max_abs, s.top1_percent
            )
        };
        for (_, who, s) in &summaries {
            line(who, s)?;
        }
        line("transformers bf16", &hf)?;
        writeln!(out, "bar: {bar}")?;
        match &cont {
            Some(c) => writeln!(out, "{}", c.message)?,
            None if batched => writeln!(
                out,
                "continuation: not run (--max-context {max_context} leaves no position past the \
                 {t} checked)"
            )?,
            None => {}
        }
    }
    out.flush()?;
    if !failed.is_empty() {
        bail!("check FAILED: {} past the bar", failed.join(" and "));
    }
    if !args.json {
        writeln!(out, "check passed")?;
    }
    Ok(())
}

/// Compares `logits` (one row per position) with the reference; with `--verbose` prints each
/// position (or, with `--json`, collects it into `rows`).
fn score(
    logits: &[Vec<f32>],
    reference: &Reference,
    args: &CheckArgs,
    what: &str,
    rows: &mut Vec<serde_json::Value>,
    out: &mut impl Write,
) -> Result<Summary> {
    let v = reference.vocab;
    let mut per_pos = Vec::with_capacity(logits.len());
    let mut ours = Vec::with_capacity(logits.len() * v);
    for (pos, row) in logits.iter().enumerate() {
        if row.len() != v {
            bail!(
                "{what}: the backend returned {} logits at position {pos}, expected {v}",
                row.len()
            );
        }
        let e = compare(row, reference.oracle(pos));
        let tok = reference.tokens[pos];
        if args.verbose {
            if args.json {
                rows.push(serde_json::json!({
                    "path": what, "position": pos, "token": tok, "rel_l2": e.rel_l2,
                    "max_abs": e.max_abs, "top1_agrees": e.top1_agrees,
                }));
            } else {
                writeln!(
                    out,
                    "{what:<8} pos {pos:4}  token {tok:6}  rel_l2 {:.3e}  max_abs {:.3e}  top1 {}",
                    e.rel_l2,
                    e.max_abs,
                    if e.top1_agrees { "ok" } else { "DIFF" }
                )?;
            }
        }
        per_pos.push(e);
        ours.extend_from_slice(row);
    }
    Ok(summarize(
        &per_pos,
        &ours,
        &reference.logits_f32[..logits.len() * v],
    ))
}

/// The greedy-continuation check's outcome.
struct Continuation {
    /// Greedy tokens compared ([`CONTINUATION`] unless the context holds fewer).
    tokens: usize,
    /// Leading greedy tokens on which both prefill paths agree.
    agree: usize,
    /// True when they agree throughout or part at a near-tie.
    passed: bool,
    /// One line for the report.
    message: String,
}

/// `n` greedy tokens after a batched and after a token-by-token prefill of `prompt`.
fn continuation(backend: &mut dyn DecodeBackend, prompt: &[u32], n: usize) -> Result<Continuation> {
    let t = prompt.len();
    backend.reset()?;
    let mut tok = backend.prefill(prompt, 0, false)?.next_token;
    let mut batched = vec![tok];
    for p in t..t + n - 1 {
        tok = backend.step(tok, p, false)?.next_token;
        batched.push(tok);
    }
    backend.reset()?;
    let first = prefill_by_token(backend, prompt, 0, true)?;
    let mut tok = first.next_token;
    let mut by_token = vec![tok];
    let mut step_logits = vec![first.logits.context("the backend returned no logits")?];
    for p in t..t + n - 1 {
        let out = backend.step(tok, p, true)?;
        tok = out.next_token;
        by_token.push(tok);
        step_logits.push(out.logits.context("the backend returned no logits")?);
    }
    let agree = batched
        .iter()
        .zip(&by_token)
        .take_while(|(a, b)| a == b)
        .count();
    if agree == n {
        return Ok(Continuation {
            tokens: n,
            agree,
            passed: true,
            message: format!(
                "continuation: {n}/{n} greedy tokens after batched prefill equal those after \
                 token-by-token prefill"
            ),
        });
    }
    let l = &step_logits[agree];
    let rms = (l.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / l.len().max(1) as f64).sqrt();
    let (a, b) = (batched[agree] as usize, by_token[agree] as usize);
    let gap = (l[b] as f64 - l.get(a).copied().unwrap_or(f32::NAN) as f64).abs();
    let tie = gap <= NEAR_TIE * rms;
    Ok(Continuation {
        tokens: n,
        agree,
        passed: tie,
        message: format!(
            "continuation: greedy tokens agree for {agree}/{n} steps, then batched prefill picks \
             {a} where token-by-token picks {b}: logit gap {gap:.3e} = {:.3} x RMS ({})",
            gap / rms.max(1e-30),
            if tie {
                "a near-tie: bf16 rounding may pick either"
            } else {
                "NOT a near-tie"
            }
        ),
    })
}

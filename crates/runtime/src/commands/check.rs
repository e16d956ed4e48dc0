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

use anyhow::{bail, Context, Result};

use crate::cli::CheckArgs;
use crate::engine::{prefill_by_token, DecodeBackend, PrefillMode};
use crate::load::LoadedModel;
use crate::pipeline::{self, open_backend, BackendRequest};
use crate::reference::{compare, summarize, Reference, Summary};

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

/// Runs `braid check`; exits with an error when braid is past the bar.
pub fn check(args: &CheckArgs) -> Result<()> {
    if args.model.model == "tiny" && args.reference.is_none() {
        bail!("braid check needs --model DIR holding reference.safetensors (scripts/make_checkpoint.py writes one), or --reference FILE");
    }
    let model = LoadedModel::load(&args.model.model)?;
    let path = match &args.reference {
        Some(p) => p.clone(),
        None => std::path::Path::new(&args.model.model).join("reference.safetensors"),
    };
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
    let max_context = args.model.max_context.max(needed);
    let req = BackendRequest {
        device: args.device.into(),
        passes: &args.model.passes,
        max_context,
        exec: pipeline::exec_options(!args.no_graph)?,
        prefill,
    };
    let mut backend = open_backend(&model, &req)?;
    let name = backend.name();
    let v = reference.vocab;
    let tokens = &reference.tokens[..t];
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
    let line = |who: &str, s: &Summary| {
        println!(
            "{who:<32} positions {}  rel_l2 {:.3e}  worst {:.3e}  max_abs {:.3e}  top1 {:.1}%",
            s.positions, s.rel_l2, s.worst_rel_l2, s.max_abs, s.top1_percent
        )
    };
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    if batched {
        backend.reset()?;
        let rows = backend.prefill_logits(tokens, 0)?;
        let s = score(&rows, &reference, args.verbose, "prefill")?;
        if !passes(&s) {
            failed.push("the batched prefill's logits");
        }
        summaries.push((format!("braid ({name}, batched prefill)"), s));
    }
    backend.reset()?;
    let mut rows = Vec::with_capacity(t);
    for (pos, &tok) in tokens.iter().enumerate() {
        let out = backend.step(tok, pos, true)?;
        rows.push(out.logits.context("the backend returned no logits")?);
    }
    let s = score(&rows, &reference, args.verbose, "decode")?;
    if !passes(&s) {
        failed.push("the decode steps' logits");
    }
    summaries.push((format!("braid ({name})"), s));
    for (who, s) in &summaries {
        line(who, s);
    }
    line("transformers bf16", &hf);
    if fp32_backend {
        println!(
            "bar: worst per-position rel_l2 <= {CPU_MAX_REL_L2:e} (f32 reference interpreter)"
        );
    } else {
        println!(
            "bar: rel_l2 <= {BF16_REL_L2_FACTOR} x {:.3e} and top1 >= {:.1}% - {BF16_TOP1_SLACK_POINTS} points",
            hf.rel_l2, hf.top1_percent
        );
    }
    if batched && !continuation(backend.as_mut(), tokens)? {
        failed.push("the greedy continuation after batched prefill");
    }
    if !failed.is_empty() {
        bail!("check FAILED: {} past the bar", failed.join(" and "));
    }
    println!("check passed");
    Ok(())
}

/// Compares `rows` (logits per position) with the reference; `--verbose` prints each position.
fn score(rows: &[Vec<f32>], reference: &Reference, verbose: bool, what: &str) -> Result<Summary> {
    let v = reference.vocab;
    let mut per_pos = Vec::with_capacity(rows.len());
    let mut ours = Vec::with_capacity(rows.len() * v);
    for (pos, logits) in rows.iter().enumerate() {
        if logits.len() != v {
            bail!(
                "{what}: the backend returned {} logits at position {pos}, expected {v}",
                logits.len()
            );
        }
        let e = compare(logits, reference.oracle(pos));
        if verbose {
            println!(
                "{what:<8} pos {pos:4}  token {:6}  rel_l2 {:.3e}  max_abs {:.3e}  top1 {}",
                reference.tokens[pos],
                e.rel_l2,
                e.max_abs,
                if e.top1_agrees { "ok" } else { "DIFF" }
            );
        }
        per_pos.push(e);
        ours.extend_from_slice(logits);
    }
    Ok(summarize(
        &per_pos,
        &ours,
        &reference.logits_f32[..rows.len() * v],
    ))
}

/// Greedy continuation after a batched and after a token-by-token prefill of `prompt`; prints
/// how far they agree. Returns false when they part at a step that is not a near-tie.
fn continuation(backend: &mut dyn DecodeBackend, prompt: &[u32]) -> Result<bool> {
    let n = CONTINUATION;
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
    let mut logits = first.logits.context("the backend returned no logits")?;
    let mut by_token = vec![tok];
    let mut step_logits = vec![logits.clone()];
    for p in t..t + n - 1 {
        let out = backend.step(tok, p, true)?;
        tok = out.next_token;
        logits = out.logits.context("the backend returned no logits")?;
        by_token.push(tok);
        step_logits.push(logits.clone());
    }
    let agree = batched
        .iter()
        .zip(&by_token)
        .take_while(|(a, b)| a == b)
        .count();
    if agree == n {
        println!(
            "continuation: {n}/{n} greedy tokens after batched prefill equal those after token-by-token prefill"
        );
        return Ok(true);
    }
    let l = &step_logits[agree];
    let rms = (l.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / l.len().max(1) as f64).sqrt();
    let (a, b) = (batched[agree] as usize, by_token[agree] as usize);
    let gap = (l[b] as f64 - l.get(a).copied().unwrap_or(f32::NAN) as f64).abs();
    let tie = gap <= NEAR_TIE * rms;
    println!(
        "continuation: greedy tokens agree for {agree}/{n} steps, then batched prefill picks {a} \
         where token-by-token picks {b}: logit gap {gap:.3e} = {:.3} x RMS ({})",
        gap / rms.max(1e-30),
        if tie {
            "a near-tie: bf16 rounding may pick either"
        } else {
            "NOT a near-tie"
        }
    );
    Ok(tie)
}

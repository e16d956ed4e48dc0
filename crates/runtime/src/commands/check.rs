//! `braid check`: braid's teacher-forced logits against transformers' reference.

use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::cli::CheckArgs;
use crate::commands::generate::resolve_device;
use crate::load::LoadedModel;
use crate::pipeline::{open_backend, BackendRequest, Device};
use crate::reference::{compare, summarize, Reference, Summary};
use crate::ui;

/// The CPU reference interpreter computes in f32 like the oracle: its bar is absolute.
pub const CPU_MAX_REL_L2: f64 = 1e-4;
/// A bf16 backend may have at most this multiple of transformers-bf16's relative L2 error.
pub const BF16_REL_L2_FACTOR: f64 = 2.0;
/// ...and at most this many points less top-1 agreement than transformers-bf16.
pub const BF16_TOP1_SLACK_POINTS: f64 = 2.0;

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
    let max_context = args.build.max_context_or(&model.config, t)?;
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
    let device = resolve_device(args.device);
    let req = BackendRequest {
        device,
        passes: &args.build.passes,
        max_context,
        exec: crate::pipeline::exec_options(!args.no_graph)?,
    };
    ui::info(&format!(
        "model {} on {}",
        model.summary(),
        if device == Device::Cuda {
            "cuda"
        } else {
            "cpu"
        }
    ));
    let mut backend = {
        let _task = ui::Task::spinner("fusing the decode step and setting up the backend");
        open_backend(&model, &req)?
    };
    backend.reset()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let v = reference.vocab;
    let (mut ours, mut per_pos, mut bf16_pos) = (Vec::with_capacity(t * v), Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for (pos, &tok) in reference.tokens[..t].iter().enumerate() {
        let step = backend.step(tok, pos, true)?;
        let logits = step.logits.context("the backend returned no logits")?;
        if logits.len() != v {
            bail!(
                "the backend returned {} logits at position {pos}, expected {v}",
                logits.len()
            );
        }
        let e = compare(&logits, reference.oracle(pos));
        bf16_pos.push(compare(reference.bf16(pos), reference.oracle(pos)));
        if args.verbose {
            if args.json {
                rows.push(serde_json::json!({
                    "position": pos, "token": tok, "rel_l2": e.rel_l2, "max_abs": e.max_abs,
                    "top1_agrees": e.top1_agrees,
                }));
            } else {
                writeln!(
                    out,
                    "pos {pos:4}  token {tok:6}  rel_l2 {:.3e}  max_abs {:.3e}  top1 {}",
                    e.rel_l2,
                    e.max_abs,
                    if e.top1_agrees { "ok" } else { "DIFF" }
                )?;
            }
        }
        per_pos.push(e);
        ours.extend_from_slice(&logits);
    }
    let oracle = &reference.logits_f32[..t * v];
    let s = summarize(&per_pos, &ours, oracle);
    let hf = summarize(&bf16_pos, &reference.logits_bf16[..t * v], oracle);
    let fp32_backend = backend.name() == "cpu";
    let (pass, bar) = if fp32_backend {
        (
            s.worst_rel_l2 <= CPU_MAX_REL_L2,
            format!("worst per-position rel_l2 <= {CPU_MAX_REL_L2:e} (f32 reference interpreter)"),
        )
    } else {
        (
            s.rel_l2 <= BF16_REL_L2_FACTOR * hf.rel_l2
                && s.top1_percent >= hf.top1_percent - BF16_TOP1_SLACK_POINTS,
            format!(
                "rel_l2 <= {BF16_REL_L2_FACTOR} x {:.3e} and top1 >= {:.1}% - {BF16_TOP1_SLACK_POINTS} points",
                hf.rel_l2, hf.top1_percent
            ),
        )
    };
    if args.json {
        let mut obj = serde_json::json!({
            "model": model.source,
            "reference": path.display().to_string(),
            "device": backend.name(),
            "passes": args.build.passes,
            "braid": summary_json(&s),
            "transformers_bf16": summary_json(&hf),
            "bar": bar,
            "passed": pass,
        });
        if args.verbose {
            obj["per_position"] = serde_json::Value::Array(rows);
        }
        writeln!(out, "{obj}")?;
    } else {
        let mut line = |who: &str, s: &Summary| {
            writeln!(
                out,
                "{who:<18} positions {}  rel_l2 {:.3e}  worst {:.3e}  max_abs {:.3e}  top1 {:.1}%",
                s.positions, s.rel_l2, s.worst_rel_l2, s.max_abs, s.top1_percent
            )
        };
        line(&format!("braid ({})", backend.name()), &s)?;
        line("transformers bf16", &hf)?;
        writeln!(out, "bar: {bar}")?;
    }
    out.flush()?;
    if !pass {
        bail!("check FAILED: braid's logits are past the bar");
    }
    if !args.json {
        writeln!(out, "check passed")?;
    }
    Ok(())
}

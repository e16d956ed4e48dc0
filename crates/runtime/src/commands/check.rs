//! `braid check`: braid's teacher-forced logits against transformers' reference.

use anyhow::{bail, Context, Result};

use crate::cli::CheckArgs;
use crate::load::LoadedModel;
use crate::pipeline::{self, open_backend, BackendRequest};
use crate::reference::{compare, summarize, Reference, Summary};

/// The CPU reference interpreter computes in f32 like the oracle: its bar is absolute.
pub const CPU_MAX_REL_L2: f64 = 1e-4;
/// A bf16 backend may have at most this multiple of transformers-bf16's relative L2 error.
pub const BF16_REL_L2_FACTOR: f64 = 2.0;
/// ...and at most this many points less top-1 agreement than transformers-bf16.
pub const BF16_TOP1_SLACK_POINTS: f64 = 2.0;

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
    let max_context = args.model.max_context.max(t);
    let req = BackendRequest {
        device: args.device.into(),
        passes: &args.model.passes,
        max_context,
        exec: pipeline::exec_options(!args.no_graph)?,
    };
    let mut backend = open_backend(&model, &req)?;
    backend.reset()?;
    let v = reference.vocab;
    let (mut ours, mut per_pos, mut bf16_pos) = (Vec::with_capacity(t * v), Vec::new(), Vec::new());
    for (pos, &tok) in reference.tokens[..t].iter().enumerate() {
        let out = backend.step(tok, pos, true)?;
        let logits = out.logits.context("the backend returned no logits")?;
        if logits.len() != v {
            bail!(
                "the backend returned {} logits at position {pos}, expected {v}",
                logits.len()
            );
        }
        let e = compare(&logits, reference.oracle(pos));
        bf16_pos.push(compare(reference.bf16(pos), reference.oracle(pos)));
        if args.verbose {
            println!(
                "pos {pos:4}  token {tok:6}  rel_l2 {:.3e}  max_abs {:.3e}  top1 {}",
                e.rel_l2,
                e.max_abs,
                if e.top1_agrees { "ok" } else { "DIFF" }
            );
        }
        per_pos.push(e);
        ours.extend_from_slice(&logits);
    }
    let oracle = &reference.logits_f32[..t * v];
    let s = summarize(&per_pos, &ours, oracle);
    let hf = summarize(&bf16_pos, &reference.logits_bf16[..t * v], oracle);
    let line = |who: &str, s: &Summary| {
        println!(
            "{who:<18} positions {}  rel_l2 {:.3e}  worst {:.3e}  max_abs {:.3e}  top1 {:.1}%",
            s.positions, s.rel_l2, s.worst_rel_l2, s.max_abs, s.top1_percent
        )
    };
    line(&format!("braid ({})", backend.name()), &s);
    line("transformers bf16", &hf);
    let fp32_backend = backend.name() == "cpu";
    let pass = if fp32_backend {
        println!(
            "bar: worst per-position rel_l2 <= {CPU_MAX_REL_L2:e} (f32 reference interpreter)"
        );
        s.worst_rel_l2 <= CPU_MAX_REL_L2
    } else {
        println!(
            "bar: rel_l2 <= {BF16_REL_L2_FACTOR} x {:.3e} and top1 >= {:.1}% - {BF16_TOP1_SLACK_POINTS} points",
            hf.rel_l2, hf.top1_percent
        );
        s.rel_l2 <= BF16_REL_L2_FACTOR * hf.rel_l2
            && s.top1_percent >= hf.top1_percent - BF16_TOP1_SLACK_POINTS
    };
    if !pass {
        bail!("check FAILED: braid's logits are past the bar");
    }
    println!("check passed");
    Ok(())
}

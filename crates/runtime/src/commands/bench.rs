//! `braid bench` and `braid profile`: decode speed, launches and the memory roofline.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{open_backend, BackendRequest};
use crate::cli::{BenchArgs, DeviceArg, ProfileArgs};
use crate::load::LoadedModel;

/// Random prompt ids for benchmarks (fixed seed; ids below the vocabulary size).
pub fn bench_prompt(len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..len)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

/// `braid bench`: prefill `--prompt-len` random tokens, then time `--gen` greedy decode steps.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.model)?;
    if args.prompt_len == 0 || args.gen == 0 {
        bail!("--prompt-len and --gen must be at least 1");
    }
    let positions = args.prompt_len + args.gen;
    if positions > args.model.max_context {
        bail!(
            "--prompt-len {} + --gen {} = {positions} positions exceed --max-context {}",
            args.prompt_len,
            args.gen,
            args.model.max_context
        );
    }
    match args.device {
        DeviceArg::Cuda => {
            crate::cuda::open_device().context("--device cuda: no usable GPU")?;
            return crate::cuda::bench(&model, args);
        }
        DeviceArg::Auto if crate::cuda::open_device().is_ok() => {
            return crate::cuda::bench(&model, args)
        }
        _ => {}
    }
    let req = BackendRequest {
        device: DeviceArg::Cpu,
        passes: &args.model.passes,
        max_context: args.model.max_context,
        use_graph: false,
    };
    let mut backend = open_backend(&model, &req)?;
    let prompt = bench_prompt(args.prompt_len, model.shape.vocab);
    backend.reset()?;
    let mut tok = 0;
    for (pos, &t) in prompt.iter().enumerate() {
        tok = backend.step(t, pos, false)?.next_token;
    }
    let start = Instant::now();
    for pos in args.prompt_len..positions {
        tok = backend.step(tok, pos, false)?.next_token;
    }
    let secs = start.elapsed().as_secs_f64();
    let us_per_token = secs * 1e6 / args.gen as f64;
    let tok_s = args.gen as f64 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model.source, "device": "cpu", "passes": args.model.passes,
                "prompt_len": args.prompt_len, "gen": args.gen,
                "tok_per_s": tok_s, "us_per_token": us_per_token,
            })
        );
    } else {
        println!("model        {}", model.source);
        println!("device       cpu (reference interpreter; no roofline on the CPU)");
        println!("passes       {}", args.model.passes);
        println!("decode       {tok_s:.1} tok/s  ({us_per_token:.0} µs/token, {} tokens after a {}-token prompt)", args.gen, args.prompt_len);
    }
    Ok(())
}

/// `braid profile`: per-op breakdown on the GPU.
pub fn profile(args: &ProfileArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let model = LoadedModel::load(&args.model.model)?;
    crate::cuda::profile(&model, args)
}

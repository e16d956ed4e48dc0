//! `braid bench` and `braid profile`: decode speed, launches and the memory roofline; prefill
//! speed (time to first token) against the compute and memory floors.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_backend_cuda::{
    measure_gemm_rate, measure_read_bandwidth, CudaDevice, CudaExecutor, ExecOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::{BenchArgs, ProfileArgs};
use crate::engine::{DecodeBackend, PrefillMode};
use crate::load::LoadedModel;
use crate::pipeline::{self, BackendRequest, Device};

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
    match pipeline::select_gpu(args.device.into())? {
        Some(dev) => bench_gpu(&dev, &model, args),
        None => bench_cpu(&model, args),
    }
}

/// `braid bench` on the CPU reference interpreter: wall time per greedy step.
fn bench_cpu(model: &LoadedModel, args: &BenchArgs) -> Result<()> {
    let req = BackendRequest {
        device: Device::Cpu,
        passes: &args.model.passes,
        max_context: args.model.max_context,
        exec: ExecOptions::default(),
        prefill: args.prefill.mode(),
    };
    let mut backend = pipeline::open_backend(model, &req)?;
    let prompt = bench_prompt(args.prompt_len, model.config.vocab_size);
    backend.reset()?;
    backend.warm_prefill(prompt.len())?;
    let started = Instant::now();
    let mut tok = backend.prefill(&prompt, 0, false)?.next_token;
    let prefill_ms = started.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    for pos in args.prompt_len..args.prompt_len + args.gen {
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
                "prefill": mode_name(args.prefill.mode()), "prefill_ms": prefill_ms,
            })
        );
    } else {
        println!("model        {}", model.source);
        println!("device       cpu (reference interpreter; no roofline on the CPU)");
        println!("passes       {}", args.model.passes);
        println!("decode       {tok_s:.1} tok/s  ({us_per_token:.0} µs/token, {} tokens after a {}-token prompt)", args.gen, args.prompt_len);
        println!(
            "prefill      {} tokens in {prefill_ms:.1} ms ({})",
            args.prompt_len,
            mode_name(args.prefill.mode())
        );
    }
    Ok(())
}

/// How a prefill mode is named in bench output.
fn mode_name(m: PrefillMode) -> String {
    match m {
        PrefillMode::Token => "token by token".into(),
        PrefillMode::Batched { chunk } => format!("batched, chunks of at most {chunk}"),
    }
}

/// One row of the prefill section.
struct PrefillRow {
    len: usize,
    ttft: Duration,
    flops: f64,
    bytes: usize,
}

/// The prefill section on the GPU: for each prompt length, the median time of a whole prefill
/// from an empty cache to the first generated token (one `DecodeBackend::prefill`, which ends
/// with the 4-byte read of the greedy token), after one untimed run that also builds the chunk
/// executors. A backend of its own, sized for the longest prompt, so the decode section's plan is
/// untouched.
fn bench_prefill_gpu(
    dev: &CudaDevice,
    model: &LoadedModel,
    args: &BenchArgs,
    opts: ExecOptions,
) -> Result<Vec<PrefillRow>> {
    let lens: Vec<usize> = args
        .prefill_lens
        .iter()
        .copied()
        .filter(|&l| l > 0)
        .collect();
    let Some(&longest) = lens.iter().max() else {
        return Ok(Vec::new());
    };
    let req = BackendRequest {
        device: Device::Cuda,
        passes: &args.model.passes,
        max_context: longest,
        exec: opts,
        prefill: args.prefill.mode(),
    };
    let mut backend = pipeline::cuda_backend(dev, model, &req)?;
    let mut rows = Vec::new();
    for &len in &lens {
        let prompt = bench_prompt(len, model.config.vocab_size);
        let (flops, bytes) = backend.prefill_cost(len)?;
        // Token-by-token prefill of long prompts takes seconds: fewer repetitions.
        let reps = if len >= 4096 { 3 } else { 7 };
        let mut times = Vec::with_capacity(reps);
        for r in 0..=reps {
            backend.reset()?;
            let start = Instant::now();
            backend.prefill(&prompt, 0, false)?;
            if r > 0 {
                times.push(start.elapsed());
            }
        }
        times.sort();
        rows.push(PrefillRow {
            len,
            ttft: times[times.len() / 2],
            flops,
            bytes,
        });
    }
    Ok(rows)
}

/// `braid bench` on the GPU: prefill `--prompt-len` random ids, time `--gen` greedy steps (each a
/// graph replay plus a 4-byte read-back), and put the result against the device's read bandwidth
/// measured in the same run. Then the prefill section ([`bench_prefill_gpu`]): time to first token
/// for each `--prefill-lens` length, against the compute floor (the prefill's matmul FLOPs at the
/// bf16 GEMM rate measured now) and the memory floor (weights once plus the KV rows written, at the
/// read bandwidth measured now).
fn bench_gpu(dev: &CudaDevice, model: &LoadedModel, args: &BenchArgs) -> Result<()> {
    let opts = pipeline::exec_options(!args.no_graph)?;
    let mut exec =
        pipeline::cuda_executor(dev, model, &args.model.passes, args.model.max_context, opts)?;
    let prompt = bench_prompt(args.prompt_len, model.config.vocab_size);
    exec.reset()?;
    let mut tok = 0;
    for (pos, &t) in prompt.iter().enumerate() {
        tok = exec.step(t, pos)?;
    }
    // Host loop: one step (graph launch + 4-byte read-back) per token, as `generate` runs.
    let start = Instant::now();
    for pos in args.prompt_len..args.prompt_len + args.gen {
        tok = exec.step(tok, pos)?;
    }
    let us_per_token = start.elapsed().as_secs_f64() * 1e6 / args.gen as f64;
    // Device loop (graph mode): the same steps replayed back to back, each feeding its argmax to
    // the next, one synchronisation at the end; same prompt, same positions.
    let device_loop_us = if exec.uses_graph() {
        exec.reset()?;
        let mut first = 0;
        for (pos, &t) in prompt.iter().enumerate() {
            first = exec.step(t, pos)?;
        }
        let start = Instant::now();
        exec.decode_greedy(first, args.prompt_len, args.gen)?;
        Some(start.elapsed().as_secs_f64() * 1e6 / args.gen as f64)
    } else {
        None
    };
    let tok_s = 1e6 / us_per_token;
    // Bytes of a step in the middle of the timed range (weights + KV rows + activations).
    let bytes = exec.bytes_per_step(args.prompt_len + args.gen / 2);
    let weight_bytes = exec.weight_bytes();
    let bw = measure_read_bandwidth(dev, weight_bytes)?;
    let roofline_us = bytes as f64 / bw * 1e6;
    let fraction = roofline_us / us_per_token;
    let launches = exec.launches_per_step();
    let uses_graph = exec.uses_graph();
    // The prefill section builds a backend of its own: free this executor first.
    drop(exec);
    let prefill = bench_prefill_gpu(dev, model, args, opts)?;
    let gemm_rate = if prefill.is_empty() {
        None
    } else {
        Some(measure_gemm_rate(dev, 8192, 8192, 8192)?)
    };
    let floors = |r: &PrefillRow| {
        let compute_ms = r.flops / gemm_rate.unwrap_or(f64::INFINITY) * 1e3;
        let memory_ms = r.bytes as f64 / bw * 1e3;
        (compute_ms, memory_ms)
    };
    let mode = if uses_graph {
        "cuda graph replay"
    } else {
        "eager launches"
    };
    if args.json {
        let rows: Vec<serde_json::Value> = prefill
            .iter()
            .map(|r| {
                let (c, m) = floors(r);
                let ms = r.ttft.as_secs_f64() * 1e3;
                serde_json::json!({
                    "prompt_len": r.len, "ttft_ms": ms, "tok_per_s": r.len as f64 / (ms * 1e-3),
                    "matmul_flops": r.flops, "bytes": r.bytes,
                    "compute_floor_ms": c, "compute_floor_fraction": c / ms,
                    "memory_floor_ms": m, "memory_floor_fraction": m / ms,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": model.source, "device": dev.name(), "mode": mode, "passes": args.model.passes,
                "prompt_len": args.prompt_len, "gen": args.gen,
                "tok_per_s": tok_s, "us_per_token": us_per_token,
                "device_loop_tok_per_s": device_loop_us.map(|us| 1e6 / us),
                "device_loop_us_per_token": device_loop_us,
                "launches_per_token": launches,
                "bytes_per_token": bytes, "weight_bytes": weight_bytes,
                "read_bandwidth_bytes_per_s": bw, "roofline_us_per_token": roofline_us,
                "roofline_fraction": fraction, "tuning": opts.tuning.to_string(),
                "prefill_mode": mode_name(args.prefill.mode()),
                "gemm_flops_per_s": gemm_rate, "prefill": rows,
            })
        );
    } else {
        println!("model            {}", model.source);
        println!("device           {} ({})", dev.name(), dev.arch());
        println!("mode             {mode}, passes `{}`", args.model.passes);
        println!("tuning           {}", opts.tuning);
        println!(
            "decode           {tok_s:.1} tok/s, {us_per_token:.1} µs/token (host loop: one step + 4-byte read per token; {} tokens after a {}-token prompt)",
            args.gen, args.prompt_len
        );
        if let Some(us) = device_loop_us {
            println!(
                "device loop      {:.1} tok/s, {us:.1} µs/token (greedy steps replayed back to back, one sync); {:.1}% of roofline",
                1e6 / us,
                100.0 * roofline_us / us
            );
        }
        println!(
            "launches/token   {launches}{}",
            if uses_graph {
                " kernels in 1 graph launch"
            } else {
                ""
            }
        );
        println!(
            "bytes/token      {:.1} MB (weights {:.1} MB)",
            bytes as f64 / 1e6,
            weight_bytes as f64 / 1e6
        );
        println!(
            "read bandwidth   {:.2} TB/s (measured now, same byte count as the weights)",
            bw / 1e12
        );
        println!(
            "roofline         {roofline_us:.1} µs/token = {:.0} tok/s; host loop reached {:.1}%",
            1e6 / roofline_us,
            100.0 * fraction
        );
        if let Some(rate) = gemm_rate {
            println!(
                "prefill          {}; GEMM rate {:.1} TFLOP/s (cuBLAS bf16 8192x8192x8192, measured now)",
                mode_name(args.prefill.mode()),
                rate / 1e12
            );
        }
        for r in &prefill {
            let (c, m) = floors(r);
            let ms = r.ttft.as_secs_f64() * 1e3;
            println!(
                "prefill {:<8} TTFT {ms:.2} ms, {:.0} tok/s; compute floor {c:.3} ms ({:.1}%), memory floor {m:.3} ms ({:.1}%)",
                r.len,
                r.len as f64 / (ms * 1e-3),
                100.0 * c / ms,
                100.0 * m / ms
            );
        }
    }
    Ok(())
}

/// `braid profile`: eager steps on the GPU with CUDA events around every launch.
pub fn profile(args: &ProfileArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let model = LoadedModel::load(&args.model.model)?;
    let dev = pipeline::open_gpu().context("braid profile times CUDA kernels and needs a GPU")?;
    let opts = pipeline::exec_options(false)?;
    let tokens = args.prefill.map(|t| t as usize);
    let max_context = args
        .model
        .max_context
        .max(args.steps + 1)
        .max(tokens.unwrap_or(0));
    let mut exec = pipeline::cuda_executor(&dev, &model, &args.model.passes, max_context, opts)?;
    let profile = match tokens {
        None => exec.profile(args.steps)?,
        Some(t) => {
            let steps = pipeline::StepGraphs::new(
                &model,
                &args.model.passes,
                max_context,
                pipeline::kv_dtype(true),
            );
            let g = steps.graph(t, false)?;
            let mut pf = CudaExecutor::new_sharing(&dev, &g, model.weights()?, &exec, opts)
                .context("setting up the CUDA prefill step")?;
            let prompt = bench_prompt(t, model.config.vocab_size);
            println!(
                "prefill step over {t} tokens (from position 0), {} repetitions",
                args.steps
            );
            pf.profile_prefill(&prompt, 0, args.steps)?
        }
    };
    println!(
        "model {} on {} ({}), passes `{}`",
        model.source,
        dev.name(),
        dev.arch(),
        args.model.passes
    );
    println!("tuning {}", opts.tuning);
    print!("{profile}");
    Ok(())
}

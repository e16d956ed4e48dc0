//! The CUDA side of the runner: an adapter from `braid-backend-cuda`'s executor to
//! [`DecodeBackend`], and the GPU paths of `braid bench` and `braid profile`.

use std::time::Instant;

use anyhow::{Context, Result};
use braid_backend_cuda::{measure_read_bandwidth, CudaDevice, CudaExecutor, ExecOptions};
use braid_ir::{DType, Graph, WeightSource};

use crate::cli::{BenchArgs, ProfileArgs};
use crate::commands::bench::bench_prompt;
use crate::commands::graph::run_passes;
use crate::engine::{DecodeBackend, EngineError, StepOutput};
use crate::load::LoadedModel;
use crate::sampling::argmax;

/// Opens GPU 0. Errors say why none is usable (driver library missing, no device).
pub fn open_device() -> Result<CudaDevice> {
    Ok(CudaDevice::open(0)?)
}

/// The decode step on the GPU: one CUDA graph replay per token (or eager launches).
pub struct CudaBackend {
    exec: CudaExecutor,
    max_context: usize,
}

impl CudaBackend {
    /// Uploads weights, plans memory, compiles kernels and, with `use_graph`, captures the step.
    pub fn new(
        dev: &CudaDevice,
        graph: &Graph,
        weights: &dyn WeightSource,
        max_context: usize,
        use_graph: bool,
    ) -> Result<Self> {
        let opts = ExecOptions {
            use_graph,
            ..ExecOptions::default()
        };
        let exec = CudaExecutor::new(dev, graph, weights, opts)
            .context("setting up the CUDA decode step")?;
        Ok(CudaBackend { exec, max_context })
    }
}

fn cuda_err(e: braid_backend_cuda::CudaError) -> EngineError {
    EngineError::Backend {
        backend: "cuda",
        msg: e.to_string(),
    }
}

impl DecodeBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn step(
        &mut self,
        token: u32,
        position: usize,
        want_logits: bool,
    ) -> Result<StepOutput, EngineError> {
        if want_logits {
            let logits = self.exec.step_logits(token, position).map_err(cuda_err)?;
            Ok(StepOutput {
                next_token: argmax(&logits),
                logits: Some(logits),
            })
        } else {
            let next_token = self.exec.step(token, position).map_err(cuda_err)?;
            Ok(StepOutput {
                next_token,
                logits: None,
            })
        }
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.exec.reset().map_err(cuda_err)
    }
}

/// Lowers `model` for the GPU (bf16 KV cache), runs the passes and builds an executor.
fn executor(
    dev: &CudaDevice,
    model: &LoadedModel,
    passes: &str,
    max_context: usize,
    use_graph: bool,
) -> Result<CudaExecutor> {
    let mut g = model.lower(max_context, DType::BF16)?;
    run_passes(&mut g, passes, &[])?;
    let opts = ExecOptions {
        use_graph,
        ..ExecOptions::default()
    };
    CudaExecutor::new(dev, &g, model.weights()?, opts).context("setting up the CUDA decode step")
}

/// `braid bench` on the GPU: prefill `--prompt-len` random ids, time `--gen` greedy steps (each a
/// graph replay plus a 4-byte read-back), and put the result against the device's read bandwidth
/// measured in the same run.
pub fn bench(model: &LoadedModel, args: &BenchArgs) -> Result<()> {
    let dev = open_device()?;
    let mut exec = executor(
        &dev,
        model,
        &args.model.passes,
        args.model.max_context,
        !args.no_graph,
    )?;
    let prompt = bench_prompt(args.prompt_len, model.shape.vocab);
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
    let bw = measure_read_bandwidth(&dev, exec.weight_bytes())?;
    let roofline_us = bytes as f64 / bw * 1e6;
    let fraction = roofline_us / us_per_token;
    let launches = exec.launches_per_step();
    let mode = if exec.uses_graph() {
        "cuda graph replay"
    } else {
        "eager launches"
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model.source, "device": dev.name(), "mode": mode, "passes": args.model.passes,
                "prompt_len": args.prompt_len, "gen": args.gen,
                "tok_per_s": tok_s, "us_per_token": us_per_token,
                "device_loop_tok_per_s": device_loop_us.map(|us| 1e6 / us),
                "device_loop_us_per_token": device_loop_us,
                "launches_per_token": launches,
                "bytes_per_token": bytes, "weight_bytes": exec.weight_bytes(),
                "read_bandwidth_bytes_per_s": bw, "roofline_us_per_token": roofline_us,
                "roofline_fraction": fraction,
            })
        );
    } else {
        println!("model            {}", model.source);
        println!("device           {} ({})", dev.name(), dev.arch());
        println!("mode             {mode}, passes `{}`", args.model.passes);
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
            if exec.uses_graph() {
                " kernels in 1 graph launch"
            } else {
                ""
            }
        );
        println!(
            "bytes/token      {:.1} MB (weights {:.1} MB)",
            bytes as f64 / 1e6,
            exec.weight_bytes() as f64 / 1e6
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
    }
    Ok(())
}

/// `braid profile`: eager steps with CUDA events around every launch.
pub fn profile(model: &LoadedModel, args: &ProfileArgs) -> Result<()> {
    let dev = open_device().context("braid profile times CUDA kernels and needs a GPU")?;
    let mut exec = executor(
        &dev,
        model,
        &args.model.passes,
        args.model.max_context.max(args.steps + 1),
        false,
    )?;
    let profile = exec.profile(args.steps)?;
    println!(
        "model {} on {} ({}), passes `{}`",
        model.source,
        dev.name(),
        dev.arch(),
        args.model.passes
    );
    print!("{profile}");
    Ok(())
}

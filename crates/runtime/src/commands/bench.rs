//! `braid bench` and `braid profile`: decode speed, launches and the memory roofline.
//!
//! `bench` measures one row per (prompt length, generated tokens) pair of its sweep (like
//! llama-bench), each `--repeat` times, and prints mean ± standard deviation as a Markdown table,
//! CSV or JSON.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use braid_backend_cuda::{
    measure_gemm_rate, measure_read_bandwidth, CudaDevice, CudaExecutor, ExecOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::{BenchArgs, BenchFormat, ProfileArgs};
use crate::engine::{DecodeBackend, PrefillMode};
use crate::load::LoadedModel;
use crate::pipeline::{self, BackendRequest, Device};
use crate::ui;

/// Random prompt ids for benchmarks (fixed seed; ids below the vocabulary size).
pub fn bench_prompt(len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..len)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

/// Mean and sample standard deviation of some runs (0 for one run).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    /// The statistics of `xs` (non-empty).
    pub fn of(xs: &[f64]) -> Stat {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let std = if xs.len() > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stat { mean, std }
    }

    fn show(&self, decimals: usize, repeat: usize) -> String {
        if repeat > 1 {
            format!("{:.*} ± {:.*}", decimals, self.mean, decimals, self.std)
        } else {
            format!("{:.*}", decimals, self.mean)
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "mean": self.mean, "std": self.std })
    }
}

/// One measured row of the sweep.
struct Row {
    prompt_len: usize,
    gen: usize,
    /// Host loop: one step (and a 4-byte read on the GPU) per token.
    tok_s: Stat,
    us_per_token: Stat,
    /// GPU only: what only the device measures.
    gpu: Option<GpuRow>,
}

struct GpuRow {
    /// Greedy steps replayed back to back with one synchronisation (graph mode only).
    device_loop_tok_s: Option<Stat>,
    launches: usize,
    bytes_per_token: u64,
    roofline_us: f64,
    /// Host loop's fraction of the roofline.
    fraction: Stat,
}

/// What every row shares.
struct Setup {
    model: String,
    device: String,
    mode: String,
    passes: String,
    repeat: usize,
    max_context: usize,
    weight_bytes: u64,
    read_bandwidth: Option<f64>,
    /// The GPU backend's tuning knobs in force (`KNOB=value ...`; empty on the CPU).
    tuning: String,
}

/// `braid bench`: for every pair of the sweep, prefill `--prompt-len` random tokens, then time
/// `--gen` greedy decode steps, `--repeat` times.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let (prompts, gens) = (args.prompt_lens(), args.gens());
    let model = LoadedModel::load(&args.model.model)?;
    let longest = prompts
        .iter()
        .flat_map(|p| gens.iter().map(move |g| p.saturating_add(*g)))
        .max()
        .unwrap_or(0);
    // An explicit --max-context wins; otherwise at least what the run needs.
    let max_context = args
        .model
        .build
        .max_context_or(&model.config, longest.max(crate::cli::DEFAULT_MAX_CONTEXT))?;
    if longest > max_context {
        bail!(
            "--prompt-len {} + --gen {} = {longest} positions exceed --max-context {max_context}",
            prompts.iter().max().unwrap_or(&0),
            gens.iter().max().unwrap_or(&0),
        );
    }
    let device = crate::commands::generate::resolve_device(args.device);
    ui::info(&format!("model {} on {}", model.summary(), device.name()));
    let (setup, rows, prefill) = match device {
        Device::Cuda => {
            let dev = pipeline::open_gpu().context("--device cuda: no usable GPU")?;
            let (setup, rows) = bench_gpu(&dev, &model, args, max_context, &prompts, &gens)?;
            let opts = pipeline::exec_options(!args.no_graph)?;
            let prefill = bench_prefill_gpu(&dev, &model, args, opts, setup.read_bandwidth)?;
            (setup, rows, prefill)
        }
        _ => {
            let (setup, rows) = bench_cpu(&model, args, max_context, &prompts, &gens)?;
            (setup, rows, None)
        }
    };
    print_rows(&setup, &rows, prefill.as_ref(), args.output_format())
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

/// The prefill section, with the rates its floors are measured against.
struct PrefillSection {
    mode: String,
    /// bf16 GEMM FLOP/s measured in this run (cuBLAS 8192^3).
    gemm_rate: f64,
    /// Read bandwidth (bytes/s) measured in this run.
    bandwidth: f64,
    rows: Vec<PrefillRow>,
}

impl PrefillSection {
    /// `(compute floor ms, memory floor ms)` of a row.
    fn floors(&self, r: &PrefillRow) -> (f64, f64) {
        (
            r.flops / self.gemm_rate * 1e3,
            r.bytes as f64 / self.bandwidth * 1e3,
        )
    }
}

/// The prefill section on the GPU: for each `--prefill-lens` length, the median time of a whole
/// prefill from an empty cache to the first generated token (one `DecodeBackend::prefill`, which
/// ends with the 4-byte read of the greedy token), after one untimed run that also builds the
/// chunk executors; against the compute floor (the prefill's matmul FLOPs at the bf16 GEMM rate
/// measured now) and the memory floor (weights once plus the KV rows written, at the read
/// bandwidth measured now). A backend of its own, sized for the longest prompt. `None` when every
/// length is 0.
fn bench_prefill_gpu(
    dev: &CudaDevice,
    model: &LoadedModel,
    args: &BenchArgs,
    opts: ExecOptions,
    bandwidth: Option<f64>,
) -> Result<Option<PrefillSection>> {
    let lens: Vec<usize> = args
        .prefill_lens
        .iter()
        .copied()
        .filter(|&l| l > 0)
        .collect();
    let (Some(&longest), Some(bandwidth)) = (lens.iter().max(), bandwidth) else {
        return Ok(None);
    };
    let req = BackendRequest {
        device: Device::Cuda,
        passes: &args.model.build.passes,
        max_context: args
            .model
            .build
            .max_context_or(&model.config, longest)?
            .max(longest),
        exec: opts,
        prefill: args.prefill.mode(),
    };
    let mut backend = {
        let _task = ui::Task::spinner("setting up the prefill steps");
        pipeline::cuda_backend(dev, model, &req)?
    };
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
    drop(backend);
    Ok(Some(PrefillSection {
        mode: mode_name(args.prefill.mode()),
        gemm_rate: measure_gemm_rate(dev, 8192, 8192, 8192)?,
        bandwidth,
        rows,
    }))
}

/// Every (prompt, gen) pair, in sweep order.
fn pairs(prompts: &[usize], gens: &[usize]) -> Vec<(usize, usize)> {
    prompts
        .iter()
        .flat_map(|&p| gens.iter().map(move |&g| (p, g)))
        .collect()
}

/// `braid bench` on the CPU reference interpreter: wall time per greedy step.
fn bench_cpu(
    model: &LoadedModel,
    args: &BenchArgs,
    max_context: usize,
    prompts: &[usize],
    gens: &[usize],
) -> Result<(Setup, Vec<Row>)> {
    let req = BackendRequest {
        device: Device::Cpu,
        passes: &args.model.build.passes,
        max_context,
        exec: ExecOptions::default(),
        prefill: args.prefill.mode(),
    };
    let mut backend = {
        let _task = ui::Task::spinner("fusing the decode step and setting up the CPU backend");
        pipeline::open_backend(model, &req)?
    };
    let mut rows = Vec::new();
    for (p, g) in pairs(prompts, gens) {
        let prompt = bench_prompt(p, model.config.vocab_size);
        let mut secs = Vec::new();
        for _ in 0..args.repeat {
            secs.push(time_cpu(backend.as_mut(), &prompt, g)?);
        }
        let tok_s: Vec<f64> = secs.iter().map(|s| g as f64 / s).collect();
        let us: Vec<f64> = secs.iter().map(|s| s * 1e6 / g as f64).collect();
        rows.push(Row {
            prompt_len: p,
            gen: g,
            tok_s: Stat::of(&tok_s),
            us_per_token: Stat::of(&us),
            gpu: None,
        });
    }
    let setup = Setup {
        model: model.source.clone(),
        device: "cpu".into(),
        mode: "reference interpreter".into(),
        passes: args.model.build.passes.clone(),
        repeat: args.repeat,
        max_context,
        weight_bytes: model.weight_bytes() as u64,
        read_bandwidth: None,
        tuning: String::new(),
    };
    Ok((setup, rows))
}

/// Seconds of `gen` greedy steps after prefilling `prompt` from a fresh cache.
fn time_cpu(backend: &mut dyn DecodeBackend, prompt: &[u32], gen: usize) -> Result<f64> {
    backend.reset()?;
    let mut tok = backend.prefill(prompt, 0, false)?.next_token;
    let start = Instant::now();
    for pos in prompt.len()..prompt.len() + gen {
        tok = backend.step(tok, pos, false)?.next_token;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `braid bench` on the GPU: per row, prefill random ids, time greedy steps (each a graph replay
/// plus a 4-byte read-back), and put the result against the device's read bandwidth measured once
/// in the same run.
fn bench_gpu(
    dev: &CudaDevice,
    model: &LoadedModel,
    args: &BenchArgs,
    max_context: usize,
    prompts: &[usize],
    gens: &[usize],
) -> Result<(Setup, Vec<Row>)> {
    let opts = pipeline::exec_options(!args.no_graph)?;
    let mut exec = {
        let _task = ui::Task::spinner(&format!(
            "fusing the decode step, uploading weights and compiling kernels on {}",
            dev.name()
        ));
        pipeline::cuda_executor(dev, model, &args.model.build.passes, max_context, opts)?
    };
    let bw = measure_read_bandwidth(dev, exec.weight_bytes())?;
    let mut rows = Vec::new();
    for (p, g) in pairs(prompts, gens) {
        let prompt = bench_prompt(p, model.config.vocab_size);
        let (mut host, mut device_loop) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            let (h, d) = time_gpu(&mut exec, &prompt, g)?;
            host.push(h);
            device_loop.extend(d);
        }
        // Bytes of a step in the middle of the timed range (weights + KV rows + activations).
        let bytes = exec.bytes_per_step(p + g / 2);
        let roofline_us = bytes as f64 / bw * 1e6;
        let tok_s: Vec<f64> = host.iter().map(|us| 1e6 / us).collect();
        let fraction: Vec<f64> = host.iter().map(|us| roofline_us / us).collect();
        rows.push(Row {
            prompt_len: p,
            gen: g,
            tok_s: Stat::of(&tok_s),
            us_per_token: Stat::of(&host),
            gpu: Some(GpuRow {
                device_loop_tok_s: (!device_loop.is_empty())
                    .then(|| Stat::of(&device_loop.iter().map(|us| 1e6 / us).collect::<Vec<_>>())),
                launches: exec.launches_per_step(),
                bytes_per_token: bytes as u64,
                roofline_us,
                fraction: Stat::of(&fraction),
            }),
        });
    }
    let mode = if exec.uses_graph() {
        "cuda graph replay"
    } else {
        "eager launches"
    };
    let setup = Setup {
        model: model.source.clone(),
        device: format!("{} ({})", dev.name(), dev.arch()),
        mode: mode.into(),
        passes: args.model.build.passes.clone(),
        repeat: args.repeat,
        max_context,
        weight_bytes: exec.weight_bytes() as u64,
        read_bandwidth: Some(bw),
        tuning: opts.tuning.to_string(),
    };
    Ok((setup, rows))
}

/// µs per token of the host loop and, in graph mode, of the device loop (the same steps replayed
/// back to back, each feeding its argmax to the next, one synchronisation at the end).
fn time_gpu(exec: &mut CudaExecutor, prompt: &[u32], gen: usize) -> Result<(f64, Option<f64>)> {
    exec.reset()?;
    let mut tok = 0;
    for (pos, &t) in prompt.iter().enumerate() {
        tok = exec.step(t, pos)?;
    }
    let start = Instant::now();
    for pos in prompt.len()..prompt.len() + gen {
        tok = exec.step(tok, pos)?;
    }
    let host = start.elapsed().as_secs_f64() * 1e6 / gen as f64;
    if !exec.uses_graph() {
        return Ok((host, None));
    }
    exec.reset()?;
    let mut first = 0;
    for (pos, &t) in prompt.iter().enumerate() {
        first = exec.step(t, pos)?;
    }
    let start = Instant::now();
    exec.decode_greedy(first, prompt.len(), gen)?;
    Ok((host, Some(start.elapsed().as_secs_f64() * 1e6 / gen as f64)))
}

/// Prints the rows as a Markdown table, CSV or a JSON array.
fn print_rows(
    setup: &Setup,
    rows: &[Row],
    prefill: Option<&PrefillSection>,
    format: BenchFormat,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = setup.repeat;
    let gpu = rows.iter().any(|row| row.gpu.is_some());
    if format == BenchFormat::Json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let mut o = serde_json::json!({
                    "model": setup.model, "device": setup.device, "mode": setup.mode,
                    "passes": setup.passes, "max_context": setup.max_context,
                    "prompt_len": row.prompt_len, "gen": row.gen, "repeat": r,
                    "tok_per_s": row.tok_s.json(), "us_per_token": row.us_per_token.json(),
                    "weight_bytes": setup.weight_bytes, "tuning": setup.tuning,
                });
                if let Some(g) = &row.gpu {
                    o["device_loop_tok_per_s"] = g
                        .device_loop_tok_s
                        .map_or(serde_json::Value::Null, |s| s.json());
                    o["device_loop_roofline_fraction"] =
                        g.device_loop_tok_s.map_or(serde_json::Value::Null, |s| {
                            (s.mean * g.roofline_us / 1e6).into()
                        });
                    o["launches_per_token"] = g.launches.into();
                    o["bytes_per_token"] = g.bytes_per_token.into();
                    o["read_bandwidth_bytes_per_s"] = setup.read_bandwidth.into();
                    o["roofline_us_per_token"] = g.roofline_us.into();
                    o["roofline_fraction"] = g.fraction.json();
                }
                o
            })
            .collect();
        let mut items = items;
        if let Some(p) = prefill {
            for r in &p.rows {
                let (c, m) = p.floors(r);
                let ms = r.ttft.as_secs_f64() * 1e3;
                items.push(serde_json::json!({
                    "kind": "prefill", "model": setup.model, "device": setup.device,
                    "prefill_mode": p.mode, "prompt_len": r.len, "ttft_ms": ms,
                    "tok_per_s": r.len as f64 / (ms * 1e-3), "matmul_flops": r.flops,
                    "bytes": r.bytes, "gemm_flops_per_s": p.gemm_rate,
                    "compute_floor_ms": c, "compute_floor_fraction": c / ms,
                    "memory_floor_ms": m, "memory_floor_fraction": m / ms,
                }));
            }
        }
        writeln!(out, "{}", serde_json::Value::Array(items))?;
        return Ok(out.flush()?);
    }
    let mut header = vec![
        "model",
        "device",
        "mode",
        "passes",
        "prompt",
        "gen",
        "tok/s",
        "µs/token",
    ];
    if gpu {
        header.extend(["device loop tok/s", "launches", "MB/token", "roofline %"]);
    }
    let mut table = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for row in rows {
        let mut cells = vec![
            setup.model.clone(),
            setup.device.clone(),
            setup.mode.clone(),
            setup.passes.clone(),
            row.prompt_len.to_string(),
            row.gen.to_string(),
            row.tok_s.show(1, r),
            row.us_per_token.show(1, r),
        ];
        if let Some(g) = &row.gpu {
            cells.push(
                g.device_loop_tok_s
                    .map_or_else(|| "-".into(), |s| s.show(1, r)),
            );
            cells.push(g.launches.to_string());
            cells.push(format!("{:.1}", g.bytes_per_token as f64 / 1e6));
            let pct = Stat {
                mean: 100.0 * g.fraction.mean,
                std: 100.0 * g.fraction.std,
            };
            cells.push(pct.show(1, r));
        }
        table.push(cells);
    }
    match format {
        BenchFormat::Csv => {
            for cells in &table {
                let quoted: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                writeln!(out, "{}", quoted.join(","))?;
            }
        }
        _ => {
            let widths: Vec<usize> = (0..table[0].len())
                .map(|i| {
                    table
                        .iter()
                        .map(|c| c[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for (k, cells) in table.iter().enumerate() {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(i, (c, &w))| {
                        let pad = w - c.chars().count();
                        // Numbers (from the prompt column on) right-aligned, names left-aligned.
                        if i >= 4 {
                            format!("{}{c}", " ".repeat(pad))
                        } else {
                            format!("{c}{}", " ".repeat(pad))
                        }
                    })
                    .collect();
                writeln!(out, "| {} |", padded.join(" | "))?;
                if k == 0 {
                    let rule: Vec<String> = widths
                        .iter()
                        .enumerate()
                        .map(|(i, &w)| {
                            if i >= 4 {
                                format!("{}:", "-".repeat(w.saturating_sub(1).max(1)))
                            } else {
                                "-".repeat(w.max(1))
                            }
                        })
                        .collect();
                    writeln!(out, "| {} |", rule.join(" | "))?;
                }
            }
            if let (true, Some(bw)) = (gpu, setup.read_bandwidth) {
                writeln!(
                    out,
                    "\nread bandwidth {:.2} TB/s (measured in this run over {:.1} MB, the weights' size); \
                     roofline % = bytes per token / bandwidth over the host loop's time",
                    bw / 1e12,
                    setup.weight_bytes as f64 / 1e6
                )?;
                writeln!(out, "tuning {}", setup.tuning)?;
            }
            if let Some(p) = prefill {
                writeln!(
                    out,
                    "\nprefill: {}; GEMM rate {:.1} TFLOP/s (cuBLAS bf16 8192x8192x8192, measured now)",
                    p.mode,
                    p.gemm_rate / 1e12
                )?;
                for r in &p.rows {
                    let (c, m) = p.floors(r);
                    let ms = r.ttft.as_secs_f64() * 1e3;
                    writeln!(
                        out,
                        "prefill {:<8} TTFT {ms:.2} ms, {:.0} tok/s; compute floor {c:.3} ms ({:.1}%), memory floor {m:.3} ms ({:.1}%)",
                        r.len,
                        r.len as f64 / (ms * 1e-3),
                        100.0 * c / ms,
                        100.0 * m / ms
                    )?;
                }
            }
        }
    }
    Ok(out.flush()?)
}

/// A CSV field, quoted when it holds a comma, a quote or a newline.
fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// `braid profile`: eager steps on the GPU with CUDA events around every launch.
pub fn profile(args: &ProfileArgs) -> Result<()> {
    let model = LoadedModel::load(&args.model.model)?;
    let dev = pipeline::open_gpu().context(
        "braid profile times CUDA kernels and needs an NVIDIA GPU (none is usable here)",
    )?;
    let opts = pipeline::exec_options(false)?;
    let tokens = args.prefill.map(|t| t as usize);
    let needed = args.steps.saturating_add(1).max(tokens.unwrap_or(0));
    // An explicit --max-context wins; otherwise at least what the run needs.
    let max_context = args
        .model
        .build
        .max_context_or(&model.config, needed.max(crate::cli::DEFAULT_MAX_CONTEXT))?;
    if needed > max_context {
        bail!(
            "--steps {} needs {needed} KV-cache rows, more than --max-context {max_context}",
            args.steps
        );
    }
    ui::info(&format!("model {} on {}", model.summary(), dev.name()));
    let mut exec = {
        let _task = ui::Task::spinner(&format!(
            "fusing the decode step, uploading weights and compiling kernels on {}",
            dev.name()
        ));
        pipeline::cuda_executor(&dev, &model, &args.model.build.passes, max_context, opts)?
    };
    let profile = match tokens {
        None => exec.profile(args.steps)?,
        Some(t) => {
            let steps = pipeline::StepGraphs::new(
                &model,
                &args.model.build.passes,
                max_context,
                pipeline::kv_dtype(true),
            );
            let g = steps.graph(t, false)?;
            let mut pf = CudaExecutor::new_sharing(&dev, &g, model.weights()?, &exec, opts)
                .context("setting up the CUDA prefill step")?;
            let prompt = bench_prompt(t, model.config.vocab_size);
            ui::info(&format!(
                "prefill step over {t} tokens (from position 0), {} repetitions",
                args.steps
            ));
            pf.profile_prefill(&prompt, 0, args.steps)?
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "model {} on {} ({}), passes `{}`",
        model.source,
        dev.name(),
        dev.arch(),
        args.model.build.passes
    )?;
    write!(out, "{profile}")?;
    Ok(out.flush()?)
}

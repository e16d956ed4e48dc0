//! `braid bench-chain`: the GEMV-chain benchmark of the persistent mode. A model's matmuls of one
//! decode step (every layer's qkv, o_proj, gate/up and down, then the LM head; distinct random bf16
//! weights), chained, timed in the per-op CUDA graph (PDL), in the persistent kernel, and in the
//! persistent kernel with its dependencies ignored (streaming only), next to a read pass of the
//! same bytes measured in the same run.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use braid_backend_cuda::persistent::{gemv_chain, PersistentExecutor, PersistentOptions};
use braid_backend_cuda::{measure_read_bandwidth, CudaExecutor};
use braid_ir::Tensor;

use crate::cli::ChainArgs;
use crate::load::LoadedModel;
use crate::model::Qwen3Config;
use crate::pipeline;
use crate::reference::rel_l2;

/// The `(rows, cols)` of every matmul of one decode step of `c` (first `layers` layers), in order:
/// qkv packed, o_proj, gate/up packed, down; then the LM head.
pub fn step_matmuls(c: &Qwen3Config, layers: usize) -> Vec<(usize, usize)> {
    let (h, d) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
    let mut s = Vec::new();
    for _ in 0..layers {
        s.extend([
            (q + 2 * kv, h),
            (h, q),
            (2 * c.intermediate_size, h),
            (h, c.intermediate_size),
        ]);
    }
    s.push((c.vocab_size, h));
    s
}

/// One timed mode: µs per step.
fn time(steps: usize, mut run: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    run(10)?;
    let t = Instant::now();
    run(steps)?;
    Ok(t.elapsed().as_secs_f64() * 1e6 / steps as f64)
}

/// Runs `braid bench-chain`.
pub fn bench_chain(args: &ChainArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let model = LoadedModel::load(&args.model)?;
    let layers = args.layers.unwrap_or(model.config.num_hidden_layers);
    let shapes = step_matmuls(&model.config, layers);
    let chain = gemv_chain(&shapes, 0x5eed).context("building the GEMV chain")?;
    let dev =
        pipeline::open_gpu().context("braid bench-chain times GPU kernels and needs a GPU")?;
    let bw = measure_read_bandwidth(&dev, chain.weight_bytes)?;
    let read_us = chain.weight_bytes as f64 / bw * 1e6;
    let x: Vec<f32> = (0..shapes[0].1)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = [("x", Tensor::f32([1, shapes[0].1], x))];

    let mut graph = CudaExecutor::new(
        &dev,
        &chain.graph,
        &chain.weights,
        pipeline::exec_options(true)?,
    )?;
    let want = graph.run(&input)?;
    let graph_us = time(args.steps, |n| Ok(graph.replay(n)?))?;
    let launches = graph.launches_per_step();
    drop(graph);

    let mut pst = PersistentExecutor::new(
        &dev,
        &chain.graph,
        &chain.weights,
        PersistentOptions::default(),
    )?;
    let got = pst.run(&input)?;
    let err = rel_l2(&got[0].data, &want[0].data);
    let pst_us = time(args.steps, |n| Ok(pst.replay(n)?))?;
    let (ctas, insns) = (pst.schedule().ctas, pst.schedule().insns.len());
    drop(pst);

    let opts = PersistentOptions {
        no_deps: true,
        ..PersistentOptions::default()
    };
    let mut stream = PersistentExecutor::new(&dev, &chain.graph, &chain.weights, opts)?;
    let stream_us = time(args.steps, |n| Ok(stream.replay(n)?))?;

    let pct = |us: f64| 100.0 * read_us / us;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model.source, "device": dev.name(), "layers": layers,
                "stages": shapes.len(), "weight_bytes": chain.weight_bytes,
                "read_pass_us": read_us, "read_bandwidth_bytes_per_s": bw,
                "graph_us": graph_us, "graph_launches": launches,
                "persistent_us": pst_us, "persistent_ctas": ctas, "persistent_instructions": insns,
                "streaming_only_us": stream_us, "persistent_vs_graph_rel_l2": err,
            })
        );
        return Ok(());
    }
    println!(
        "chain            {} matmuls of {} ({layers} layers + LM head), {:.1} MB of bf16 weights",
        shapes.len(),
        model.source,
        chain.weight_bytes as f64 / 1e6
    );
    println!("device           {} ({})", dev.name(), dev.arch());
    println!(
        "read pass        {read_us:.1} µs ({:.2} TB/s, the same byte count, measured now)",
        bw / 1e12
    );
    println!(
        "graph + PDL      {graph_us:.1} µs/step = {:.1}% of the read pass ({launches} launches in 1 graph)",
        pct(graph_us)
    );
    println!(
        "persistent       {pst_us:.1} µs/step = {:.1}% ({ctas} CTAs, {insns} instructions, 1 launch)",
        pct(pst_us)
    );
    println!(
        "streaming only   {stream_us:.1} µs/step = {:.1}% (the persistent kernel with its waits ignored)",
        pct(stream_us)
    );
    println!("persistent vs graph: relative L2 {err:.2e} of the last matmul's output");
    if err > 1e-4 {
        bail!(
            "the persistent chain's output differs from the per-op graph's (relative L2 {err:.2e})"
        );
    }
    Ok(())
}

//! Whole decode steps of Qwen3 graphs on the GPU, built by the real lowering (`braid_runtime::decoder`)
//! and passes from Qwen3-0.6B's `config.json` (`models/qwen3-0.6b`), with seeded random bf16 weights
//! ([`Checkpoint::random`]): fused and unfused steps against the interpreter, graph replay against
//! eager, the device-fed loop against step by step, the plan lowered on the live device against the
//! recorded H200 plan, and the speed of the full 28-layer step with its roofline fraction.
//!
//! Run on a GPU machine: `cargo test --release -p braid-runtime --test gpu_decode -- --ignored
//! --nocapture --test-threads=1`.

use std::time::Instant;

use braid_backend_cuda::lower::lower;
use braid_backend_cuda::tuning::GemvKernel;
use braid_backend_cuda::{measure_read_bandwidth, CudaDevice, CudaExecutor, ExecOptions, Target};
use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, Op, Tensor, Value};
use braid_runtime::decoder::{lower_decode_step, LowerOptions, WeightTypes};
use braid_runtime::model::{Checkpoint, Qwen3Config};
use braid_runtime::pipeline::run_passes;
use braid_runtime::reference::rel_l2;
use braid_runtime::sampling::argmax;

fn device() -> CudaDevice {
    CudaDevice::open(0).unwrap_or_else(|e| panic!("{e}"))
}

/// Qwen3-0.6B's config with `layers` layers.
fn config(layers: usize) -> Qwen3Config {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/qwen3-0.6b/config.json"
    );
    let mut c = Qwen3Config::from_file(std::path::Path::new(path)).expect("Qwen3-0.6B config");
    c.num_hidden_layers = layers;
    c
}

/// The decode step of `c` for the GPU (bf16 KV cache), after the passes `spec`.
fn step_graph(c: &Qwen3Config, w: Option<&Checkpoint>, max_context: usize, spec: &str) -> Graph {
    let types = match w {
        Some(w) => WeightTypes::Checkpoint(w),
        None => WeightTypes::Declared(DType::BF16),
    };
    let opts = LowerOptions::decode(max_context, DType::BF16);
    let mut g = lower_decode_step(c, types, opts).expect("lowering");
    run_passes(&mut g, spec, &[], &mut |_, _| {}).expect("passes");
    g
}

fn eager() -> ExecOptions {
    ExecOptions {
        use_graph: false,
        ..ExecOptions::default()
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn two_layer_steps_match_the_interpreter_fused_and_unfused() {
    let c = config(2);
    let w = Checkpoint::random(&c, 11);
    let dev = device();
    let tokens = [151_643u32, 9707, 11, 1879, 0, 42, 151_935, 777];
    let mut fused_logits: Vec<Vec<f32>> = Vec::new();
    for spec in ["default", "none"] {
        let g = step_graph(&c, Some(&w), 64, spec);
        let mut interp = Interpreter::new(&w);
        let mut ex_graph = CudaExecutor::new(&dev, &g, &w, ExecOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ex_eager =
            CudaExecutor::new(&dev, &g, &w, eager()).unwrap_or_else(|e| panic!("{e}"));
        let mut worst = 0.0f64;
        let mut agree = 0;
        for (p, &t) in tokens.iter().enumerate() {
            let ins = [
                ("token", Tensor::i32([1], vec![t as i32])),
                ("position", Tensor::i32([1], vec![p as i32])),
            ];
            let want = interp.run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
            let logits = ex_graph.step_logits(t, p).unwrap_or_else(|e| panic!("{e}"));
            // The step computed its greedy token on the device too; it is the argmax of the logits.
            let device_token = ex_graph.last_token().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                device_token,
                argmax(&logits),
                "{spec} position {p}: device argmax"
            );
            // step() re-runs position p with the same token: same KV row, same result.
            let next_graph = ex_graph.step(t, p).unwrap_or_else(|e| panic!("{e}"));
            let eager_logits = ex_eager.step_logits(t, p).unwrap_or_else(|e| panic!("{e}"));
            let err = rel_l2(&logits, &want[0].data);
            worst = worst.max(err);
            assert!(
                err <= 1e-3,
                "{spec} position {p}: logits relative L2 {err:.3e}"
            );
            assert!(
                logits
                    .iter()
                    .zip(&eager_logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{spec} position {p}: graph replay logits differ from eager"
            );
            let want_next = want[1].ints[0] as u32;
            if next_graph == want_next {
                agree += 1;
            } else {
                // Only a near-tie may flip the greedy token.
                let gap =
                    (want[0].data[want_next as usize] - want[0].data[next_graph as usize]).abs();
                assert!(
                    gap < 1e-3,
                    "{spec} position {p}: next token {next_graph} vs {want_next} (gap {gap})"
                );
            }
            if spec == "default" {
                fused_logits.push(logits);
            } else {
                let e = rel_l2(&logits, &fused_logits[p]);
                assert!(
                    e <= 1e-3,
                    "position {p}: fused vs unfused logits relative L2 {e:.3e}"
                );
            }
        }
        // The device-fed loop produces the same greedy tokens as step() by step().
        ex_eager.reset().unwrap_or_else(|e| panic!("{e}"));
        let mut tok = tokens[0];
        let mut by_step = Vec::new();
        for p in 0..24 {
            tok = ex_eager.step(tok, p).unwrap_or_else(|e| panic!("{e}"));
            by_step.push(tok);
        }
        for ex in [&mut ex_graph, &mut ex_eager] {
            ex.reset().unwrap_or_else(|e| panic!("{e}"));
            let looped = ex
                .decode_greedy(tokens[0], 0, 24)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(looped, by_step, "{spec}: decode_greedy differs from step()");
        }
        println!(
            "ok  {spec} 2-layer Qwen3-0.6B step: {} launches, worst logits relative L2 {worst:.2e}, \
             top-1 agreement {agree}/{}",
            ex_graph.launches_per_step(),
            tokens.len()
        );
    }
}

/// The plan lowered with the live device's facts and driver occupancy equals the plan for the
/// recorded H200 (`Target::h200`, what `braid plan` and the CI snapshots use), launch for launch.
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn live_plan_matches_the_recorded_h200_plan() {
    let dev = device();
    for layers in [28] {
        let c = config(layers);
        let g = step_graph(&c, None, 1024, "default");
        let tuning = braid_backend_cuda::Tuning::default();
        let live = lower(&g, &dev.target().expect("live target"), &tuning).expect("plan");
        let recorded = lower(&g, &Target::h200(), &tuning).expect("plan");
        assert_eq!(
            live.facts.sm_count, recorded.facts.sm_count,
            "{}",
            live.facts.name
        );
        assert_eq!(live.launches.len(), recorded.launches.len());
        for (a, b) in live.launches.iter().zip(&recorded.launches) {
            assert_eq!(a, b, "live and recorded launches differ");
        }
        println!(
            "ok  live plan on {} equals the recorded H200 plan ({} launches)",
            live.facts.name,
            live.launches.len()
        );
    }
}

/// The fused step with every attention replaced by its q input: the step without attention, to
/// time the rest (a diagnostic graph, not a model).
fn without_attention(g: &Graph) -> Graph {
    let mut g = g.clone();
    let atts: Vec<Value> = g
        .node_indices()
        .into_iter()
        .filter(|&n| matches!(g.node(n).map(|x| &x.op), Some(Op::Attention { .. })))
        .map(Value::of)
        .collect();
    for a in atts {
        let q = g.inputs(a.node)[0];
        g.replace_all_uses(a, q);
    }
    g.remove_dead();
    g
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn full_depth_decode_speed_and_roofline() {
    let max_ctx = 4096;
    let c = config(28);
    let started = Instant::now();
    let w = Checkpoint::random(&c, 12);
    let g = step_graph(&c, Some(&w), max_ctx, "default");
    let g_no_attention = without_attention(&g);
    println!(
        "built the 28-layer fused graph and random weights in {:.1?}",
        started.elapsed()
    );
    let dev = device();
    let n = 256;
    let graph = ExecOptions::default();
    let staged = ExecOptions {
        tuning: braid_backend_cuda::Tuning {
            gemv_kernel: GemvKernel::Staged,
            ..Default::default()
        },
        ..graph
    };
    let no_pdl = ExecOptions {
        pdl: false,
        ..graph
    };
    let modes: Vec<(&str, &Graph, ExecOptions)> = vec![
        ("graph+PDL", &g, graph),
        ("  gemv staged", &g, staged),
        ("  no attention", &g_no_attention, graph),
        ("graph, no PDL", &g, no_pdl),
        ("eager+PDL", &g, eager()),
    ];
    let mut rows = Vec::new();
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut floor_us = 0.0;
    for (label, g, opts) in modes {
        let t0 = Instant::now();
        let mut ex =
            CudaExecutor::new(&dev, g, &w, opts).unwrap_or_else(|e| panic!("{label}: {e}"));
        let setup = t0.elapsed();
        // Warm-up, then a greedy run from position 0 through step() (host round trip per token).
        ex.decode_greedy(9707, 0, 8)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        ex.reset().unwrap_or_else(|e| panic!("{e}"));
        let mut tok = 9707u32;
        let mut seq = Vec::new();
        let t = Instant::now();
        for p in 0..n {
            tok = ex.step(tok, p).unwrap_or_else(|e| panic!("{label}: {e}"));
            seq.push(tok);
        }
        let step_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        // The same run on the device-fed loop.
        ex.reset().unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let looped = ex
            .decode_greedy(9707, 0, n)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let loop_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        assert_eq!(looped, seq, "{label}: decode_greedy differs from step()");
        if !label.contains("no attention") {
            sequences.push(seq);
        }
        if floor_us == 0.0 {
            let bw =
                measure_read_bandwidth(&dev, ex.weight_bytes()).unwrap_or_else(|e| panic!("{e}"));
            floor_us = ex.weight_bytes() as f64 / bw * 1e6;
            println!(
                "weights {:.3} GB, read bandwidth {:.2} TB/s, roofline {floor_us:.0} µs/token ({:.0} tok/s), \
                 {} launches/step, {:.3} GB/step at position {}",
                ex.weight_bytes() as f64 / 1e9,
                bw / 1e12,
                1e6 / floor_us,
                ex.launches_per_step(),
                ex.bytes_per_step(n / 2) as f64 / 1e9,
                n / 2
            );
            let prof = ex.profile(16).unwrap_or_else(|e| panic!("{e}"));
            println!("{prof}");
        }
        rows.push((label, step_us, loop_us, setup));
    }
    println!(
        "{:<18} {:>12} {:>9} {:>15} {:>9} {:>9}",
        "mode", "step() µs/tok", "tok/s", "decode_greedy µs", "tok/s", "roofline"
    );
    for (label, step_us, loop_us, setup) in &rows {
        println!(
            "{label:<18} {step_us:>12.1} {:>9.0} {loop_us:>15.1} {:>9.0} {:>8.1}% (setup {setup:.1?})",
            1e6 / step_us,
            1e6 / loop_us,
            100.0 * floor_us / loop_us
        );
    }
    for s in &sequences[1..] {
        assert_eq!(s, &sequences[0], "greedy tokens differ between executors");
    }
}

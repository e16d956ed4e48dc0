//! Whole decode steps of Qwen3-shaped graphs (random weights, the real Qwen3-0.6B sizes): the fused
//! and the unfused graph against the interpreter, graph replay against eager, and the speed of the
//! full 28-layer step with its roofline fraction.
//!
//! Run on a GPU machine: `cargo test --release -p braid-backend-cuda --test gpu_decode -- --ignored
//! --nocapture --test-threads=1`.

mod common;

use std::time::Instant;

use braid_backend_cuda::{measure_read_bandwidth, CudaExecutor, ExecOptions};
use braid_ir::interp::Interpreter;
use braid_ir::Tensor;
use common::*;

fn eager() -> ExecOptions {
    ExecOptions {
        use_graph: false,
        pdl: true,
        sync_each_launch: false,
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn two_layer_steps_match_the_interpreter_fused_and_unfused() {
    let shape = Shape::qwen3_0_6b(2, 64);
    let dev = device();
    let tokens = [151_643u32, 9707, 11, 1879, 0, 42, 151_935, 777];
    let mut fused_logits: Vec<Vec<f32>> = Vec::new();
    for fused in [true, false] {
        let (g, w) = qwen3_graph(&shape, fused, 11);
        let mut interp = Interpreter::new(&w);
        let mut ex_graph = CudaExecutor::new(&dev, &g, &w, ExecOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut ex_eager =
            CudaExecutor::new(&dev, &g, &w, eager()).unwrap_or_else(|e| panic!("{e}"));
        let label = if fused { "fused" } else { "unfused" };
        let mut worst = 0.0f64;
        let mut agree = 0;
        for (p, &t) in tokens.iter().enumerate() {
            let ins = [
                ("token", Tensor::i32([1], vec![t as i32])),
                ("position", Tensor::i32([1], vec![p as i32])),
            ];
            let want = interp.run(&g, &ins).unwrap_or_else(|e| panic!("{e}"));
            let logits = ex_graph.step_logits(t, p).unwrap_or_else(|e| panic!("{e}"));
            let next_graph = ex_graph.step(t, p);
            // step() above re-ran position p with the same token: same KV row, same result.
            let next_graph = next_graph.unwrap_or_else(|e| panic!("{e}"));
            let eager_logits = ex_eager.step_logits(t, p).unwrap_or_else(|e| panic!("{e}"));
            let err = rel_l2(&logits, &want[0].data);
            worst = worst.max(err);
            assert!(
                err <= 1e-3,
                "{label} position {p}: logits relative L2 {err:.3e}"
            );
            assert!(
                logits
                    .iter()
                    .zip(&eager_logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{label} position {p}: graph replay logits differ from eager"
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
                    "{label} position {p}: next token {next_graph} vs {want_next} (gap {gap})"
                );
            }
            if fused {
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
            assert_eq!(
                looped, by_step,
                "{label}: decode_greedy differs from step()"
            );
        }
        println!(
            "ok  {label} 2-layer Qwen3-0.6B-shaped step: {} launches, worst logits relative L2 {worst:.2e}, \
             top-1 agreement {agree}/{}",
            ex_graph.launches_per_step(),
            tokens.len()
        );
    }
}

/// A benchmark mode: label, graph (0 = full step, 1 = step without attention), options, tuning
/// knobs to set.
type Mode<'a> = (&'a str, usize, ExecOptions, Vec<(&'a str, &'a str)>);

const KNOBS: [&str; 8] = [
    "BRAID_GEMV_ROWS2",
    "BRAID_GEMV_BULK_BLOCKS_PER_SM",
    "BRAID_ATT_MIN_CHUNK",
    "BRAID_GEMV_BLOCKS_PER_SM",
    "BRAID_GEMV_MAX_WPR",
    "BRAID_L2_PREFETCH",
    "BRAID_ATT_SPLITS",
    "BRAID_GEMV_KERNEL",
];

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn full_depth_decode_speed_and_roofline() {
    let max_ctx = 4096;
    let shape = Shape::qwen3_0_6b(28, max_ctx);
    let started = Instant::now();
    let (g, w) = qwen3_graph(&shape, true, 12);
    let (g_no_attention, _) = qwen3_graph(
        &Shape {
            attention: false,
            ..shape
        },
        true,
        12,
    );
    println!(
        "built the 28-layer fused graph and random weights in {:.1?}",
        started.elapsed()
    );
    let dev = device();
    let n = 256;
    let graph = ExecOptions::default();
    let no_pdl = ExecOptions {
        pdl: false,
        ..ExecOptions::default()
    };
    let modes: Vec<Mode> = vec![
        ("graph+PDL", 0, graph, vec![]),
        ("  gemv smem", 0, graph, vec![("BRAID_GEMV_KERNEL", "smem")]),
        ("  no attention", 1, graph, vec![]),
        ("graph, no PDL", 0, no_pdl, vec![]),
        ("eager+PDL", 0, eager(), vec![]),
    ];
    let mut rows = Vec::new();
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut floor_us = 0.0;
    for (label, which, opts, env) in modes {
        let g = if which == 0 { &g } else { &g_no_attention };
        for k in KNOBS {
            std::env::remove_var(k);
        }
        for (k, v) in &env {
            std::env::set_var(k, v);
        }
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
        if which == 0 {
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
        println!(
            "{label:<18} step() {step_us:>7.1} µs/tok ({:>5.0} tok/s), decode_greedy {loop_us:>7.1} µs/tok \
             ({:>5.0} tok/s), setup {setup:.1?}",
            1e6 / step_us,
            1e6 / loop_us
        );
        rows.push((label, step_us, loop_us, setup));
    }
    for k in KNOBS {
        std::env::remove_var(k);
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

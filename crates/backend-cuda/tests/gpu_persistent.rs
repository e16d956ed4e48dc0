//! The persistent kernel on the GPU: a GEMV chain (two Qwen3-0.6B layers' matmuls and an LM head)
//! against the interpreter and the per-op graph, across repeated steps (counters count up, never
//! reset); a broken schedule times out with a message naming the instruction and the counter, and
//! the executor stays usable.
//!
//! Run on a GPU machine: `cargo test --release -p braid-backend-cuda --test gpu_persistent --
//! --ignored --nocapture`.

mod common;

use std::time::Instant;

use braid_backend_cuda::persistent::{gemv_chain, PersistentExecutor, PersistentOptions};
use braid_backend_cuda::{CudaError, CudaExecutor, ExecOptions};
use braid_ir::interp::Interpreter;
use braid_ir::Tensor;
use common::*;

fn shapes(layers: usize, vocab: usize) -> Vec<(usize, usize)> {
    let mut s = Vec::new();
    for _ in 0..layers {
        s.extend([(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)]);
    }
    s.push((vocab, 1024));
    s
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn a_gemv_chain_matches_the_interpreter_and_the_graph_over_many_steps() {
    let chain = gemv_chain(&shapes(2, 151_936), 7).expect("chain");
    let dev = device();
    let mut rng = Rng::new(5);
    let mut pst = PersistentExecutor::new(
        &dev,
        &chain.graph,
        &chain.weights,
        PersistentOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut graph = CudaExecutor::new(&dev, &chain.graph, &chain.weights, ExecOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut interp = Interpreter::new(&chain.weights);
    for step in 0..4 {
        let x = Tensor::f32([1, 1024], rng.vec(1024, 1.0));
        let ins = [("x", x)];
        let want = interp.run(&chain.graph, &ins).expect("interpreter");
        let got = pst.run(&ins).unwrap_or_else(|e| panic!("step {step}: {e}"));
        let ref_graph = graph.run(&ins).unwrap_or_else(|e| panic!("{e}"));
        let e = rel_l2(&got[0].data, &want[0].data);
        let eg = rel_l2(&got[0].data, &ref_graph[0].data);
        assert!(
            e <= 1e-4,
            "step {step}: persistent vs interpreter rel L2 {e:.3e}"
        );
        assert!(
            eg <= 1e-4,
            "step {step}: persistent vs graph rel L2 {eg:.3e}"
        );
        println!("ok  step {step}: rel L2 {e:.2e} vs interpreter, {eg:.2e} vs the per-op graph");
    }
    // Many steps back to back (the epoch keeps every wait's target ahead), then still right.
    pst.replay(50).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::f32([1, 1024], rng.vec(1024, 1.0));
    let want = interp
        .run(&chain.graph, &[("x", x.clone())])
        .expect("interpreter");
    let got = pst.run(&[("x", x)]).unwrap_or_else(|e| panic!("{e}"));
    assert!(rel_l2(&got[0].data, &want[0].data) <= 1e-4);
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn a_wait_that_cannot_be_met_times_out_with_a_message_and_no_hang() {
    let chain = gemv_chain(&shapes(1, 4096), 8).expect("chain");
    let dev = device();
    let opts = PersistentOptions {
        break_waits: true,
        ..PersistentOptions::default()
    };
    let mut pst = PersistentExecutor::new(&dev, &chain.graph, &chain.weights, opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let e = pst.replay(1).expect_err("a broken wait must time out");
    let secs = t.elapsed().as_secs_f64();
    let msg = e.to_string();
    assert!(matches!(e, CudaError::Timeout(_)), "{msg}");
    assert!(
        msg.contains("instruction") && msg.contains("counter") && msg.contains("saw"),
        "{msg}"
    );
    assert!(secs < 30.0, "the timeout took {secs:.1} s");
    println!("ok  timed out after {secs:.2} s: {msg}");
    // The counters were reset: the next launch times out the same way instead of hanging.
    let e = pst.replay(1).expect_err("still broken");
    assert!(matches!(e, CudaError::Timeout(_)));
    // A correct executor on the same device works after it.
    let mut ok = PersistentExecutor::new(
        &dev,
        &chain.graph,
        &chain.weights,
        PersistentOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ok.replay(3).unwrap_or_else(|e| panic!("{e}"));
}

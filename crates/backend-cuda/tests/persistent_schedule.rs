//! The persistent schedule on the CPU (no GPU): built for a recorded H200 from GEMV-chain graphs,
//! printed, validated, and its timeout record turned into a message.

use braid_backend_cuda::params::PersistentError;
use braid_backend_cuda::persistent::{describe_timeout, gemv_chain, schedule};
use braid_backend_cuda::Target;

/// Qwen3-0.6B's matmul shapes for `layers` layers and the LM head.
fn qwen3_0_6b(layers: usize) -> Vec<(usize, usize)> {
    let mut s = Vec::new();
    for _ in 0..layers {
        s.extend([(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)]);
    }
    s.push((151_936, 1024));
    s
}

#[test]
fn a_qwen3_chain_schedules_every_row_once_in_stage_order() {
    let chain = gemv_chain(&qwen3_0_6b(2), 1).expect("chain");
    let s = schedule(&chain.graph, &Target::h200()).expect("schedule");
    s.validate().expect("valid");
    assert_eq!(s.ctas, 132);
    assert_eq!(s.stages.len(), 9);
    // Every row of every stage in exactly one instruction.
    for (i, st) in s.stages.iter().enumerate() {
        let mut rows: Vec<(i32, i32)> = s
            .insns
            .iter()
            .filter(|q| q.signal_counter == i as i32)
            .map(|q| (q.row0, q.rows))
            .collect();
        rows.sort();
        let mut at = 0;
        for (r0, n) in rows {
            assert_eq!(r0, at, "stage {i}: rows not contiguous");
            at += n;
        }
        assert_eq!(at as usize, st.n, "stage {i}");
        if i > 0 {
            assert_eq!(st.producer, Some(i - 1));
        }
    }
    // The LM head streams in slices of at most half the ring.
    assert!(s.stages[8].insns > 132);
    insta::assert_snapshot!(s.text());
}

#[test]
fn schedules_refuse_graphs_they_cannot_run_and_broken_waits() {
    // A chain whose second matmul reads the graph input is not a chain.
    let chain = gemv_chain(&[(64, 64), (64, 64)], 2).expect("chain");
    let mut g = chain.graph.clone();
    let x = braid_ir::Value::of(g.topo_order()[0]);
    let second = g
        .topo_order()
        .into_iter()
        .filter(|&n| matches!(g.node(n).map(|v| &v.op), Some(braid_ir::Op::MatMul)))
        .nth(1)
        .expect("two matmuls");
    let first_in = g.inputs(second)[0];
    g.replace_all_uses(first_in, x);
    // Keep the first matmul alive: both are results.
    let last = g.results()[0];
    g.set_results(vec![first_in, last]);
    let e = schedule(&g, &Target::h200()).unwrap_err().to_string();
    assert!(e.contains("reads a graph input"), "{e}");
    // A wait no stage can satisfy is caught before it can hang.
    let mut s = schedule(&chain.graph, &Target::h200()).expect("schedule");
    let q = s
        .insns
        .iter_mut()
        .find(|q| q.wait_counter >= 0)
        .expect("a wait");
    q.wait_target += 1;
    let e = s.validate().unwrap_err();
    assert!(e.contains("cannot give"), "{e}");
}

#[test]
fn a_timeout_record_names_the_instruction_the_counter_and_the_values() {
    let chain = gemv_chain(&qwen3_0_6b(1), 3).expect("chain");
    let s = schedule(&chain.graph, &Target::h200()).expect("schedule");
    let i = s
        .insns
        .iter()
        .position(|q| q.signal_counter == 2)
        .expect("stage 2");
    let e = PersistentError {
        code: 1,
        abort: 1,
        insn: i as i32,
        counter: 1,
        expected: 264,
        seen: 131,
        cta: 0,
        pad_: 0,
    };
    let msg = describe_timeout(&e, &s);
    assert!(
        msg.contains(&format!("instruction {i} (stage 2"))
            && msg.contains("counter 1")
            && msg.contains("reach 264")
            && msg.contains("saw 131"),
        "{msg}"
    );
}

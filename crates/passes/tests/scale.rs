//! Fusion at Qwen3-0.6B's depth and width: fast, and still 6 kernel launches per layer (the
//! extraction's cost trade-offs depend on tensor sizes, so the real dimensions are checked too).

mod common;

use std::time::Instant;

use braid_passes::graph_cost;
use common::{
    decoder_ir, launching_kinds, launching_nodes, matmul_weight_reads, parse_ir, qwen3_ir,
    qwen3_ir_dims, run_passes, QWEN3, QWEN3_0_6B,
};

#[test]
fn twenty_eight_layers_fuse_quickly() {
    let g = parse_ir(&qwen3_ir(28));
    let start = Instant::now();
    let fused = run_passes(&g, "default");
    let elapsed = start.elapsed();
    assert_eq!(launching_nodes(&fused), 6 * 28 + 3);
    // Generous bound for a debug-profile test on a shared CPU; typically well under a second.
    assert!(elapsed.as_secs_f64() < 30.0, "fusion took {elapsed:?}");
}

#[test]
fn qwen3_0_6b_dimensions_reach_six_launches_per_layer() {
    let g = parse_ir(&qwen3_ir_dims(28, QWEN3_0_6B));
    let fused = run_passes(&g, "default");
    assert_eq!(launching_nodes(&fused), 6 * 28 + 3);
    assert_eq!(matmul_weight_reads(&fused), matmul_weight_reads(&g));
    let (before, after) = (graph_cost(&g), graph_cost(&fused));
    // 18 per layer (4 norms, 7 matmuls, 2 ropes, attention, 2 adds, silu, mul) + embedding, final
    // norm, lm_head, argmax.
    assert_eq!(before.launches, 18 * 28 + 4);
    assert!(after.bytes < before.bytes);
    assert!(after.time_us() < before.time_us());
}

#[test]
fn qwen3_0_6b_prefill_chunks_fuse_like_decode() {
    // Larger T makes the q/k/v split copy dearer; the merge must still win at real widths.
    let decode = run_passes(&parse_ir(&decoder_ir(2, QWEN3_0_6B, QWEN3)), "default");
    for t in [2, 16, 128] {
        let prefill_unfused = parse_ir(&decoder_ir(2, QWEN3_0_6B, QWEN3.prefill(t)));
        let prefill = run_passes(&prefill_unfused, "default");
        let mut kinds = launching_kinds(&prefill);
        assert_eq!(kinds.remove(&braid_ir::OpKind::Split), Some(2), "T = {t}");
        assert_eq!(kinds, launching_kinds(&decode), "T = {t}");
        assert_eq!(
            matmul_weight_reads(&prefill),
            matmul_weight_reads(&prefill_unfused)
        );
    }
}

/// Fuses `g` with every rule and the given window size.
fn fuse_windowed(g: &braid_ir::Graph, window_nodes: usize) -> (braid_ir::Graph, usize) {
    let limits = braid_passes::FusionLimits {
        window_nodes,
        ..braid_passes::FusionLimits::default()
    };
    let (fused, report) =
        braid_passes::fuse(g, &braid_passes::rules::all_rules(), &limits).expect("fusion runs");
    assert_eq!(report.stop_reason, "Saturated");
    (fused, report.windows)
}

/// Asserts two graphs print the same, showing the first line that differs (the texts are long).
fn assert_same_text(got: &braid_ir::Graph, want: &braid_ir::Graph) {
    let (got, want) = (common::text(got), common::text(want));
    if let Ok(dir) = std::env::var("BRAID_DUMP") {
        std::fs::write(format!("{dir}/got.ir"), &got).unwrap();
        std::fs::write(format!("{dir}/want.ir"), &want).unwrap();
    }
    if let Some((i, (a, b))) = got
        .lines()
        .zip(want.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!("line {}: windowed\n  {a}\nwhole graph\n  {b}", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

#[test]
fn windowed_fusion_prints_the_whole_graph_fusion() {
    // Windows as small as they get (a cut at every residual value) against one e-graph for the
    // whole step, at the real widths and at the tiny ones: the same graph, printed identically.
    for g in [
        parse_ir(&qwen3_ir_dims(28, QWEN3_0_6B)),
        parse_ir(&qwen3_ir(9)),
    ] {
        let (whole, one) = fuse_windowed(&g, usize::MAX);
        assert_eq!(one, 1);
        let (cut, windows) = fuse_windowed(&g, 1);
        assert!(windows > 9, "only {windows} windows");
        assert_same_text(&cut, &whole);
        let (default, _) = fuse_windowed(&g, braid_passes::fusion::DEFAULT_WINDOW_NODES);
        assert_same_text(&default, &whole);
    }
}

#[test]
fn five_hundred_twelve_layers_fuse_in_time_linear_in_depth() {
    let time = |layers: usize| {
        let g = parse_ir(&qwen3_ir(layers));
        let start = Instant::now();
        let fused = run_passes(&g, "default");
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(launching_nodes(&fused), 6 * layers + 3);
        elapsed
    };
    let t64 = time(64);
    let t512 = time(512);
    // 8x the depth: linear is ~8x; the whole-graph e-graph took ~50x. Generous for a shared CPU.
    assert!(
        t512 < 24.0 * t64.max(0.05),
        "64 layers {t64:.2} s, 512 layers {t512:.2} s"
    );
    assert!(t512 < 120.0, "512 layers took {t512:.1} s");
}

#[test]
fn a_graph_without_clean_cuts_is_cut_anyway_and_kept_intact() {
    // A chain of 3000 silu: every value has one reader, so no cut is clean; the windows are cut
    // at their size bound instead, and the chain comes back as it was.
    let n = 3000;
    let mut s = String::from("%x0 = input \"x\" : f32[1, 8]\n");
    for i in 0..n {
        s += &format!("%x{} = silu(%x{i}) : f32[1, 8]\n", i + 1);
    }
    s += &format!("return %x{n}\n");
    let g = parse_ir(&s);
    let (fused, windows) = fuse_windowed(&g, 100);
    assert!(windows >= 2, "{windows} windows");
    assert_same_text(&fused, &g);
}

#[test]
fn values_crossing_a_forced_cut_reach_every_window_that_reads_them() {
    // Two chains of rms_norm joined at the end: the first chain's last value crosses every cut of
    // the second chain to reach the final add (the chains' gains differ, so no nodes merge), and a
    // value from the middle of the first chain is a result too.
    let n = 1500;
    let mut s = String::from(
        "weight @ga : f32[8]\nweight @gb : f32[8]\n%x = input \"x\" : f32[1, 8]\n%a0 = silu(%x) : f32[1, 8]\n%b0 = add(%x, %x) : f32[1, 8]\n",
    );
    for i in 0..n {
        for c in ["a", "b"] {
            s += &format!(
                "%{c}{} = rms_norm(%{c}{i}, @g{c}) {{eps = 1e-6}} : f32[1, 8]\n",
                i + 1
            );
        }
    }
    s += &format!(
        "%y = add(%a{n}, %b{n}) : f32[1, 8]\nreturn %y, %a{}\n",
        n / 2
    );
    let g = parse_ir(&s);
    let (fused, windows) = fuse_windowed(&g, 100);
    assert!(windows >= 2, "{windows} windows");
    assert_same_text(&fused, &g);
    common::assert_equivalent(&g, &fused, 5, 1);
}

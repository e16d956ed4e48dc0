//! The interpreter's primitive ops against hand-computed values.

mod interp_common;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Op, RopeScaling, Tensor};
use interp_common::{assert_close, f32s, pos, rel_l2, Builder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Runs `b`'s graph once and returns its results.
fn run(b: &Builder, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
    Interpreter::new(&b.weights)
        .run(&b.g, inputs)
        .expect("graph runs")
}

#[test]
fn embedding_looks_up_rows() {
    let mut b = Builder::new();
    let table = b.weight(
        "embed",
        DType::BF16,
        &[3, 2],
        &[0.5, 1.0, 2.0, -3.0, 4.5, 8.0],
    );
    let ids = b.input("ids", DType::I32, &[2]);
    let e = b.op(Op::Embedding, &[table, ids]);
    b.results(&[e]);
    let out = run(&b, &[("ids", Tensor::i32([2], vec![2, 0]))]);
    assert_eq!(out[0].ty.shape, [2, 2]);
    assert_eq!(out[0].data, [4.5, 8.0, 0.5, 1.0]);
}

#[test]
fn embedding_id_out_of_range_names_op_and_id() {
    let mut b = Builder::new();
    let table = b.weight("embed", DType::F32, &[3, 2], &[1.0; 6]);
    let ids = b.input("ids", DType::I32, &[1]);
    let e = b.op(Op::Embedding, &[table, ids]);
    b.results(&[e]);
    let mut it = Interpreter::new(&b.weights);
    for bad in [3, -1] {
        let err = it
            .run(&b.g, &[("ids", Tensor::i32([1], vec![bad]))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("= embedding"), "{err}");
        assert!(err.contains(&format!("id {bad}")), "{err}");
    }
}

#[test]
fn rms_norm_matches_closed_form() {
    // Row [3, 4]: mean(x²) = 12.5, so x / rms = [3, 4] / sqrt(12.5); times w = [1, 2].
    // Row [1, -1]: rms = 1, so the output is w * x = [1, -2].
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 2]);
    let w = b.weight("g", DType::BF16, &[2], &[1.0, 2.0]);
    let y = b.op(Op::RmsNorm { eps: 0.0 }, &[x, w]);
    b.results(&[y]);
    let out = run(&b, &[("x", f32s(&[2, 2], &[3.0, 4.0, 1.0, -1.0]))]);
    let r = 12.5f32.sqrt();
    assert_close(&out[0].data, &[3.0 / r, 2.0 * 4.0 / r, 1.0, -2.0], 1e-6);
}

#[test]
fn rms_norm_eps_enters_under_the_root() {
    // x = [1, 1], eps = 3: 1 / sqrt(1 + 3) = 0.5.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 2]);
    let w = b.weight("g", DType::F32, &[2], &[1.0, 1.0]);
    let y = b.op(Op::RmsNorm { eps: 3.0 }, &[x, w]);
    b.results(&[y]);
    let out = run(&b, &[("x", f32s(&[1, 2], &[1.0, 1.0]))]);
    assert_close(&out[0].data, &[0.5, 0.5], 1e-7);
}

#[test]
fn matmul_is_x_times_w_transposed() {
    // w rows [1, 0, -1] and [2, 1, 0.5]; x rows [1, 2, 3] and [-1, 0, 4].
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 3]);
    let w = b.weight("w", DType::BF16, &[2, 3], &[1.0, 0.0, -1.0, 2.0, 1.0, 0.5]);
    let y = b.op(Op::MatMul, &[x, w]);
    b.results(&[y]);
    let out = run(
        &b,
        &[("x", f32s(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 4.0]))],
    );
    assert_eq!(out[0].ty.shape, [2, 2]);
    assert_eq!(out[0].data, [-2.0, 5.5, -5.0, 0.0]);
}

#[test]
fn large_threaded_matmul_matches_f64_reference() {
    // n * k = 1.1M elements: large enough for the threaded path; k = 1001 leaves a dot-product tail.
    let (n, k) = (1100, 1001);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let xs = interp_common::random(&mut rng, 2 * k);
    let ws = interp_common::random(&mut rng, n * k);
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, k]);
    let w = b.weight("w", DType::F32, &[n, k], &ws);
    let y = b.op(Op::MatMul, &[x, w]);
    b.results(&[y]);
    let out = run(&b, &[("x", f32s(&[2, k], &xs))]);
    let want: Vec<f32> = (0..2)
        .flat_map(|r| {
            let (xs, ws) = (&xs, &ws);
            (0..n).map(move |j| {
                (0..k)
                    .map(|i| xs[r * k + i] as f64 * ws[j * k + i] as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect();
    let err = rel_l2(&out[0].data, &want);
    assert!(err <= 1e-6, "relative L2 {err}");
}

#[test]
fn add_mul_silu_elementwise() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 3]);
    let y = b.input("y", DType::F32, &[1, 3]);
    let s = b.op(Op::Add, &[x, y]);
    let m = b.op(Op::Mul, &[x, y]);
    let a = b.op(Op::Silu, &[x]);
    b.results(&[s, m, a]);
    let out = run(
        &b,
        &[
            ("x", f32s(&[1, 3], &[0.0, 1.0, -1.0])),
            ("y", f32s(&[1, 3], &[2.0, -3.0, 0.5])),
        ],
    );
    assert_eq!(out[0].data, [2.0, -2.0, -0.5]);
    assert_eq!(out[1].data, [0.0, -3.0, -0.5]);
    // silu(1) = 1 / (1 + e^-1); silu(-1) = -1 / (1 + e).
    let e = std::f32::consts::E;
    assert_close(
        &out[2].data,
        &[0.0, 1.0 / (1.0 + 1.0 / e), -1.0 / (1.0 + e)],
        1e-6,
    );
}

#[test]
fn add_and_mul_broadcast_one_row_over_every_row() {
    // PyTorch `x + bias`: b [n] against a [.., n]; a bf16 weight works as b like any float.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 3]);
    let x3 = b.input("x3", DType::F32, &[2, 1, 3]);
    let bias = b.weight("bias", DType::BF16, &[3], &[1.0, -2.0, 0.5]);
    let s = b.op(Op::Add, &[x, bias]);
    let m = b.op(Op::Mul, &[x, bias]);
    let s3 = b.op(Op::Add, &[x3, bias]);
    b.results(&[s, m, s3]);
    let xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let out = run(
        &b,
        &[("x", f32s(&[2, 3], &xs)), ("x3", f32s(&[2, 1, 3], &xs))],
    );
    assert_eq!(out[0].ty.shape, [2, 3]);
    assert_eq!(out[0].data, [1.0, -1.0, 2.5, 4.0, 2.0, 5.5]);
    assert_eq!(out[1].data, [0.0, -2.0, 1.0, 3.0, -8.0, 2.5]);
    assert_eq!(out[2].ty.shape, [2, 1, 3]);
    assert_eq!(out[2].data, out[0].data);
    // Only b broadcasts, only as one row of a's last dimension.
    for (a_shape, b_shape) in [(&[3][..], &[2, 3][..]), (&[2, 3], &[2]), (&[2, 3], &[1, 3])] {
        let mut g = Builder::new();
        let a = g.input("a", DType::F32, a_shape);
        let c = g.input("b", DType::F32, b_shape);
        let err = g.g.add1(Op::Add, &[a, c]).unwrap_err().to_string();
        assert!(err.contains("add expects b of a's shape or ["), "{err}");
    }
}

/// A graph `rope(x [heads, d], position)`.
fn rope_graph(heads: usize, d: usize, theta: f32) -> Builder {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[heads, d]);
    let p = b.input("position", DType::I32, &[1]);
    let y = b.op(
        Op::Rope {
            theta,
            scaling: RopeScaling::Default,
        },
        &[x, p],
    );
    b.results(&[y]);
    b
}

#[test]
fn rope_at_position_zero_is_identity() {
    let b = rope_graph(2, 4, 10000.0);
    let xs = [0.3, -1.2, 2.5, 0.7, -0.4, 0.9, 1.1, -2.0];
    let out = run(&b, &[("x", f32s(&[2, 4], &xs)), ("position", pos(0))]);
    assert_eq!(out[0].data, xs);
}

#[test]
fn rope_with_d2_theta1_rotates_by_position_radians() {
    // d = 2, theta = 1: inv_freq = 1, so position 1 rotates (x0, x1) by 1 radian.
    let b = rope_graph(2, 2, 1.0);
    let out = run(
        &b,
        &[
            ("x", f32s(&[2, 2], &[1.0, 0.0, 0.0, 1.0])),
            ("position", pos(1)),
        ],
    );
    let (c, s) = (1.0f32.cos(), 1.0f32.sin());
    assert_close(&out[0].data, &[c, s, -s, c], 1e-6);
}

#[test]
fn rope_uses_rotate_half_pairs_and_inverse_frequencies() {
    // d = 4, theta = 100: pair (x0, x2) has inv_freq 1, pair (x1, x3) has 1/100^(2/4) = 0.1.
    // At position 2 the angles are 2 and 0.2 radians.
    let b = rope_graph(1, 4, 100.0);
    let xs = [1.0, 2.0, 3.0, 4.0];
    let out = run(&b, &[("x", f32s(&[1, 4], &xs)), ("position", pos(2))]);
    let (c0, s0) = (2.0f32.cos(), 2.0f32.sin());
    let (c1, s1) = (0.2f32.cos(), 0.2f32.sin());
    let want = [
        1.0 * c0 - 3.0 * s0,
        2.0 * c1 - 4.0 * s1,
        3.0 * c0 + 1.0 * s0,
        4.0 * c1 + 2.0 * s1,
    ];
    assert_close(&out[0].data, &want, 1e-6);
}

#[test]
fn reshape_keeps_data() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 6]);
    let y = b.op(Op::Reshape { shape: vec![3, 2] }, &[x]);
    b.results(&[y]);
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let out = run(&b, &[("x", f32s(&[1, 6], &xs))]);
    assert_eq!(out[0].ty.shape, [3, 2]);
    assert_eq!(out[0].data, xs);
}

#[test]
fn split_along_inner_and_outer_axes() {
    // x = [[1, 2, 3], [4, 5, 6]].
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 3]);
    let cols = b.op_n(
        Op::Split {
            axis: 1,
            sizes: vec![1, 2],
        },
        &[x],
        2,
    );
    let rows = b.op_n(
        Op::Split {
            axis: 0,
            sizes: vec![1, 1],
        },
        &[x],
        2,
    );
    b.results(&[cols[0], cols[1], rows[0], rows[1]]);
    let out = run(&b, &[("x", f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))]);
    assert_eq!(out[0].data, [1.0, 4.0]);
    assert_eq!(out[1].ty.shape, [2, 2]);
    assert_eq!(out[1].data, [2.0, 3.0, 5.0, 6.0]);
    assert_eq!(out[2].data, [1.0, 2.0, 3.0]);
    assert_eq!(out[3].data, [4.0, 5.0, 6.0]);
}

#[test]
fn concat_of_weights_along_both_axes() {
    // a = [[1, 2], [3, 4]], c = [[5], [6]], d = [[7, 8]].
    let mut b = Builder::new();
    let a = b.weight("a", DType::BF16, &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let c = b.weight("c", DType::BF16, &[2, 1], &[5.0, 6.0]);
    let d = b.weight("d", DType::BF16, &[1, 2], &[7.0, 8.0]);
    let cols = b.op(Op::Concat { axis: 1 }, &[a, c]);
    let rows = b.op(Op::Concat { axis: 0 }, &[a, d]);
    b.results(&[cols, rows]);
    let out = run(&b, &[]);
    assert_eq!(out[0].ty.to_string(), "bf16[2, 3]");
    assert_eq!(out[0].data, [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    assert_eq!(out[1].data, [1.0, 2.0, 3.0, 4.0, 7.0, 8.0]);
}

#[test]
fn concat_of_activations_along_axis_one() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 1]);
    let y = b.input("y", DType::F32, &[2, 2]);
    let c = b.op(Op::Concat { axis: 1 }, &[x, y]);
    b.results(&[c]);
    let out = run(
        &b,
        &[
            ("x", f32s(&[2, 1], &[1.0, 2.0])),
            ("y", f32s(&[2, 2], &[3.0, 4.0, 5.0, 6.0])),
        ],
    );
    assert_eq!(out[0].data, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
}

fn argmax_of(xs: &[f32]) -> Result<Vec<Tensor>, braid_ir::IrError> {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, xs.len()]);
    let a = b.op(Op::Argmax, &[x]);
    b.results(&[a]);
    Interpreter::new(&b.weights).run(&b.g, &[("x", f32s(&[1, xs.len()], xs))])
}

#[test]
fn argmax_takes_the_first_maximum() {
    let out = argmax_of(&[1.0, 3.0, 3.0, 2.0]).unwrap();
    assert_eq!(out[0].ty.dtype, DType::I32);
    assert_eq!(out[0].ints, [1]);
    assert_eq!(argmax_of(&[-5.0, -1.0, -1.0]).unwrap()[0].ints, [1]);
    assert_eq!(argmax_of(&[0.0, 0.5, 7.0]).unwrap()[0].ints, [2]);
}

#[test]
fn argmax_of_nan_is_an_error() {
    let err = argmax_of(&[1.0, f32::NAN, 2.0]).unwrap_err().to_string();
    assert!(err.contains("= argmax") && err.contains("NaN"), "{err}");
}

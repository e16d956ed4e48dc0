//! The interpreter's errors (they name the input, weight or node and what was expected) and its
//! weight cache.

mod interp_common;

use std::cell::Cell;
use std::collections::HashMap;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, HostWeight, Op, TensorType, TensorView, Value, WeightSource};
use interp_common::{f32s, pos, Builder};

fn matmul_graph(w_dtype: DType) -> Builder {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 2]);
    let w = b.declare_weight("proj.weight", w_dtype, &[3, 2]);
    let y = b.op(Op::MatMul, &[x, w]);
    b.results(&[y]);
    b
}

#[test]
fn missing_weight_names_it_and_its_declared_type() {
    let b = matmul_graph(DType::BF16);
    let err = Interpreter::new(&b.weights)
        .run(&b.g, &[("x", f32s(&[1, 2], &[1.0, 2.0]))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proj.weight") && err.contains("missing"),
        "{err}"
    );
    assert!(err.contains("bf16[3, 2]"), "{err}");
}

#[test]
fn weight_of_wrong_dtype_or_shape_is_an_error() {
    let mut b = matmul_graph(DType::BF16);
    b.weights.insert(
        "proj.weight".into(),
        HostWeight::from_f32(DType::F32, vec![3, 2], &[1.0; 6]),
    );
    let x = [("x", f32s(&[1, 2], &[1.0, 2.0]))];
    let err = Interpreter::new(&b.weights)
        .run(&b.g, &x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proj.weight") && err.contains("f32[3, 2]") && err.contains("bf16[3, 2]"),
        "{err}"
    );
    b.weights.insert(
        "proj.weight".into(),
        HostWeight::from_f32(DType::BF16, vec![2, 3], &[1.0; 6]),
    );
    let err = Interpreter::new(&b.weights)
        .run(&b.g, &x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bf16[2, 3]") && err.contains("bf16[3, 2]"),
        "{err}"
    );
}

#[test]
fn missing_or_mistyped_input_is_an_error() {
    let mut b = matmul_graph(DType::F32);
    b.weights.insert(
        "proj.weight".into(),
        HostWeight::from_f32(DType::F32, vec![3, 2], &[1.0; 6]),
    );
    let mut it = Interpreter::new(&b.weights);
    let err = it.run(&b.g, &[]).unwrap_err().to_string();
    assert!(
        err.contains("input `x`") && err.contains("f32[1, 2]"),
        "{err}"
    );
    let err = it
        .run(&b.g, &[("x", f32s(&[2, 1], &[1.0, 2.0]))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f32[2, 1]") && err.contains("f32[1, 2]"),
        "{err}"
    );
    let err = it.run(&b.g, &[("x", pos(3))]).unwrap_err().to_string();
    assert!(err.contains("i32[1]"), "{err}");
    let ok = it.run(&b.g, &[("x", f32s(&[1, 2], &[1.0, 2.0]))]).unwrap();
    assert_eq!(ok[0].data, [3.0, 3.0, 3.0]);
}

#[test]
fn declared_output_type_that_disagrees_with_inputs_names_the_node() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 2]);
    let y = b.input("y", DType::F32, &[1, 2]);
    let s =
        b.g.add_unchecked(Op::Add, &[x, y], vec![TensorType::new(DType::F32, [1, 3])]);
    b.results(&[Value::of(s)]);
    let err = Interpreter::new(&b.weights)
        .run(
            &b.g,
            &[
                ("x", f32s(&[1, 2], &[1.0, 2.0])),
                ("y", f32s(&[1, 2], &[1.0, 2.0])),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("%2 = add"), "{err}");
    assert!(
        err.contains("f32[1, 3]") && err.contains("f32[1, 2]"),
        "{err}"
    );
}

#[test]
fn attention_over_a_computed_cache_is_an_error() {
    let mut b = Builder::new();
    let q = b.input("q", DType::F32, &[1, 2]);
    let kc = b.input("not_a_cache", DType::F32, &[4, 1, 2]);
    let vc = b.cache("v_cache", DType::F32, &[4, 1, 2]);
    let p = b.input("position", DType::I32, &[1]);
    let a = b.op(Op::Attention { scale: 1.0 }, &[q, q, q, kc, vc, p]);
    b.results(&[a]);
    let err = Interpreter::new(&b.weights)
        .run(
            &b.g,
            &[
                ("q", f32s(&[1, 2], &[1.0, 2.0])),
                ("not_a_cache", f32s(&[4, 1, 2], &[0.5; 8])),
                ("position", pos(0)),
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("= attention") && err.contains("kv_cache leaf"),
        "{err}"
    );
}

/// A weight source that counts look-ups.
struct Counting {
    inner: HashMap<String, HostWeight>,
    gets: Cell<usize>,
}

impl WeightSource for Counting {
    fn get(&self, name: &str) -> Option<TensorView<'_>> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(name).map(HostWeight::view)
    }
}

#[test]
fn weights_and_folded_concats_are_converted_once() {
    // y = x · concat(a, c)ᵀ packs two weights with a weight-only concat; the norm weight n is used
    // directly. After the first step no weight is read from the source again.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 2]);
    let a = b.weight("a", DType::BF16, &[1, 2], &[1.0, 2.0]);
    let c = b.weight("c", DType::BF16, &[2, 2], &[0.5, 0.0, -1.0, 1.0]);
    let n = b.weight("n", DType::BF16, &[3], &[1.0, 1.0, 2.0]);
    let packed = b.op(Op::Concat { axis: 0 }, &[a, c]);
    let y = b.op(Op::MatMul, &[x, packed]);
    let z = b.op(Op::RmsNorm { eps: 0.0 }, &[y, n]);
    b.results(&[y, z]);
    let src = Counting {
        inner: b.weights.clone(),
        gets: Cell::new(0),
    };
    let mut it = Interpreter::new(&src);
    let first = it.run(&b.g, &[("x", f32s(&[1, 2], &[2.0, 4.0]))]).unwrap();
    assert_eq!(first[0].data, [10.0, 1.0, 2.0]);
    assert_eq!(src.gets.get(), 3);
    let second = it.run(&b.g, &[("x", f32s(&[1, 2], &[2.0, 4.0]))]).unwrap();
    assert_eq!(second, first);
    assert_eq!(src.gets.get(), 3, "the second step re-read weights");
}

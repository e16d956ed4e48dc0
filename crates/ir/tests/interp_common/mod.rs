//! Shared helpers of the interpreter tests: a graph + in-memory weights builder and float comparisons.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;

use braid_ir::{DType, Graph, HostWeight, Op, Tensor, TensorType, Value};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A graph under construction and the weights it names.
#[derive(Default)]
pub struct Builder {
    pub g: Graph,
    pub weights: HashMap<String, HostWeight>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Value {
        let ty = TensorType::new(dtype, shape);
        self.op(
            Op::Input {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    /// Declares weight `name` and stores `values` encoded as `dtype`.
    pub fn weight(&mut self, name: &str, dtype: DType, shape: &[usize], values: &[f32]) -> Value {
        self.weights.insert(
            name.into(),
            HostWeight::from_f32(dtype, shape.to_vec(), values),
        );
        self.declare_weight(name, dtype, shape)
    }

    /// Declares weight `name` without storing it.
    pub fn declare_weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Value {
        let ty = TensorType::new(dtype, shape);
        self.op(
            Op::Weight {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    pub fn cache(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Value {
        let ty = TensorType::new(dtype, shape);
        self.op(
            Op::KvCache {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    pub fn op(&mut self, op: Op, inputs: &[Value]) -> Value {
        self.g.add1(op, inputs).expect("well-typed test graph")
    }

    /// A multi-output op: its `n` output values.
    pub fn op_n(&mut self, op: Op, inputs: &[Value], n: u32) -> Vec<Value> {
        let node = self.g.add(op, inputs).expect("well-typed test graph");
        (0..n).map(|output| Value { node, output }).collect()
    }

    pub fn results(&mut self, rs: &[Value]) {
        self.g.set_results(rs.to_vec());
    }
}

pub fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), data.to_vec())
}

pub fn pos(p: i32) -> Tensor {
    Tensor::i32([1], vec![p])
}

/// `n` uniform values in [-1, 1).
pub fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `‖a − b‖ / ‖b‖`, in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Elementwise `|a − b| <= tol · max(1, |b|)`.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ: {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "element {i}: {x} vs expected {y}\n got {a:?}\nwant {b:?}"
        );
    }
}

//! The verifier: structure, arity and inferred types of every node.

use std::collections::HashMap;

use crate::error::IrError;
use crate::graph::{Graph, Value};
use crate::op::Op;

/// Checks that `g` is well formed: it has results, no cycles, every node's inputs fill its slots
/// `0..n` exactly once, every stored output type equals the one [`Op::infer`] gives, and leaf names are
/// unique per kind. Errors name the node as printed (`%7 = matmul`) and say what was expected.
pub fn verify(g: &Graph) -> Result<(), IrError> {
    if g.results().is_empty() {
        return Err(IrError::Malformed("graph has no results".into()));
    }
    for r in g.results() {
        g.value_type(*r)?;
    }
    if !g.is_acyclic() {
        return Err(IrError::Malformed("graph has a cycle".into()));
    }
    let names = g.value_names();
    let label = |n| {
        let v = Value::of(n);
        let op = g.node(n).map(|n| n.op.name()).unwrap_or("?");
        match names.get(&v) {
            Some(name) => format!("{name} = {op}"),
            None => format!("unreachable node {} = {op}", n.index()),
        }
    };
    let mut leaves: HashMap<(&'static str, &str), ()> = HashMap::new();
    for n in g.node_indices() {
        let node = g.node(n).expect("index from the graph");
        if let Some(name) = node.op.leaf_name() {
            if leaves.insert((node.op.name(), name), ()).is_some() {
                return Err(IrError::Malformed(format!(
                    "{} `{name}` is declared twice",
                    node.op.name()
                )));
            }
        }
        let slots: Vec<u32> = g
            .petgraph()
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| e.weight().input)
            .collect();
        let mut sorted = slots.clone();
        sorted.sort();
        if sorted.iter().enumerate().any(|(i, s)| *s as usize != i) {
            return Err(IrError::Type {
                node: Some(label(n)),
                msg: format!("input slots {sorted:?} are not 0..{}", slots.len()),
            });
        }
        let inputs = g.inputs(n);
        let types = inputs
            .iter()
            .map(|v| g.value_type(*v))
            .collect::<Result<Vec<_>, _>>()?;
        let inferred = node.op.infer(&types).map_err(|msg| IrError::Type {
            node: Some(label(n)),
            msg,
        })?;
        if inferred != node.outputs {
            let show = |ts: &[crate::TensorType]| {
                ts.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(IrError::Type {
                node: Some(label(n)),
                msg: format!(
                    "declared type {} but the inputs give {}",
                    show(&node.outputs),
                    show(&inferred)
                ),
            });
        }
        if let Op::KvCache { ty, .. } = &node.op {
            if ty.shape.len() != 3 || !ty.dtype.is_float() {
                return Err(IrError::Type {
                    node: Some(label(n)),
                    msg: format!(
                        "kv_cache expects a float [max_context, kv_heads, head_dim], got {ty}"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, TensorType};

    fn ty(d: DType, s: &[usize]) -> TensorType {
        TensorType::new(d, s)
    }

    #[test]
    fn accepts_well_typed_graph() {
        let mut g = Graph::new();
        let x = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: ty(DType::F32, &[1, 8]),
                },
                &[],
            )
            .unwrap();
        let w = g
            .add1(
                Op::Weight {
                    name: "w".into(),
                    ty: ty(DType::BF16, &[4, 8]),
                },
                &[],
            )
            .unwrap();
        let y = g.add1(Op::MatMul, &[x, w]).unwrap();
        g.set_results(vec![y]);
        verify(&g).unwrap();
    }

    #[test]
    fn rejects_wrong_declared_type_naming_node_and_op() {
        let mut g = Graph::new();
        let x = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: ty(DType::F32, &[1, 8]),
                },
                &[],
            )
            .unwrap();
        let w = g
            .add1(
                Op::Weight {
                    name: "w".into(),
                    ty: ty(DType::BF16, &[4, 8]),
                },
                &[],
            )
            .unwrap();
        let y = g.add_unchecked(Op::MatMul, &[x, w], vec![ty(DType::F32, &[1, 5])]);
        g.set_results(vec![Value::of(y)]);
        let err = verify(&g).unwrap_err().to_string();
        assert!(err.contains("%1 = matmul"), "{err}");
        assert!(
            err.contains("f32[1, 5]") && err.contains("f32[1, 4]"),
            "{err}"
        );
    }

    #[test]
    fn rejects_mismatched_matmul_inputs() {
        let mut g = Graph::new();
        let x = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: ty(DType::F32, &[1, 8]),
                },
                &[],
            )
            .unwrap();
        let w = g
            .add1(
                Op::Weight {
                    name: "w".into(),
                    ty: ty(DType::BF16, &[4, 7]),
                },
                &[],
            )
            .unwrap();
        let err = g.add1(Op::MatMul, &[x, w]).unwrap_err().to_string();
        assert!(err.contains("matmul expects w [n, 8]"), "{err}");
    }

    #[test]
    fn rejects_duplicate_leaf_and_missing_results() {
        let mut g = Graph::new();
        assert!(verify(&g).unwrap_err().to_string().contains("no results"));
        let a = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: ty(DType::F32, &[2]),
                },
                &[],
            )
            .unwrap();
        let b = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: ty(DType::F32, &[2]),
                },
                &[],
            )
            .unwrap();
        let s = g.add1(Op::Add, &[a, b]).unwrap();
        g.set_results(vec![s]);
        assert!(verify(&g)
            .unwrap_err()
            .to_string()
            .contains("declared twice"));
    }
}

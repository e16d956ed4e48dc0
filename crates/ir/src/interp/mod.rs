//! The reference interpreter: the meaning of every op, fused ones included, on the CPU in f32.
//!
//! [`Interpreter::run`] evaluates one step (one decode token, or a prefill chunk of `T`) of a [`Graph`] in [`Graph::topo_order`]. Weights come
//! from a [`WeightSource`] and are upcast to f32 once ([`TensorView::to_f32`]); KV caches live in a
//! [`KvState`] that persists across steps. Formulas follow HF transformers' `modeling_qwen3.py` (see
//! the op docs in [`crate::op`]); the fused ops are compositions of the same primitive functions as
//! the unfused ones, so the passes can be checked against this interpreter.
//!
//! Constant folding: a node whose inputs are all weights (a weight-only `concat`, say) is computed once
//! and cached with the upcast weights, keyed by its structure, so repeated steps neither re-convert nor
//! re-pack. Only the constants that feed non-constant ops are kept; weights used solely inside a folded
//! constant are upcast transiently, so packing `concat(Wq, Wk, Wv)` does not hold the weights twice.
//!
//! Layout: `value` (runtime values), `kv` (KV-cache state), `eval` (op dispatch), `math`, `matmul`,
//! `layout`, `attention` (primitives), `fused` (fused ops as compositions of primitives).

mod attention;
mod eval;
mod fused;
mod kv;
mod layout;
mod math;
mod matmul;
mod value;

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

pub use kv::KvState;
use value::Val;

use crate::error::IrError;
use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::tensor::{Tensor, TensorView, WeightSource};
use crate::types::{DType, TensorType};

/// The reference interpreter: weights, the f32 cache of upcast (and folded) weights, and the KV state.
pub struct Interpreter<'w> {
    weights: &'w dyn WeightSource,
    /// Upcast weights and folded constants, keyed by [`const_keys`] (`@name: ty#output` for a weight).
    consts: HashMap<String, Val>,
    kv: KvState,
}

impl<'w> Interpreter<'w> {
    /// An interpreter reading weights from `weights`, with empty caches.
    pub fn new(weights: &'w dyn WeightSource) -> Self {
        Interpreter {
            weights,
            consts: HashMap::new(),
            kv: KvState::new(),
        }
    }

    /// Runs one step of `g`: `inputs` by `input` leaf name (e.g. `("token", i32[1])`,
    /// `("position", i32[1])`); returns the graph results in order (e.g. `[logits f32[1, vocab],
    /// next_token i32[1]]`). `attention` nodes write their KV caches, which persist to the next call.
    ///
    /// Errors ([`IrError::Interp`]): an input missing, given twice, or of another type than declared;
    /// a weight missing from the source or of another dtype/shape than declared; a node whose stored
    /// output types disagree with [`Op::infer`]; an embedding id out of range; a position that is
    /// negative, or an `attention` whose `T` tokens would run past its cache
    /// (`position + T > max_context`); NaN logits in `argmax`. Messages name the node as printed
    /// (`%7 = attention: ...`), the input or the weight, and what was expected.
    pub fn run(&mut self, g: &Graph, inputs: &[(&str, Tensor)]) -> Result<Vec<Tensor>, IrError> {
        let order = g.topo_order();
        let keys = const_keys(g, &order);
        let mut values: HashMap<Value, Val> = HashMap::new();
        for &n in &order {
            if keys.contains_key(&n) {
                continue; // constants are computed on demand, or come from the cache
            }
            let node = g.node(n).ok_or_else(|| missing_node(n))?;
            let outs = match &node.op {
                Op::Input { name, ty } => vec![input_val(inputs, name, ty)?],
                Op::KvCache { name, ty } => vec![Val::Cache {
                    name: name.clone(),
                    ty: ty.clone(),
                }],
                _ => {
                    let ins = g
                        .inputs(n)
                        .into_iter()
                        .map(|v| self.fetch(g, v, &keys, &values))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.apply(g, n, ins)?
                }
            };
            for (o, val) in outs.into_iter().enumerate() {
                values.insert(
                    Value {
                        node: n,
                        output: o as u32,
                    },
                    val,
                );
            }
        }
        g.results()
            .iter()
            .map(|&r| {
                let val = self.fetch(g, r, &keys, &values)?;
                val.into_tensor(&mut self.kv)
                    .map_err(|m| IrError::Interp(format!("{}: {m}", value_label(g, r))))
            })
            .collect()
    }

    /// Zeroes every KV cache (a new sequence); the weight cache is kept.
    pub fn reset_state(&mut self) {
        self.kv.zero();
    }

    /// The KV-cache state (for inspection and tests).
    pub fn state(&self) -> &KvState {
        &self.kv
    }

    /// The value `v`: from this step's values, or, for a constant, from the cache (computing and
    /// caching it on first use).
    fn fetch(
        &mut self,
        g: &Graph,
        v: Value,
        keys: &HashMap<NodeIndex, String>,
        values: &HashMap<Value, Val>,
    ) -> Result<Val, IrError> {
        if keys.contains_key(&v.node) {
            return self.const_val(g, v, keys, true);
        }
        values.get(&v).cloned().ok_or_else(|| {
            IrError::Interp(format!(
                "{} is used before it is computed (is the graph acyclic?)",
                value_label(g, v)
            ))
        })
    }

    /// The constant `v` (a weight, or an op on constants only). `store` says whether to keep it in
    /// the cache: true where a non-constant op consumes it, false inside a folded constant.
    fn const_val(
        &mut self,
        g: &Graph,
        v: Value,
        keys: &HashMap<NodeIndex, String>,
        store: bool,
    ) -> Result<Val, IrError> {
        let base = keys
            .get(&v.node)
            .ok_or_else(|| IrError::Interp(format!("{} is not a constant", value_label(g, v))))?;
        if let Some(val) = self.consts.get(&format!("{base}#{}", v.output)) {
            return Ok(val.clone());
        }
        let node = g.node(v.node).ok_or_else(|| missing_node(v.node))?;
        let outs = match &node.op {
            Op::Weight { name, ty } => vec![self.load_weight(name, ty)?],
            _ => {
                let ins = g
                    .inputs(v.node)
                    .into_iter()
                    .map(|u| self.const_val(g, u, keys, false))
                    .collect::<Result<Vec<_>, _>>()?;
                self.apply(g, v.node, ins)?
            }
        };
        let val = outs
            .get(v.output as usize)
            .cloned()
            .ok_or(IrError::BadValue {
                node: v.node.index(),
                output: v.output,
            })?;
        if store {
            for (o, out) in outs.into_iter().enumerate() {
                self.consts.insert(format!("{base}#{o}"), out);
            }
        }
        Ok(val)
    }

    /// Evaluates the non-leaf node `n` on `ins`, after checking that its stored output types are what
    /// [`Op::infer`] gives for the actual inputs (so the primitives never see inconsistent shapes).
    fn apply(&mut self, g: &Graph, n: NodeIndex, ins: Vec<Val>) -> Result<Vec<Val>, IrError> {
        let node = g.node(n).ok_or_else(|| missing_node(n))?;
        let err = |m: String| IrError::Interp(format!("{}: {m}", node_label(g, n)));
        let types: Vec<&TensorType> = ins.iter().map(Val::ty).collect();
        let inferred = node.op.infer(&types).map_err(err)?;
        if inferred != node.outputs {
            return Err(err(format!(
                "declared output types {} but the inputs give {}",
                show_types(&node.outputs),
                show_types(&inferred)
            )));
        }
        let outs = eval::eval(&node.op, ins, &inferred, &mut self.kv).map_err(err)?;
        let consistent = outs.len() == inferred.len()
            && outs
                .iter()
                .zip(&inferred)
                .all(|(v, t)| v.len() == t.numel());
        if !consistent {
            return Err(err(format!(
                "produced data that does not match {}",
                show_types(&inferred)
            )));
        }
        Ok(outs)
    }

    /// Weight `name` from the source, checked against the declared `ty` and upcast to f32.
    fn load_weight(&self, name: &str, ty: &TensorType) -> Result<Val, IrError> {
        let view: TensorView<'_> = self.weights.get(name).ok_or_else(|| {
            IrError::Interp(format!(
                "weight `{name}` is missing from the weights (the graph declares {ty})"
            ))
        })?;
        if view.dtype != ty.dtype || view.shape != ty.shape.as_slice() {
            return Err(IrError::Interp(format!(
                "weight `{name}` is {} in the weights, but the graph declares {ty}",
                view.ty()
            )));
        }
        let data = view.to_f32().ok_or_else(|| {
            IrError::Interp(format!(
                "weight `{name}` {ty} has {} bytes, expected {} bytes of a float type",
                view.bytes.len(),
                ty.size_bytes()
            ))
        })?;
        Ok(Val::float(ty.clone(), data))
    }
}

/// Structural keys of the constant nodes of `order` (in topological order): a weight is
/// `@name: ty`; a pure op whose inputs are all constants is `Op{attrs}(input keys#output, ..)`.
/// Inputs, KV caches and `attention` (which writes state) are never constant.
fn const_keys(g: &Graph, order: &[NodeIndex]) -> HashMap<NodeIndex, String> {
    let mut keys: HashMap<NodeIndex, String> = HashMap::new();
    for &n in order {
        let Some(node) = g.node(n) else { continue };
        let key = match &node.op {
            Op::Weight { name, ty } => Some(format!("@{name}: {ty}")),
            Op::Input { .. } | Op::KvCache { .. } | Op::Attention { .. } => None,
            op => g
                .inputs(n)
                .iter()
                .map(|v| keys.get(&v.node).map(|k| format!("{k}#{}", v.output)))
                .collect::<Option<Vec<_>>>()
                .map(|parts| format!("{op:?}({})", parts.join(", "))),
        };
        if let Some(k) = key {
            keys.insert(n, k);
        }
    }
    keys
}

/// The value of input `name`, checked against its declared type and its data length.
fn input_val(inputs: &[(&str, Tensor)], name: &str, ty: &TensorType) -> Result<Val, IrError> {
    let mut given = inputs.iter().filter(|(n, _)| *n == name).map(|(_, t)| t);
    let t = given
        .next()
        .ok_or_else(|| IrError::Interp(format!("input `{name}` ({ty}) was not given")))?;
    if given.next().is_some() {
        return Err(IrError::Interp(format!("input `{name}` is given twice")));
    }
    if t.ty != *ty {
        return Err(IrError::Interp(format!(
            "input `{name}` is {}, but the graph declares {ty}",
            t.ty
        )));
    }
    let (len, val) = if ty.dtype == DType::I32 {
        (
            t.ints.len(),
            Val::Int {
                ty: ty.clone(),
                ints: std::sync::Arc::new(t.ints.clone()),
            },
        )
    } else {
        (t.data.len(), Val::float(ty.clone(), t.data.clone()))
    };
    if len != ty.numel() {
        return Err(IrError::Interp(format!(
            "input `{name}` {ty} holds {len} elements, expected {}",
            ty.numel()
        )));
    }
    Ok(val)
}

/// `%7 = matmul` (or `@name = weight`) as the printer numbers it.
fn node_label(g: &Graph, n: NodeIndex) -> String {
    let op = g.node(n).map_or("?", |node| node.op.name());
    format!("{} = {op}", value_label(g, Value::of(n)))
}

/// The printed name of `v` (`%7`, `@name`), or its raw index if no result reaches it.
fn value_label(g: &Graph, v: Value) -> String {
    g.value_names()
        .remove(&v)
        .unwrap_or_else(|| format!("node {} output {}", v.node.index(), v.output))
}

fn missing_node(n: NodeIndex) -> IrError {
    IrError::BadValue {
        node: n.index(),
        output: 0,
    }
}

fn show_types(ts: &[TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

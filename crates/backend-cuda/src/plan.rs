//! Memory planning: which values are load-time constants, where every value lives on the device, and
//! the activation arena laid out by liveness.
//!
//! - Constants: weights, and `reshape` / `split` / `concat` nodes whose inputs are all constants (a
//!   weight-only subgraph such as the packed `concat(Wq, Wk, Wv)`): folded on the host at load time and
//!   uploaded once, in the form each consumer needs ([`Form`]).
//! - Inputs (`token`, `position`, ...) live in one small IO buffer, so the host writes them with one
//!   copy; KV caches in one buffer sized by their leaf types.
//! - Every other value is an arena allocation, except `reshape` and a `split` whose leading dimensions
//!   are all 1, which are views (same bytes, an offset). Arena allocations are placed by liveness over
//!   the topological order: two allocations share bytes only when their lifetimes (definition to last
//!   use, graph results live to the end) do not overlap. Offsets are 256-byte aligned.

use std::collections::{BTreeMap, HashMap, HashSet};

use braid_ir::op::split_is_view;
use braid_ir::{Graph, Op, TensorType, Value};

use crate::error::CudaError;

/// Alignment of every planned buffer, in bytes.
pub const ALIGN: usize = 256;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// How a consumer wants a constant: in its stored dtype (the weight operand of a GEMV, an embedding
/// table), or upcast to f32 (norm weights and every other operand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Form {
    /// The checkpoint dtype (bf16, f16 or f32), bytes as stored.
    Raw,
    /// Upcast to f32.
    F32,
}

/// The form operand `slot` of `op` takes a constant in.
pub fn slot_form(op: &Op, slot: usize) -> Form {
    let raw = matches!(
        (op, slot),
        (Op::Embedding, 0)
            | (Op::MatMul, 1)
            | (Op::FusedRmsNormMatmul { .. }, 2)
            | (Op::FusedGatedMlp, 1)
            | (Op::FusedMatmulAdd, 1)
    );
    if raw {
        Form::Raw
    } else {
        Form::F32
    }
}

/// A device memory region of the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Arena allocation number `n` (its offset in the arena is [`MemoryPlan::arena_offsets`]`[n]`).
    Arena(usize),
    /// The input buffer.
    Io,
    /// The KV-cache buffer.
    Kv,
    /// The constants (weights) buffer.
    Weights,
}

/// Where a value lives: a region and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub region: Region,
    pub offset: usize,
}

/// A leaf placed in the IO or KV buffer.
#[derive(Clone, Debug)]
pub struct LeafSlot {
    pub name: String,
    pub ty: TensorType,
    pub offset: usize,
}

/// The memory plan of one graph.
#[derive(Debug)]
pub struct MemoryPlan {
    /// Reachable nodes in topological order, each as its first output.
    pub order: Vec<Value>,
    /// Printed value names (`%7`, `@name`).
    pub names: HashMap<Value, String>,
    /// Constant nodes (weights and weight-only reshape/split/concat), each as its first output.
    pub consts: HashSet<Value>,
    /// Every constant the device needs, with its form and offset in the weights buffer.
    pub const_places: BTreeMap<(Value, Form), usize>,
    /// Bytes of the weights buffer.
    pub weights_bytes: usize,
    /// Every non-constant value's place.
    pub places: HashMap<Value, Place>,
    /// Size (bytes) and lifetime (first, last topological index) of each arena allocation.
    pub arena_allocs: Vec<(usize, usize, usize)>,
    /// Offset of each arena allocation in the arena.
    pub arena_offsets: Vec<usize>,
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// Inputs in the IO buffer.
    pub inputs: Vec<LeafSlot>,
    /// Bytes of the IO buffer.
    pub io_bytes: usize,
    /// KV caches in the KV buffer.
    pub kv: Vec<LeafSlot>,
    /// Bytes of the KV buffer.
    pub kv_bytes: usize,
}

impl MemoryPlan {
    /// Plans `g` (which must pass [`braid_ir::verify()`]).
    ///
    /// Errors: [`CudaError::Unsupported`] for a constant that cannot take the form a consumer needs
    /// (an i32 weight as an f32 operand) or a graph result that is a KV cache.
    pub fn new(g: &Graph) -> Result<Self, CudaError> {
        let order: Vec<Value> = g.topo_order().into_iter().map(Value::of).collect();
        let names = g.value_names();
        let label = |v: Value| {
            names
                .get(&v)
                .cloned()
                .unwrap_or_else(|| format!("node {}", v.node.index()))
        };
        let node = |n: Value| {
            g.node(n.node)
                .ok_or_else(|| CudaError::Graph(format!("node {} is missing", n.node.index())))
        };

        // Constants.
        let mut consts = HashSet::new();
        for &n in &order {
            let is_const = match &node(n)?.op {
                Op::Weight { .. } => true,
                Op::Reshape { .. } | Op::Split { .. } | Op::Concat { .. } => g
                    .inputs(n.node)
                    .iter()
                    .all(|v| consts.contains(&Value::of(v.node))),
                _ => false,
            };
            if is_const {
                consts.insert(n);
            }
        }

        // Constants the device needs, by form.
        let mut needed: Vec<(Value, Form)> = Vec::new();
        let mut seen = HashSet::new();
        for &n in &order {
            if consts.contains(&n) {
                continue;
            }
            let op = &node(n)?.op;
            for (slot, v) in g.inputs(n.node).into_iter().enumerate() {
                if consts.contains(&Value::of(v.node)) && seen.insert((v, slot_form(op, slot))) {
                    needed.push((v, slot_form(op, slot)));
                }
            }
        }
        for &r in g.results() {
            if consts.contains(&Value::of(r.node)) && seen.insert((r, Form::F32)) {
                needed.push((r, Form::F32));
            }
        }
        let mut const_places = BTreeMap::new();
        let mut weights_bytes = 0;
        for (v, form) in needed {
            let ty = g
                .value_type(v)
                .map_err(|e| CudaError::Graph(e.to_string()))?;
            let size = match form {
                Form::Raw => ty.size_bytes(),
                Form::F32 => {
                    if !ty.dtype.is_float() {
                        return Err(CudaError::Unsupported {
                            node: label(v),
                            op: node(Value::of(v.node))?.op.name().to_string(),
                            msg: format!("constant {ty} is used where an f32 operand is expected"),
                        });
                    }
                    ty.numel() * 4
                }
            };
            const_places.insert((v, form), weights_bytes);
            weights_bytes += align(size);
        }

        // Places of non-constant values.
        let mut places: HashMap<Value, Place> = HashMap::new();
        let mut arena_allocs: Vec<(usize, usize, usize)> = Vec::new();
        let mut inputs = Vec::new();
        let mut kv = Vec::new();
        let (mut io_bytes, mut kv_bytes) = (0usize, 0usize);
        for (i, &n) in order.iter().enumerate() {
            if consts.contains(&n) {
                continue;
            }
            let nd = node(n)?;
            let ins = g.inputs(n.node);
            let out = |o: usize| Value {
                node: n.node,
                output: o as u32,
            };
            match &nd.op {
                Op::Input { name, ty } => {
                    inputs.push(LeafSlot {
                        name: name.clone(),
                        ty: ty.clone(),
                        offset: io_bytes,
                    });
                    places.insert(
                        out(0),
                        Place {
                            region: Region::Io,
                            offset: io_bytes,
                        },
                    );
                    io_bytes += align(ty.size_bytes());
                }
                Op::KvCache { name, ty } => {
                    kv.push(LeafSlot {
                        name: name.clone(),
                        ty: ty.clone(),
                        offset: kv_bytes,
                    });
                    places.insert(
                        out(0),
                        Place {
                            region: Region::Kv,
                            offset: kv_bytes,
                        },
                    );
                    kv_bytes += align(ty.size_bytes());
                }
                Op::Reshape { .. } => {
                    let p = place_of(&places, ins[0], &label)?;
                    places.insert(out(0), p);
                }
                Op::Split { axis, sizes }
                    if split_is_view(
                        *axis,
                        &[g.value_type(ins[0])
                            .map_err(|e| CudaError::Graph(e.to_string()))?],
                    ) =>
                {
                    let p = place_of(&places, ins[0], &label)?;
                    let in_ty = g
                        .value_type(ins[0])
                        .map_err(|e| CudaError::Graph(e.to_string()))?;
                    let inner: usize = in_ty.shape[axis + 1..].iter().product();
                    let mut at = 0;
                    for (o, s) in sizes.iter().enumerate() {
                        places.insert(
                            out(o),
                            Place {
                                region: p.region,
                                offset: p.offset + at * inner * in_ty.dtype.size_bytes(),
                            },
                        );
                        at += s;
                    }
                }
                _ => {
                    for (o, ty) in nd.outputs.iter().enumerate() {
                        places.insert(
                            out(o),
                            Place {
                                region: Region::Arena(arena_allocs.len()),
                                offset: 0,
                            },
                        );
                        arena_allocs.push((ty.size_bytes(), i, i));
                    }
                }
            }
            for v in &ins {
                if let Some(Place {
                    region: Region::Arena(a),
                    ..
                }) = places.get(v)
                {
                    arena_allocs[*a].2 = arena_allocs[*a].2.max(i);
                }
            }
        }
        for r in g.results() {
            match places.get(r) {
                Some(Place {
                    region: Region::Arena(a),
                    ..
                }) => arena_allocs[*a].2 = usize::MAX,
                Some(Place {
                    region: Region::Kv, ..
                }) => {
                    return Err(CudaError::Unsupported {
                        node: label(*r),
                        op: "kv_cache".into(),
                        msg: "a KV cache cannot be a graph result".into(),
                    })
                }
                _ => {}
            }
        }
        let (arena_offsets, arena_bytes) = place_by_liveness(&arena_allocs);
        Ok(MemoryPlan {
            order,
            names,
            consts,
            const_places,
            weights_bytes,
            places,
            arena_allocs,
            arena_offsets,
            arena_bytes,
            inputs,
            io_bytes,
            kv,
            kv_bytes,
        })
    }

    /// The printed name of `v`.
    pub fn label(&self, v: Value) -> String {
        self.names
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("node {}", v.node.index()))
    }

    /// The byte offset of a non-arena place, or of an arena place within the arena.
    pub fn resolve(&self, p: Place) -> (Region, usize) {
        match p.region {
            Region::Arena(a) => (Region::Arena(0), self.arena_offsets[a] + p.offset),
            r => (r, p.offset),
        }
    }

    /// Whether value `v` is a constant.
    pub fn is_const(&self, v: Value) -> bool {
        self.consts.contains(&Value::of(v.node))
    }
}

fn place_of(
    places: &HashMap<Value, Place>,
    v: Value,
    label: &dyn Fn(Value) -> String,
) -> Result<Place, CudaError> {
    places
        .get(&v)
        .copied()
        .ok_or_else(|| CudaError::Graph(format!("{} is used before it is defined", label(v))))
}

/// Places allocations `(size, first, last)` in one buffer so that allocations with overlapping
/// lifetimes never share bytes; returns each offset (256-byte aligned) and the buffer size. Greedy:
/// largest first, each at the lowest offset that fits among the placed ones it overlaps in time.
pub fn place_by_liveness(allocs: &[(usize, usize, usize)]) -> (Vec<usize>, usize) {
    let mut idx: Vec<usize> = (0..allocs.len()).collect();
    idx.sort_by_key(|&i| (std::cmp::Reverse(allocs[i].0), allocs[i].1, i));
    let mut offsets = vec![0usize; allocs.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for i in idx {
        let (size, first, last) = allocs[i];
        let size = align(size.max(1));
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| allocs[j].1 <= last && first <= allocs[j].2)
            .map(|&j| (offsets[j], offsets[j] + align(allocs[j].0.max(1))))
            .collect();
        busy.sort();
        let mut at = 0;
        for (s, e) in busy {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[i] = at;
        total = total.max(at + size);
        placed.push(i);
    }
    (offsets, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: (usize, usize, usize), b: (usize, usize, usize)) -> bool {
        a.1 <= b.2 && b.1 <= a.2
    }

    #[test]
    fn liveness_placement_never_overlaps_live_allocations() {
        // Pseudo-random sizes and lifetimes, checked pairwise.
        let mut s = 12345u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let allocs: Vec<(usize, usize, usize)> = (0..200)
            .map(|_| {
                let first = (next() % 100) as usize;
                let len = (next() % 20) as usize;
                ((next() % 5000) as usize + 1, first, first + len)
            })
            .collect();
        let (off, total) = place_by_liveness(&allocs);
        for i in 0..allocs.len() {
            assert_eq!(off[i] % ALIGN, 0);
            assert!(off[i] + allocs[i].0 <= total);
            for j in 0..i {
                if overlaps(allocs[i], allocs[j]) {
                    let (a0, a1) = (off[i], off[i] + allocs[i].0);
                    let (b0, b1) = (off[j], off[j] + allocs[j].0);
                    assert!(a1 <= b0 || b1 <= a0, "allocations {i} and {j} overlap");
                }
            }
        }
        let sum: usize = allocs.iter().map(|a| align(a.0)).sum();
        assert!(
            total < sum,
            "reuse should make the arena smaller than the sum"
        );
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        // x0 -> x1 -> x2 -> x3: each lives from its definition to the next node.
        let allocs = vec![
            (1024, 0, 1),
            (1024, 1, 2),
            (1024, 2, 3),
            (1024, 3, usize::MAX),
        ];
        let (off, total) = place_by_liveness(&allocs);
        assert_eq!(total, 2048);
        assert_ne!(off[0], off[1]);
        assert_eq!(off[0], off[2]);
    }

    #[test]
    fn weight_operands_of_gemvs_keep_their_dtype() {
        assert_eq!(slot_form(&Op::MatMul, 1), Form::Raw);
        assert_eq!(slot_form(&Op::MatMul, 0), Form::F32);
        assert_eq!(slot_form(&Op::RmsNorm { eps: 1e-6 }, 1), Form::F32);
        assert_eq!(
            slot_form(&Op::FusedRmsNormMatmul { eps: 1e-6 }, 1),
            Form::F32
        );
        assert_eq!(
            slot_form(&Op::FusedRmsNormMatmul { eps: 1e-6 }, 2),
            Form::Raw
        );
        assert_eq!(slot_form(&Op::Embedding, 0), Form::Raw);
    }
}

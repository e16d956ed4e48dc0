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
use crate::params::{Ptr, Region};

/// Alignment of every planned buffer, in bytes.
pub const ALIGN: usize = 256;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// How a consumer wants a constant: in its stored dtype (the weight operand of a GEMV, an embedding
/// table), or upcast to f32 (norm weights and every other operand). The lowering says which operand
/// takes which ([`crate::lower::operand_form`]), so planning and lowering cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Form {
    /// The checkpoint dtype (bf16, f16 or f32), bytes as stored.
    Raw,
    /// Upcast to f32.
    F32,
}

/// Where a planned value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
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
    pub space: Space,
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
#[derive(Clone, Debug)]
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
    /// Plans `g` (which must pass [`braid_ir::verify()`]); `form(op, slot)` says in which form
    /// operand `slot` of `op` takes a constant.
    ///
    /// Errors: [`CudaError::Unsupported`] for a constant that cannot take the form a consumer needs
    /// (an i32 weight as an f32 operand) or a graph result that is a KV cache.
    pub fn new(g: &Graph, form: fn(&Op, usize) -> Form) -> Result<Self, CudaError> {
        let order: Vec<Value> = g.topo_order().into_iter().map(Value::of).collect();
        let names = g.value_names();
        let cx = Ctx { g, names: &names };
        let consts = constants(&cx, &order)?;
        let (const_places, weights_bytes) = constant_places(&cx, &order, &consts, form)?;
        let Places {
            places,
            arena_allocs,
            inputs,
            io_bytes,
            kv,
            kv_bytes,
        } = places(&cx, &order, &consts)?;
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
    pub fn resolve(&self, p: Place) -> (Space, usize) {
        match p.space {
            Space::Arena(a) => (Space::Arena(0), self.arena_offsets[a] + p.offset),
            s => (s, p.offset),
        }
    }

    /// Whether value `v` is a constant.
    pub fn is_const(&self, v: Value) -> bool {
        self.consts.contains(&Value::of(v.node))
    }

    /// Makes the arena bytes of value `v` (if it lives in the arena) live at node `at` too: for a
    /// backend fusion, where a launch reads the inputs of a node it absorbed (their lifetime must
    /// reach it) or writes an absorbed node's output early (its lifetime must start there). The
    /// arena is laid out again ([`place_by_liveness`]); other places do not move.
    pub fn widen_lifetime(&mut self, v: Value, at: Value) {
        let Some(Place {
            space: Space::Arena(a),
            ..
        }) = self.places.get(&v).copied()
        else {
            return;
        };
        let Some(i) = self.order.iter().position(|&n| n == Value::of(at.node)) else {
            return;
        };
        let alloc = &mut self.arena_allocs[a];
        alloc.1 = alloc.1.min(i);
        alloc.2 = alloc.2.max(i);
        let (offsets, bytes) = place_by_liveness(&self.arena_allocs);
        self.arena_offsets = offsets;
        self.arena_bytes = bytes;
    }

    /// The symbolic device address of the non-constant value `v`.
    ///
    /// Errors: [`CudaError::Graph`] when `v` has no place (a constant, or not in the graph).
    pub fn ptr(&self, v: Value) -> Result<Ptr, CudaError> {
        let p =
            self.places.get(&v).copied().ok_or_else(|| {
                CudaError::Graph(format!("{} has no device place", self.label(v)))
            })?;
        let (space, offset) = self.resolve(p);
        let region = match space {
            Space::Arena(_) => Region::Arena,
            Space::Io => Region::Io,
            Space::Kv => Region::Kv,
            Space::Weights => Region::Weights,
        };
        Ok(Ptr::at(region, offset))
    }

    /// The symbolic device address of constant `v` uploaded in `form`.
    ///
    /// Errors: [`CudaError::Graph`] when it was not uploaded in that form.
    pub fn const_ptr(&self, v: Value, form: Form) -> Result<Ptr, CudaError> {
        let off = self.const_places.get(&(v, form)).ok_or_else(|| {
            CudaError::Graph(format!(
                "constant {} was not uploaded as {form:?}",
                self.label(v)
            ))
        })?;
        Ok(Ptr::at(Region::Weights, *off))
    }
}

/// The graph and its printed names, for the planning walks' errors.
struct Ctx<'a> {
    g: &'a Graph,
    names: &'a HashMap<Value, String>,
}

impl Ctx<'_> {
    fn label(&self, v: Value) -> String {
        self.names
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("node {}", v.node.index()))
    }

    fn node(&self, n: Value) -> Result<&braid_ir::Node, CudaError> {
        self.g
            .node(n.node)
            .ok_or_else(|| CudaError::Graph(format!("node {} is missing", n.node.index())))
    }
}

/// Constant nodes: weights, and `reshape` / `split` / `concat` of constants only.
fn constants(cx: &Ctx<'_>, order: &[Value]) -> Result<HashSet<Value>, CudaError> {
    let g = cx.g;
    let node = |n| cx.node(n);
    let mut consts = HashSet::new();
    for &n in order {
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

    Ok(consts)
}

/// Offsets of the constants in the weights buffer, by value and form.
type ConstPlaces = BTreeMap<(Value, Form), usize>;

/// Every constant the device needs, in the form its consumers take it, with its offset in the
/// weights buffer; and the buffer's size.
fn constant_places(
    cx: &Ctx<'_>,
    order: &[Value],
    consts: &HashSet<Value>,
    form: fn(&Op, usize) -> Form,
) -> Result<(ConstPlaces, usize), CudaError> {
    let g = cx.g;
    let node = |n| cx.node(n);
    let label = |v| cx.label(v);
    let mut needed: Vec<(Value, Form)> = Vec::new();
    let mut seen = HashSet::new();
    for &n in order {
        if consts.contains(&n) {
            continue;
        }
        let op = &node(n)?.op;
        for (slot, v) in g.inputs(n.node).into_iter().enumerate() {
            if consts.contains(&Value::of(v.node)) && seen.insert((v, form(op, slot))) {
                needed.push((v, form(op, slot)));
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

    Ok((const_places, weights_bytes))
}

/// The places of the non-constant values: inputs, KV caches, arena allocations with lifetimes.
struct Places {
    places: HashMap<Value, Place>,
    arena_allocs: Vec<(usize, usize, usize)>,
    inputs: Vec<LeafSlot>,
    io_bytes: usize,
    kv: Vec<LeafSlot>,
    kv_bytes: usize,
}

fn places(cx: &Ctx<'_>, order: &[Value], consts: &HashSet<Value>) -> Result<Places, CudaError> {
    let g = cx.g;
    let node = |n| cx.node(n);
    let label = |v| cx.label(v);
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
                        space: Space::Io,
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
                        space: Space::Kv,
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
                            space: p.space,
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
                            space: Space::Arena(arena_allocs.len()),
                            offset: 0,
                        },
                    );
                    arena_allocs.push((ty.size_bytes(), i, i));
                }
            }
        }
        for v in &ins {
            if let Some(Place {
                space: Space::Arena(a),
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
                space: Space::Arena(a),
                ..
            }) => arena_allocs[*a].2 = usize::MAX,
            Some(Place {
                space: Space::Kv, ..
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
    Ok(Places {
        places,
        arena_allocs,
        inputs,
        io_bytes,
        kv,
        kv_bytes,
    })
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
}

//! Horizontal merges: matmuls that share an input (q/k/v of attention, gate/up of the MLP) become
//! one matmul against the weights concatenated along the output axis, then a split of its result.
//! The input row is read once and one kernel runs instead of two or three; the weight `concat` is
//! folded at load time into one packed weight. Projections with biases (HF Qwen2's q/k/v) pack
//! their biases the same way, so the adds follow the one merged matmul instead of its parts.

use braid_ir::Op;
use egg::{Applier, Id, MultiPattern, PatternAst, Rewrite, Subst, Symbol, Var};

use super::{add_checked, add_get, dims_attr_of, usize_attr_of, var};
use crate::analysis::{BraidEGraph, BraidRewrite, TypeAnalysis};
use crate::language::BraidLang;

/// - `horizontal-qkv`: `matmul(x, wq)`, `matmul(x, wk)`, `matmul(x, wv)` ⇒ the three projections of
///   `split(matmul(x, concat(wq, wk, wv){axis = 0})){axis = last, sizes = [nq, nk, nv]}`;
/// - `horizontal-gate-up`: the same for two matmuls (`gate_proj`, `up_proj`).
///
/// - `horizontal-qkv-bias`: `add(get i (split(m){axis = last, sizes}), b_i)` for every part `i` of a
///   three-way split, each `b_i` a weight `[sizes[i]]` (one dtype) ⇒ the projections of
///   `split(add(m, concat(b0, b1, b2){axis = 0}))` with the same axis and sizes: after
///   `horizontal-qkv`, `add(matmul(x, wq), bq)`, .. become one matmul + one (row-broadcast) add,
///   which the residual and norm themes then fuse into one node;
/// - `horizontal-gate-up-bias`: the same for a two-way split.
///
/// A matmul merge applies only when the matched matmuls are *all* the matmuls reading `x` against a
/// plain weight (so q/k/v never also merge pairwise), the weights share a dtype, and it keeps their
/// order in the original graph (e-class ids follow conversion order: q before k before v).
pub fn rules() -> Vec<BraidRewrite> {
    vec![
        merge_rule("horizontal-qkv", 3),
        merge_rule("horizontal-gate-up", 2),
        bias_rule("horizontal-qkv-bias", 3),
        bias_rule("horizontal-gate-up-bias", 2),
    ]
}

/// The multi-pattern `?o0 = (matmul ?x ?w0), ..` for `n` matmuls, with the [`MergeMatmuls`] applier.
fn merge_rule(name: &str, n: usize) -> BraidRewrite {
    let clauses: Vec<String> = (0..n)
        .map(|i| format!("?o{i} = (matmul ?x ?w{i})"))
        .collect();
    let searcher: MultiPattern<BraidLang> = clauses
        .join(", ")
        .parse()
        .unwrap_or_else(|e| panic!("bad multi-pattern for {name}: {e}"));
    let applier = MergeMatmuls {
        x: var("?x"),
        outs: (0..n).map(|i| var(&format!("?o{i}"))).collect(),
        weights: (0..n).map(|i| var(&format!("?w{i}"))).collect(),
    };
    Rewrite::new(name, searcher, applier).unwrap_or_else(|e| panic!("bad rewrite {name}: {e}"))
}

/// The multi-pattern `?s = (split ?axis ?sizes ?m), ?a0 = (add (get 0 ?s) ?b0), ..` for an `n`-way
/// split, with the [`MergeBiases`] applier.
fn bias_rule(name: &str, n: usize) -> BraidRewrite {
    let mut clauses = vec!["?s = (split ?axis ?sizes ?m)".to_string()];
    clauses.extend((0..n).map(|i| format!("?a{i} = (add (get {i} ?s) ?b{i})")));
    let searcher: MultiPattern<BraidLang> = clauses
        .join(", ")
        .parse()
        .unwrap_or_else(|e| panic!("bad multi-pattern for {name}: {e}"));
    let applier = MergeBiases {
        m: var("?m"),
        axis: var("?axis"),
        sizes: var("?sizes"),
        adds: (0..n).map(|i| var(&format!("?a{i}"))).collect(),
        biases: (0..n).map(|i| var(&format!("?b{i}"))).collect(),
    };
    Rewrite::new(name, searcher, applier).unwrap_or_else(|e| panic!("bad rewrite {name}: {e}"))
}

/// Applies a horizontal merge of the matmuls `outs[i] = matmul(x, weights[i])`.
#[derive(Debug)]
struct MergeMatmuls {
    x: Var,
    outs: Vec<Var>,
    weights: Vec<Var>,
}

/// Whether the class holds a `weight` leaf.
fn is_plain_weight(egraph: &BraidEGraph, id: Id) -> bool {
    egraph[id]
        .nodes
        .iter()
        .any(|n| matches!(n, BraidLang::Weight(_)))
}

/// The distinct plain-weight classes `w` of the e-nodes `matmul(x, w)` that read class `x`.
fn plain_weight_readers(egraph: &BraidEGraph, x: Id) -> Vec<Id> {
    let mut ws: Vec<Id> = egraph[x]
        .parents()
        .filter_map(|p| match egraph.id_to_node(p) {
            BraidLang::MatMul([a, w]) if egraph.find(*a) == x => Some(egraph.find(*w)),
            _ => None,
        })
        .filter(|&w| is_plain_weight(egraph, w))
        .collect();
    ws.sort();
    ws.dedup();
    ws
}

impl Applier<BraidLang, TypeAnalysis> for MergeMatmuls {
    fn apply_one(
        &self,
        egraph: &mut BraidEGraph,
        _eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<BraidLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let x = egraph.find(subst[self.x]);
        let ws: Vec<Id> = self
            .weights
            .iter()
            .map(|&v| egraph.find(subst[v]))
            .collect();
        // One match per set, in conversion order; only plain weights; only the whole sibling set.
        if !ws.windows(2).all(|p| p[0] < p[1]) || plain_weight_readers(egraph, x) != ws {
            return Vec::new();
        }
        let Some(x_type) = egraph[x].data.tensor_type().cloned() else {
            return Vec::new();
        };
        let Some(rows) = ws
            .iter()
            .map(|&w| {
                egraph[w]
                    .data
                    .tensor_type()
                    .and_then(|t| t.shape.first().copied())
            })
            .collect::<Option<Vec<usize>>>()
        else {
            return Vec::new();
        };
        let merged = add_checked(egraph, &Op::Concat { axis: 0 }, &ws)
            .and_then(|w| add_checked(egraph, &Op::MatMul, &[x, w]));
        let split = merged.and_then(|m| {
            let split = Op::Split {
                axis: x_type.shape.len().saturating_sub(1),
                sizes: rows,
            };
            add_checked(egraph, &split, &[m])
        });
        let Some(split) = split else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (i, &out) in self.outs.iter().enumerate() {
            let get = add_get(egraph, split, i);
            if egraph.union(subst[out], get) {
                changed.push(get);
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        let mut vars = vec![self.x];
        vars.extend(&self.outs);
        vars.extend(&self.weights);
        vars
    }
}

/// Applies a bias merge: `adds[i] = add(get i (split(m){axis, sizes}), biases[i])` for every part
/// of the split ⇒ `adds[i] = get i (split(add(m, concat(biases){axis = 0})){axis, sizes})`.
#[derive(Debug)]
struct MergeBiases {
    m: Var,
    axis: Var,
    sizes: Var,
    adds: Vec<Var>,
    biases: Vec<Var>,
}

impl Applier<BraidLang, TypeAnalysis> for MergeBiases {
    fn apply_one(
        &self,
        egraph: &mut BraidEGraph,
        _eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<BraidLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let m = egraph.find(subst[self.m]);
        let (Some(axis), Some(sizes), Some(m_type)) = (
            usize_attr_of(egraph, subst, self.axis),
            dims_attr_of(egraph, subst, self.sizes),
            egraph[m].data.tensor_type().cloned(),
        ) else {
            return Vec::new();
        };
        // Every part has its bias, the split cuts the last axis, and each bias is one packed-able
        // weight row of its part's width (so the concat folds at load time).
        if sizes.len() != self.biases.len() || axis + 1 != m_type.shape.len() {
            return Vec::new();
        }
        let bs: Vec<Id> = self.biases.iter().map(|&v| egraph.find(subst[v])).collect();
        let fits = bs.iter().zip(&sizes).all(|(&b, &n)| {
            let data = &egraph[b].data;
            data.weight_only && data.tensor_type().is_some_and(|t| t.shape == [n])
        });
        if !fits {
            return Vec::new();
        }
        let merged = add_checked(egraph, &Op::Concat { axis: 0 }, &bs)
            .and_then(|cb| add_checked(egraph, &Op::Add, &[m, cb]))
            .and_then(|am| add_checked(egraph, &Op::Split { axis, sizes }, &[am]));
        let Some(split) = merged else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (i, &out) in self.adds.iter().enumerate() {
            let get = add_get(egraph, split, i);
            if egraph.union(subst[out], get) {
                changed.push(get);
            }
        }
        changed
    }

    fn vars(&self) -> Vec<Var> {
        let mut vars = vec![self.m, self.axis, self.sizes];
        vars.extend(&self.adds);
        vars.extend(&self.biases);
        vars
    }
}

//! Rewrite rules, one `rules()` per theme (egg `tests/math.rs` style), and helpers their appliers
//! share. Every rule keeps what the graph computes: `tests/equivalence.rs` runs each theme before
//! and after through the reference interpreter.

pub mod horizontal;
pub mod mlp;
pub mod norm;
pub mod qk;
pub mod residual;

use braid_ir::{Op, TensorType};
use egg::{Applier, Id, PatternAst, SearchMatches, Subst, Symbol, Var};

use crate::analysis::{BraidEGraph, BraidRewrite, TypeAnalysis};
use crate::language::{parse_dims_attr, parse_usize_attr, BraidLang};

/// Every rule of every theme: what the `fuse` pass saturates with.
pub fn all_rules() -> Vec<BraidRewrite> {
    let mut rules = horizontal::rules();
    rules.extend(norm::rules());
    rules.extend(mlp::rules());
    rules.extend(residual::rules());
    rules.extend(qk::rules());
    rules
}

/// Parses a pattern variable name such as `"?x"`. Panics on a malformed literal (rule tables are
/// static; a typo is a programming error caught by every test).
pub(crate) fn var(name: &str) -> Var {
    name.parse()
        .unwrap_or_else(|e| panic!("bad pattern variable {name}: {e}"))
}

/// The single tensor type of the class bound to `v`.
pub(crate) fn tensor_type(egraph: &BraidEGraph, subst: &Subst, v: Var) -> Option<TensorType> {
    egraph[subst[v]].data.tensor_type().cloned()
}

/// The integer attribute bound to `v`.
pub(crate) fn usize_attr_of(egraph: &BraidEGraph, subst: &Subst, v: Var) -> Option<usize> {
    egraph[subst[v]]
        .data
        .attr
        .and_then(|s| parse_usize_attr(s).ok())
}

/// The size-list attribute bound to `v`.
pub(crate) fn dims_attr_of(egraph: &BraidEGraph, subst: &Subst, v: Var) -> Option<Vec<usize>> {
    egraph[subst[v]]
        .data
        .attr
        .and_then(|s| parse_dims_attr(s).ok())
}

/// Adds `op` over the classes `inputs` after checking with [`Op::infer`] that the inputs fit it, so a
/// rule never puts an ill-typed e-node in the e-graph. Returns `None` when they do not fit.
pub(crate) fn add_checked(egraph: &mut BraidEGraph, op: &Op, inputs: &[Id]) -> Option<Id> {
    let types: Vec<TensorType> = inputs
        .iter()
        .map(|&id| egraph[id].data.tensor_type().cloned())
        .collect::<Option<_>>()?;
    let refs: Vec<&TensorType> = types.iter().collect();
    op.infer(&refs).ok()?;
    let node = BraidLang::from_op(op, inputs, |s| egraph.add(BraidLang::Attr(s)));
    Some(egraph.add(node))
}

/// Adds the projection `index` of tuple class `tuple`.
pub(crate) fn add_get(egraph: &mut BraidEGraph, tuple: Id, index: usize) -> Id {
    let i = egraph.add(BraidLang::Attr(crate::language::usize_attr(index)));
    egraph.add(BraidLang::Get([i, tuple]))
}

/// Wraps an applier so that it reports changed classes only when the e-graph really changed (new
/// e-nodes or a union). egg's `MultiPattern` applier returns ids on every match, which keeps the
/// runner from ever seeing saturation.
#[derive(Debug)]
pub(crate) struct ReportChanges<A>(pub A);

impl<A: Applier<BraidLang, TypeAnalysis>> Applier<BraidLang, TypeAnalysis> for ReportChanges<A> {
    fn apply_matches(
        &self,
        egraph: &mut BraidEGraph,
        matches: &[SearchMatches<BraidLang>],
        rule_name: Symbol,
    ) -> Vec<Id> {
        let before = (egraph.total_size(), egraph.number_of_classes());
        let ids = self.0.apply_matches(egraph, matches, rule_name);
        if (egraph.total_size(), egraph.number_of_classes()) == before {
            Vec::new()
        } else {
            ids
        }
    }

    fn apply_one(
        &self,
        egraph: &mut BraidEGraph,
        eclass: Id,
        subst: &Subst,
        searcher_ast: Option<&PatternAst<BraidLang>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        self.0
            .apply_one(egraph, eclass, subst, searcher_ast, rule_name)
    }

    fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}

//! The pass manager: specs, errors, hooks, verification.

mod common;

use braid_ir::Graph;
use braid_passes::{pass_names, Pass, PassError, PassManager};
use common::{fixture, text};

#[test]
fn specs_name_passes_in_order() {
    assert!(PassManager::from_spec("none").unwrap().names().is_empty());
    assert_eq!(
        PassManager::from_spec("default").unwrap().names(),
        ["fuse", "dce"]
    );
    assert_eq!(
        PassManager::from_spec(" fuse-horizontal , dce,fuse-mlp ")
            .unwrap()
            .names(),
        ["fuse-horizontal", "dce", "fuse-mlp"]
    );
    for name in pass_names() {
        assert_eq!(PassManager::from_spec(name).unwrap().names(), [*name]);
    }
}

#[test]
fn unknown_pass_lists_valid_names() {
    let err = PassManager::from_spec("fuse,fuze").unwrap_err();
    assert!(matches!(&err, PassError::UnknownPass { name, .. } if name == "fuze"));
    let msg = err.to_string();
    for name in pass_names() {
        assert!(msg.contains(name), "{msg}");
    }
    assert!(msg.contains("`fuze`"), "{msg}");
    assert!(PassManager::from_spec("fuse,,dce").is_err());
    assert!(PassManager::from_spec("").is_err());
}

#[test]
fn hook_sees_every_pass_output() {
    let mut g = fixture("qwen3_1layer");
    let mut seen = Vec::new();
    PassManager::from_spec("fuse-horizontal,fuse-norm-matmul,dce")
        .unwrap()
        .run_with_hook(&mut g, |name, graph| {
            seen.push((name.to_string(), text(graph)))
        })
        .unwrap();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fuse-horizontal", "fuse-norm-matmul", "dce"]);
    assert!(seen[0].1.contains("concat") && !seen[0].1.contains("fused_rms_norm_matmul"));
    assert!(seen[1].1.contains("fused_rms_norm_matmul"));
    assert_eq!(seen[2].1, text(&g));
}

#[test]
fn none_leaves_the_graph_alone() {
    let mut g = fixture("qwen3_1layer");
    let before = text(&g);
    PassManager::from_spec("none").unwrap().run(&mut g).unwrap();
    assert_eq!(text(&g), before);
}

/// A broken pass: drops every result.
struct Breaker;

impl Pass for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }
    fn run(&self, graph: &mut Graph) -> Result<(), PassError> {
        graph.set_results(Vec::new());
        Ok(())
    }
}

#[test]
fn invalid_pass_output_is_caught_by_the_verifier() {
    let mut pm = PassManager::from_spec("dce").unwrap();
    pm.push(Box::new(Breaker));
    let mut g = fixture("norm_matmul");
    let before = text(&g);
    let err = pm.run(&mut g).unwrap_err();
    assert!(matches!(&err, PassError::Verify { pass, .. } if pass == "breaker"));
    assert!(err.to_string().contains("breaker"), "{err}");
    assert_eq!(text(&g), before, "the graph keeps the last verified output");
}

#[test]
fn dce_removes_unreachable_nodes() {
    let mut g = fixture("norm_matmul");
    let before = g.node_count();
    // Point the result at the norm: the matmul and its weight become dead.
    let h = g.inputs(g.results()[0].node)[0];
    g.set_results(vec![h]);
    PassManager::from_spec("dce").unwrap().run(&mut g).unwrap();
    assert_eq!(g.node_count(), before - 2);
}

#[test]
fn unverified_graph_is_rejected_with_the_node_named() {
    // A graph whose stored type lies: fusion refuses it, naming the node.
    let mut g = fixture("norm_matmul");
    let y = g.results()[0].node;
    g.node_mut(y).unwrap().outputs = vec![braid_ir::TensorType::new(braid_ir::DType::F32, [1, 5])];
    let err = PassManager::from_spec("fuse")
        .unwrap()
        .run(&mut g)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fuse") && err.contains("matmul"), "{err}");
}

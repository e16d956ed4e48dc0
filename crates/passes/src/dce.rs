//! Dead-code elimination.

use braid_ir::Graph;

use crate::error::PassError;
use crate::manager::Pass;

/// `dce`: removes every node no graph result reaches ([`Graph::remove_dead`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), PassError> {
        let removed = graph.remove_dead();
        tracing::debug!(removed, "dce");
        Ok(())
    }
}

//! The CPU backend: the reference interpreter ([`braid_ir::interp`]) running the decode-step graph,
//! f32 throughout. Slow, and exactly what the graph means: the oracle the GPU is checked against.

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, Tensor, WeightSource};

use crate::engine::{DecodeBackend, EngineError, StepOutput};

/// The CPU backend: the reference interpreter running the decode-step graph.
pub struct CpuBackend<'w> {
    graph: Graph,
    interp: Interpreter<'w>,
    max_context: usize,
}

impl<'w> CpuBackend<'w> {
    /// A CPU backend for `graph` (a decode step lowered for `max_context` positions).
    pub fn new(graph: Graph, weights: &'w dyn WeightSource, max_context: usize) -> Self {
        CpuBackend {
            graph,
            interp: Interpreter::new(weights),
            max_context,
        }
    }
}

fn backend_err(backend: &'static str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        backend,
        msg: e.to_string(),
    }
}

impl DecodeBackend for CpuBackend<'_> {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn step(
        &mut self,
        token: u32,
        position: usize,
        want_logits: bool,
    ) -> Result<StepOutput, EngineError> {
        let inputs = [
            ("token", Tensor::i32([1], vec![token as i32])),
            ("position", Tensor::i32([1], vec![position as i32])),
        ];
        let results = self
            .interp
            .run(&self.graph, &inputs)
            .map_err(|e| backend_err("cpu", e))?;
        let next = results
            .iter()
            .find(|t| t.ty.dtype == DType::I32)
            .and_then(|t| t.ints.first())
            .ok_or_else(|| backend_err("cpu", "the decode graph has no i32 next-token result"))?;
        let logits = if want_logits {
            let t = results
                .iter()
                .find(|t| t.ty.dtype != DType::I32)
                .ok_or_else(|| backend_err("cpu", "the decode graph has no logits result"))?;
            Some(t.data.clone())
        } else {
            None
        };
        Ok(StepOutput {
            next_token: *next as u32,
            logits,
        })
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.interp.reset_state();
        Ok(())
    }
}

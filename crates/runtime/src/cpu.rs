//! The CPU backend: the reference interpreter ([`braid_ir::interp`]) running the decode-step graph,
//! f32 throughout. Slow, and exactly what the graph means: the oracle the GPU is checked against.
//!
//! Batched prefill ([`CpuBackend::with_prefill`]) runs the interpreter on the model's prefill step
//! over `T` tokens, in the chunks of [`prefill_chunks`]; the graphs share the decode step's KV-cache
//! leaves, so one interpreter state serves both. Each chunk size is lowered and fused once, on
//! first use.

use std::collections::HashMap;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, Tensor, WeightSource};

use crate::engine::{
    logits_by_token, prefill_by_token, prefill_chunks, DecodeBackend, EngineError, PrefillMode,
    StepOutput,
};
use crate::pipeline::StepGraphs;

/// The CPU backend: the reference interpreter running the decode-step graph.
pub struct CpuBackend<'w> {
    graph: Graph,
    interp: Interpreter<'w>,
    max_context: usize,
    prefill: PrefillMode,
    steps: Option<StepGraphs<'w>>,
    /// Prefill graphs by `(tokens, all_logits)`.
    prefill_graphs: HashMap<(usize, bool), Graph>,
}

impl<'w> CpuBackend<'w> {
    /// A CPU backend for `graph` (a decode step lowered for `max_context` positions). It prefills
    /// token by token until [`CpuBackend::with_prefill`] gives it the model's other steps.
    pub fn new(graph: Graph, weights: &'w dyn WeightSource, max_context: usize) -> Self {
        CpuBackend {
            graph,
            interp: Interpreter::new(weights),
            max_context,
            prefill: PrefillMode::Token,
            steps: None,
            prefill_graphs: HashMap::new(),
        }
    }

    /// This backend prefilling with `mode`, lowering its prefill steps from `steps` (which must
    /// describe the model of the decode graph, with the same `max_context` and cache dtype).
    pub fn with_prefill(mut self, steps: StepGraphs<'w>, mode: PrefillMode) -> Self {
        self.steps = Some(steps);
        self.prefill = mode;
        self
    }

    /// The prefill graph over `tokens` tokens, lowered on first use.
    fn prefill_graph(&mut self, tokens: usize, all_logits: bool) -> Result<&Graph, EngineError> {
        let key = (tokens, all_logits);
        if !self.prefill_graphs.contains_key(&key) {
            let steps = self
                .steps
                .as_ref()
                .ok_or_else(|| backend_err("cpu", "batched prefill needs the model's steps"))?;
            let g = steps.graph(tokens, all_logits).map_err(|e| {
                backend_err("cpu", format!("lowering the {tokens}-token step: {e:#}"))
            })?;
            // The all-logits graphs of `check` come one per prompt length: keep few of them.
            if all_logits {
                self.prefill_graphs.retain(|k, _| !k.1);
            }
            self.prefill_graphs.insert(key, g);
        }
        self.prefill_graphs
            .get(&key)
            .ok_or_else(|| backend_err("cpu", "the prefill graph vanished"))
    }

    /// Runs `tokens` at `position` through the graph for their count and returns its results.
    fn run_chunk(
        &mut self,
        tokens: &[u32],
        position: usize,
        all_logits: bool,
    ) -> Result<Vec<Tensor>, EngineError> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let inputs = [
            ("token", Tensor::i32([ids.len()], ids)),
            ("position", Tensor::i32([1], vec![position as i32])),
        ];
        let results = if tokens.len() == 1 {
            self.interp.run(&self.graph, &inputs)
        } else {
            // The graph is taken out of the cache for the run (the interpreter borrows it).
            self.prefill_graph(tokens.len(), all_logits)?;
            let g = self
                .prefill_graphs
                .remove(&(tokens.len(), all_logits))
                .ok_or_else(|| backend_err("cpu", "the prefill graph vanished"))?;
            let r = self.interp.run(&g, &inputs);
            self.prefill_graphs.insert((tokens.len(), all_logits), g);
            r
        };
        results.map_err(|e| backend_err("cpu", e))
    }
}

fn overflow(msg: String) -> EngineError {
    backend_err("cpu", msg)
}

fn backend_err(backend: &'static str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        backend,
        msg: e.to_string(),
    }
}

/// The next token (the i32 result) and the logits (the f32 result) of a step's results.
fn outputs(results: &[Tensor], want_logits: bool) -> Result<StepOutput, EngineError> {
    let next = results
        .iter()
        .find(|t| t.ty.dtype == DType::I32)
        .and_then(|t| t.ints.first())
        .ok_or_else(|| backend_err("cpu", "the step graph has no i32 next-token result"))?;
    let logits = if want_logits {
        let t = results
            .iter()
            .find(|t| t.ty.dtype != DType::I32)
            .ok_or_else(|| backend_err("cpu", "the step graph has no logits result"))?;
        Some(t.data.clone())
    } else {
        None
    };
    Ok(StepOutput {
        next_token: *next as u32,
        logits,
    })
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
        let results = self.run_chunk(&[token], position, false)?;
        outputs(&results, want_logits)
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.interp.reset_state();
        Ok(())
    }

    /// Lowers the prefill graphs of every chunk size a prompt of `len` tokens uses.
    fn warm_prefill(&mut self, len: usize) -> Result<(), EngineError> {
        if let PrefillMode::Batched { chunk } = self.prefill {
            if self.steps.is_some() {
                for c in prefill_chunks(len, chunk) {
                    if c > 1 {
                        self.prefill_graph(c, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn prefill(
        &mut self,
        tokens: &[u32],
        start: usize,
        want_logits: bool,
    ) -> Result<StepOutput, EngineError> {
        let chunk = match self.prefill {
            PrefillMode::Batched { chunk } if self.steps.is_some() => chunk,
            _ => return prefill_by_token(self, tokens, start, want_logits),
        };
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        // Refuse before any chunk runs, so a failed prefill leaves no rows half written.
        if start + tokens.len() > self.max_context {
            return Err(overflow(format!(
                "a prefill of {} tokens at position {start} runs past the context ({} positions)",
                tokens.len(),
                self.max_context
            )));
        }
        let mut at = 0;
        let mut last = None;
        for c in prefill_chunks(tokens.len(), chunk) {
            let results = self.run_chunk(&tokens[at..at + c], start + at, false)?;
            at += c;
            last = Some(results);
        }
        let results = last.ok_or(EngineError::EmptyPrompt)?;
        outputs(&results, want_logits)
    }

    fn prefill_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if !matches!(self.prefill, PrefillMode::Batched { .. }) || self.steps.is_none() {
            return logits_by_token(self, tokens, start);
        }
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let results = self.run_chunk(tokens, start, true)?;
        let logits = results
            .iter()
            .find(|t| t.ty.dtype != DType::I32)
            .ok_or_else(|| backend_err("cpu", "the prefill graph has no logits result"))?;
        let vocab = logits.ty.shape.last().copied().unwrap_or(0).max(1);
        if logits.data.len() != vocab * tokens.len() {
            return Err(backend_err(
                "cpu",
                format!(
                    "the prefill graph returned logits {} for {} tokens",
                    logits.ty,
                    tokens.len()
                ),
            ));
        }
        Ok(logits.data.chunks(vocab).map(<[f32]>::to_vec).collect())
    }
}

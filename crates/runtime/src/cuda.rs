//! The CUDA backend of the engine: an adapter from `braid-backend-cuda`'s executor to
//! [`DecodeBackend`].
//!
//! Batched prefill ([`CudaBackend::with_prefill`]): the prompt runs in the chunks of
//! [`prefill_chunks`] (powers of two up to the chunk size), each through the executor of the
//! model's prefill step for that size. Those executors share the decode executor's KV caches and
//! uploaded weights ([`CudaExecutor::from_plan_sharing`]): a chunk's rows are where the next
//! decode step reads them. Each size is lowered, planned and captured once, on first use, and
//! kept (at most `log2(chunk) + 1` of them; a chunk of one token is the decode step itself). Only
//! the largest chunk's activation arena is large: memory stays bounded for any prompt length.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use braid_backend_cuda::{CudaDevice, CudaExecutor, ExecOptions};
use braid_ir::{Graph, WeightSource};

use crate::engine::{
    logits_by_token, prefill_by_token, prefill_chunks, DecodeBackend, EngineError, PrefillMode,
    StepOutput,
};
use crate::pipeline::StepGraphs;

/// The decode step on the GPU: one CUDA graph replay per token (or eager launches), and batched
/// prefill through the model's prefill steps.
pub struct CudaBackend<'m> {
    dev: CudaDevice,
    exec: CudaExecutor,
    weights: &'m dyn WeightSource,
    opts: ExecOptions,
    max_context: usize,
    prefill: PrefillMode,
    steps: Option<StepGraphs<'m>>,
    /// Prefill executors by chunk size, sharing `exec`'s KV caches and weights.
    chunks: BTreeMap<usize, CudaExecutor>,
    /// The last all-logits executor (`check`), by token count.
    all_logits: Option<(usize, CudaExecutor)>,
}

impl<'m> CudaBackend<'m> {
    /// Uploads weights, plans memory, compiles kernels and, with `opts.use_graph`, captures the
    /// step. It prefills token by token until [`CudaBackend::with_prefill`] gives it the model's
    /// other steps.
    pub fn new(
        dev: &CudaDevice,
        graph: &Graph,
        weights: &'m dyn WeightSource,
        max_context: usize,
        opts: ExecOptions,
    ) -> Result<Self> {
        let exec = CudaExecutor::new(dev, graph, weights, opts)
            .context("setting up the CUDA decode step")?;
        Ok(CudaBackend {
            dev: dev.clone(),
            exec,
            weights,
            opts,
            max_context,
            prefill: PrefillMode::Token,
            steps: None,
            chunks: BTreeMap::new(),
            all_logits: None,
        })
    }

    /// This backend prefilling with `mode`, its prefill steps lowered from `steps` (the model of
    /// the decode graph, same `max_context`, bf16 cache).
    pub fn with_prefill(mut self, steps: StepGraphs<'m>, mode: PrefillMode) -> Self {
        self.steps = Some(steps);
        self.prefill = mode;
        self
    }

    /// The decode executor.
    pub fn executor(&mut self) -> &mut CudaExecutor {
        &mut self.exec
    }

    /// An executor of the prefill step over `tokens` tokens sharing the decode executor's KV
    /// caches and weights.
    fn build(&self, tokens: usize, all_logits: bool) -> Result<CudaExecutor, EngineError> {
        let steps = self
            .steps
            .as_ref()
            .ok_or_else(|| cuda_msg("batched prefill needs the model's steps".into()))?;
        let g = steps
            .graph(tokens, all_logits)
            .map_err(|e| cuda_msg(format!("lowering the {tokens}-token prefill step: {e:#}")))?;
        CudaExecutor::new_sharing(&self.dev, &g, self.weights, &self.exec, self.opts).map_err(|e| {
            cuda_msg(format!(
                "setting up the {tokens}-token prefill step: {e} (--prefill token prefills \
                 through the decode step instead)"
            ))
        })
    }

    /// The prefill executor of chunks of `tokens`, built on first use.
    fn chunk(&mut self, tokens: usize) -> Result<&mut CudaExecutor, EngineError> {
        if !self.chunks.contains_key(&tokens) {
            let e = self.build(tokens, false)?;
            self.chunks.insert(tokens, e);
        }
        self.chunks
            .get_mut(&tokens)
            .ok_or_else(|| cuda_msg("the prefill executor vanished".into()))
    }

    /// What a prefill of `len` tokens costs at least: the matmul FLOPs of its steps (every chunk's,
    /// [`CudaExecutor::matmul_flops`]) and the bytes that must move: the weights once and the
    /// KV-cache rows it writes. Builds the chunks' executors ([`DecodeBackend::warm_prefill`]).
    ///
    /// Errors: as [`DecodeBackend::prefill`].
    pub fn prefill_cost(&mut self, len: usize) -> Result<(f64, usize), EngineError> {
        self.warm_prefill(len)?;
        let chunk = match self.prefill {
            PrefillMode::Batched { chunk } if self.steps.is_some() => chunk,
            _ => 1,
        };
        let mut flops = 0.0;
        for c in prefill_chunks(len, chunk) {
            flops += match self.chunks.get(&c) {
                Some(e) if c > 1 => e.matmul_flops(),
                _ => self.exec.matmul_flops(),
            };
        }
        let (_, kv, _) = self.exec.memory_bytes();
        let kv_rows = kv / self.max_context.max(1) * len;
        Ok((flops, self.exec.weight_bytes() + kv_rows))
    }
}

fn cuda_err(e: braid_backend_cuda::CudaError) -> EngineError {
    cuda_msg(e.to_string())
}

fn cuda_msg(msg: String) -> EngineError {
    EngineError::Backend {
        backend: "cuda",
        msg,
    }
}

impl DecodeBackend for CudaBackend<'_> {
    fn name(&self) -> &'static str {
        "cuda"
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
        if want_logits {
            let logits = self.exec.step_logits(token, position).map_err(cuda_err)?;
            // The step computed the greedy token on the device too: read it, no host argmax.
            let next_token = self.exec.last_token().map_err(cuda_err)?;
            Ok(StepOutput {
                next_token,
                logits: Some(logits),
            })
        } else {
            let next_token = self.exec.step(token, position).map_err(cuda_err)?;
            Ok(StepOutput {
                next_token,
                logits: None,
            })
        }
    }

    fn reset(&mut self) -> Result<(), EngineError> {
        self.exec.reset().map_err(cuda_err)
    }

    /// Builds the prefill executors of every chunk size a prompt of `len` tokens uses.
    fn warm_prefill(&mut self, len: usize) -> Result<(), EngineError> {
        if let PrefillMode::Batched { chunk } = self.prefill {
            if self.steps.is_some() {
                for c in prefill_chunks(len, chunk) {
                    if c > 1 {
                        self.chunk(c)?;
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
            return Err(cuda_msg(format!(
                "a prefill of {} tokens at position {start} runs past the context ({} positions)",
                tokens.len(),
                self.max_context
            )));
        }
        let sizes = prefill_chunks(tokens.len(), chunk);
        let (mut at, mut out) = (0, None);
        for (i, &c) in sizes.iter().enumerate() {
            let ids = &tokens[at..at + c];
            let last = i + 1 == sizes.len();
            let logits = want_logits && last;
            out = Some(if c == 1 {
                self.step(ids[0], start + at, logits)?
            } else {
                let exec = self.chunk(c)?;
                if logits {
                    let l = exec.prefill_logits(ids, start + at).map_err(cuda_err)?;
                    StepOutput {
                        next_token: exec.last_token().map_err(cuda_err)?,
                        logits: Some(l),
                    }
                } else {
                    StepOutput {
                        next_token: exec.prefill(ids, start + at).map_err(cuda_err)?,
                        logits: None,
                    }
                }
            });
            at += c;
        }
        out.ok_or(EngineError::EmptyPrompt)
    }

    fn prefill_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if !matches!(self.prefill, PrefillMode::Batched { .. })
            || self.steps.is_none()
            || tokens.len() < 2
        {
            return logits_by_token(self, tokens, start);
        }
        let t = tokens.len();
        if self.all_logits.as_ref().is_none_or(|(n, _)| *n != t) {
            // Drop the previous one first: its activations ([T, vocab] logits) are large.
            self.all_logits = None;
            self.all_logits = Some((t, self.build(t, true)?));
        }
        let (_, exec) = self
            .all_logits
            .as_mut()
            .ok_or_else(|| cuda_msg("the all-logits executor vanished".into()))?;
        let logits = exec.prefill_logits(tokens, start).map_err(cuda_err)?;
        let vocab = logits.len() / t;
        if vocab == 0 || logits.len() != vocab * t {
            return Err(cuda_msg(format!(
                "the prefill step returned {} logits for {t} tokens",
                logits.len()
            )));
        }
        Ok(logits.chunks(vocab).map(<[f32]>::to_vec).collect())
    }
}

//! The CUDA backend of the engine: an adapter from `braid-backend-cuda`'s executor to
//! [`DecodeBackend`].

use anyhow::{Context, Result};
use braid_backend_cuda::{CudaDevice, CudaExecutor, ExecOptions};
use braid_ir::{Graph, WeightSource};

use crate::engine::{DecodeBackend, EngineError, StepOutput};

/// The decode step on the GPU: one CUDA graph replay per token (or eager launches).
pub struct CudaBackend {
    exec: CudaExecutor,
    max_context: usize,
}

impl CudaBackend {
    /// Uploads weights, plans memory, compiles kernels and, with `opts.use_graph`, captures the
    /// step.
    pub fn new(
        dev: &CudaDevice,
        graph: &Graph,
        weights: &dyn WeightSource,
        max_context: usize,
        opts: ExecOptions,
    ) -> Result<Self> {
        let exec = CudaExecutor::new(dev, graph, weights, opts)
            .context("setting up the CUDA decode step")?;
        Ok(CudaBackend { exec, max_context })
    }
}

fn cuda_err(e: braid_backend_cuda::CudaError) -> EngineError {
    EngineError::Backend {
        backend: "cuda",
        msg: e.to_string(),
    }
}

impl DecodeBackend for CudaBackend {
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
}

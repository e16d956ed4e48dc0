//! The CUDA decode backend: an adapter from `braid-backend-cuda`'s executor to [`DecodeBackend`].

use anyhow::Result;
use braid_ir::{Graph, WeightSource};

use crate::engine::{DecodeBackend, EngineError, StepOutput};

/// Checks that a CUDA device can be opened (driver loads, at least one device).
pub fn probe() -> Result<()> {
    anyhow::bail!("the CUDA backend is not wired into the runner yet")
}

/// The decode step on the GPU.
pub struct CudaBackend {
    max_context: usize,
}

impl CudaBackend {
    /// Uploads weights, plans memory, compiles kernels and (with `use_graph`) captures the step.
    pub fn new(
        _graph: &Graph,
        _weights: &dyn WeightSource,
        max_context: usize,
        _use_graph: bool,
    ) -> Result<Self> {
        probe()?;
        Ok(CudaBackend { max_context })
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
        _token: u32,
        _position: usize,
        _want_logits: bool,
    ) -> Result<StepOutput, EngineError> {
        Err(EngineError::Backend {
            backend: "cuda",
            msg: "not wired yet".into(),
        })
    }
    fn reset(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// `braid bench` on the GPU.
pub fn bench(_model: &crate::load::LoadedModel, _args: &crate::cli::BenchArgs) -> Result<()> {
    probe()
}

/// `braid profile` on the GPU.
pub fn profile(_model: &crate::load::LoadedModel, _args: &crate::cli::ProfileArgs) -> Result<()> {
    probe()
}

//! Backend selection: lower the model, run the passes, and open the CPU or CUDA decode step.

use anyhow::{Context, Result};
use braid_ir::DType;

use crate::cli::DeviceArg;
use crate::commands::graph::run_passes;
use crate::cuda::CudaBackend;
use crate::engine::{CpuBackend, DecodeBackend};
use crate::load::LoadedModel;

/// What the caller wants from a backend.
#[derive(Clone, Copy, Debug)]
pub struct BackendRequest<'a> {
    pub device: DeviceArg,
    /// Pass pipeline spec (`none`, `default`, `a,b`).
    pub passes: &'a str,
    /// KV-cache rows.
    pub max_context: usize,
    /// CUDA only: replay a captured CUDA graph (true) or launch eagerly.
    pub use_graph: bool,
}

/// Opens the decode step of `model` on the requested device.
///
/// `auto` picks the GPU when one is usable and says so on stderr when it falls back to the CPU;
/// `cuda` without a usable GPU is an error naming the reason (no driver, no device).
pub fn open_backend<'m>(
    model: &'m LoadedModel,
    req: &BackendRequest<'_>,
) -> Result<Box<dyn DecodeBackend + 'm>> {
    // Fail on a weightless directory before paying for lowering, passes and device set-up.
    let weights = model.weights()?;
    let device = match req.device {
        DeviceArg::Cpu => None,
        DeviceArg::Cuda => {
            Some(crate::cuda::open_device().context("--device cuda: no usable GPU")?)
        }
        DeviceArg::Auto => match crate::cuda::open_device() {
            Ok(dev) => Some(dev),
            Err(e) => {
                tracing::info!("no usable GPU ({e:#}); running on the CPU");
                None
            }
        },
    };
    let use_cuda = device.is_some();
    // The GPU keeps its KV cache in bf16 (as transformers' bf16 cache); the CPU reference in f32.
    let kv_dtype = if use_cuda { DType::BF16 } else { DType::F32 };
    let mut graph = model.lower(req.max_context, kv_dtype)?;
    run_passes(&mut graph, req.passes, &[])?;
    if let Some(dev) = device {
        let b = CudaBackend::new(&dev, &graph, weights, req.max_context, req.use_graph)?;
        Ok(Box::new(b))
    } else {
        Ok(Box::new(CpuBackend::new(graph, weights, req.max_context)))
    }
}

//! The one path from a loaded model to something that runs its decode step: lower the model to
//! IR, run the pass pipeline, and open a backend (the CPU reference interpreter or the CUDA
//! executor).
//!
//! ```text
//! LoadedModel ──lower──► ir::Graph ──passes──► fused ir::Graph ──► CpuBackend | CudaBackend
//! ```
//!
//! The commands (`crate::commands`) build on this module; nothing here knows about the command
//! line, and no library module imports a command.

use anyhow::{bail, Context, Result};
use braid_backend_cuda::{CudaDevice, CudaExecutor, ExecOptions, Tuning};
use braid_ir::{DType, Graph, WeightSource};
use braid_passes::PassManager;

use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::decoder::LowerOptions;
use crate::engine::{DecodeBackend, PrefillMode};
use crate::load::LoadedModel;

/// Where a decode step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (said on stderr).
    Auto,
    /// The reference interpreter on the CPU.
    Cpu,
    /// The CUDA backend; an error when no GPU is usable.
    Cuda,
}

impl Device {
    /// `auto`, `cpu` or `cuda`, as `--device` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// What the caller wants from a backend.
#[derive(Clone, Copy, Debug)]
pub struct BackendRequest<'a> {
    pub device: Device,
    /// Pass pipeline spec (`none`, `default`, `a,b`).
    pub passes: &'a str,
    /// KV-cache rows (tokens).
    pub max_context: usize,
    /// CUDA only: the executor's options (graph replay or eager launches, PDL, tuning knobs).
    pub exec: ExecOptions,
    /// How prompts are prefilled (batched by default).
    pub prefill: PrefillMode,
}

impl<'a> BackendRequest<'a> {
    /// A request with the executor's default options (captured CUDA graph, PDL, default tuning).
    pub fn new(device: Device, passes: &'a str, max_context: usize) -> Self {
        BackendRequest {
            device,
            passes,
            max_context,
            exec: ExecOptions::default(),
            prefill: PrefillMode::default(),
        }
    }
}

/// The executor options of a command: `use_graph` as asked, the backend's tuning knobs from the
/// `BRAID_*` environment variables ([`Tuning::from_env`], read here and nowhere else).
///
/// Errors: a knob set to a value it does not take (the message names the variable).
pub fn exec_options(use_graph: bool) -> Result<ExecOptions> {
    Ok(ExecOptions {
        use_graph,
        tuning: Tuning::from_env()?,
        ..ExecOptions::default()
    })
}

/// The tuning knobs in force ([`Tuning::from_env`]).
///
/// Errors: as [`exec_options`].
pub fn tuning() -> Result<Tuning> {
    Ok(Tuning::from_env()?)
}

/// The KV-cache rows a run gets without `--max-context` (or the model's `max_position_embeddings`
/// when that is smaller).
pub const DEFAULT_MAX_CONTEXT: usize = 1024;

/// The most KV-cache rows any run may ask for: positions are `i32` in the decode step.
pub const MAX_CONTEXT_LIMIT: usize = i32::MAX as usize;

/// The most elements one tensor (a layer's KV cache) may have: the IR's own bound, 2^48.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 48;

/// What a caller asks of the KV cache's size: explicit rows (`--max-context`) and whether rows past
/// the model's trained length are allowed (`--allow-long-context`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextRequest {
    pub rows: Option<usize>,
    pub allow_long: bool,
}

/// The KV-cache rows to use: `req.rows`, or `default` capped at the model's
/// `max_position_embeddings`.
///
/// Errors: rows beyond `max_position_embeddings` without `allow_long`, beyond
/// [`MAX_CONTEXT_LIMIT`], or a KV cache of more than [`MAX_TENSOR_ELEMENTS`] per layer (the message
/// names `--max-context`).
pub fn resolve_max_context(
    config: &crate::model::Qwen3Config,
    req: ContextRequest,
    default: usize,
) -> Result<usize> {
    let trained = config.max_position_embeddings;
    let n = match req.rows {
        Some(n) => n,
        None => default.min(trained).max(1),
    };
    if n > MAX_CONTEXT_LIMIT {
        bail!(
                "--max-context {n}: at most {MAX_CONTEXT_LIMIT} KV-cache rows (positions are 32-bit in the decode step)"
            );
    }
    let row = (config.num_key_value_heads as u64) * (config.head_dim as u64);
    if (n as u64).saturating_mul(row) > MAX_TENSOR_ELEMENTS {
        bail!(
            "--max-context {n}: a KV cache of {n} rows x {row} elements is more than 2^48 \
                 elements per layer, the most a tensor may hold"
        );
    }
    if n > trained && !req.allow_long {
        let what = if req.rows.is_some() {
            format!("--max-context {n}")
        } else {
            format!("{n} positions are needed, which")
        };
        bail!(
                "{what} is more than the model's max_position_embeddings = {trained} (from its config); \
                 lower it, or pass --allow-long-context to run past the trained length"
            );
    }
    Ok(n)
}

/// The KV-cache dtype of a step: bf16 on the GPU (as transformers' bf16 cache), f32 on the CPU
/// reference.
pub fn kv_dtype(on_gpu: bool) -> DType {
    if on_gpu {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Runs the pass pipeline `spec` over `g`. After each pass named in `print_after`, `hook(pass,
/// graph)` is called (`braid graph --print-after`).
///
/// Errors: an unknown pass in `spec`, a name in `print_after` that the pipeline does not run (the
/// message lists the passes it runs), or a failing pass.
pub fn run_passes(
    g: &mut Graph,
    spec: &str,
    print_after: &[String],
    hook: &mut dyn FnMut(&str, &Graph),
) -> Result<()> {
    let pm = PassManager::from_spec(spec).with_context(|| format!("--passes {spec}"))?;
    for name in print_after {
        if !pm.names().iter().any(|n| n == name) {
            bail!(
                "--print-after {name}: no such pass in `--passes {spec}` (it runs: {})",
                pm.names().join(", ")
            );
        }
    }
    pm.run_with_hook(g, |pass: &str, g: &Graph| {
        if print_after.iter().any(|p| p == pass) {
            hook(pass, g);
        }
    })
    .with_context(|| format!("running passes `{spec}`"))
}

/// Lowers `model`'s decode step for `max_context` positions with a `kv_dtype` cache and runs the
/// passes `spec` over it.
///
/// Errors: those of [`LoadedModel::lower`] and [`run_passes`].
pub fn fused_graph(
    model: &LoadedModel,
    spec: &str,
    max_context: usize,
    kv_dtype: DType,
) -> Result<Graph> {
    let mut g = model.lower(max_context, kv_dtype)?;
    run_passes(&mut g, spec, &[], &mut |_, _| {})?;
    Ok(g)
}

/// Lowers a step of `model` with `opts` (decode, or prefill over `opts.tokens` tokens) and runs
/// the passes `spec` over it.
///
/// Errors: those of [`LoadedModel::lower_with`] and [`run_passes`].
pub fn fused_step_graph(model: &LoadedModel, spec: &str, opts: LowerOptions) -> Result<Graph> {
    let mut g = model.lower_with(opts)?;
    run_passes(&mut g, spec, &[], &mut |_, _| {})?;
    Ok(g)
}

/// The steps of one model, lowered and fused on demand: the decode step's siblings over `T`
/// tokens that batched prefill runs. Every graph shares the decode step's KV-cache leaves (names,
/// types), so all of them read and write one cache.
#[derive(Clone)]
pub struct StepGraphs<'m> {
    model: &'m LoadedModel,
    passes: String,
    max_context: usize,
    kv_dtype: DType,
}

impl<'m> StepGraphs<'m> {
    /// Steps of `model` with the passes `passes`, `max_context` cache rows of `kv_dtype`.
    pub fn new(model: &'m LoadedModel, passes: &str, max_context: usize, kv_dtype: DType) -> Self {
        StepGraphs {
            model,
            passes: passes.to_string(),
            max_context,
            kv_dtype,
        }
    }

    /// The fused step over `tokens` tokens (1: the decode step), with every token's logits when
    /// `all_logits`.
    ///
    /// Errors: as [`fused_step_graph`].
    pub fn graph(&self, tokens: usize, all_logits: bool) -> Result<Graph> {
        let opts =
            LowerOptions::decode(self.max_context, self.kv_dtype).with_tokens(tokens, all_logits);
        fused_step_graph(self.model, &self.passes, opts)
    }

    /// The model's weights.
    ///
    /// Errors: the model has none.
    pub fn weights(&self) -> Result<&'m dyn WeightSource> {
        self.model.weights()
    }
}

/// Opens GPU 0. Errors say why none is usable (driver library missing, no device).
pub fn open_gpu() -> Result<CudaDevice> {
    Ok(CudaDevice::open(0)?)
}

/// The GPU `device` asks for: `None` for the CPU, the GPU for `cuda` (an error without one), and
/// for `auto` the GPU when one opens, else `None` with a note on stderr.
pub fn select_gpu(device: Device) -> Result<Option<CudaDevice>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda => Ok(Some(open_gpu().context("--device cuda: no usable GPU")?)),
        Device::Auto => match open_gpu() {
            Ok(dev) => Ok(Some(dev)),
            Err(e) => {
                tracing::info!("no usable GPU ({e:#}); running on the CPU");
                Ok(None)
            }
        },
    }
}

/// Opens the decode step of `model` on the requested device.
///
/// Errors: the model has no weights (checked first, before lowering and device set-up); `cuda`
/// without a usable GPU; lowering, pass or executor set-up failures.
pub fn open_backend<'m>(
    model: &'m LoadedModel,
    req: &BackendRequest<'_>,
) -> Result<Box<dyn DecodeBackend + 'm>> {
    let weights = model.weights()?;
    let gpu = select_gpu(req.device)?;
    check_kv_memory(model, req.max_context, gpu.as_ref())?;
    let kv = kv_dtype(gpu.is_some());
    let graph = fused_graph(model, req.passes, req.max_context, kv)?;
    let steps = StepGraphs::new(model, req.passes, req.max_context, kv);
    Ok(match gpu {
        Some(dev) => Box::new(
            CudaBackend::new(&dev, &graph, weights, req.max_context, req.exec)?
                .with_prefill(steps, req.prefill),
        ),
        None => Box::new(
            CpuBackend::new(graph, weights, req.max_context).with_prefill(steps, req.prefill),
        ),
    })
}

/// The CUDA backend of `model` on `dev` as its concrete type (for `bench`, which warms and times
/// its prefill steps), with `req`'s passes, context, executor options and prefill mode.
///
/// Errors: no weights; lowering, pass or executor set-up failures.
pub fn cuda_backend<'m>(
    dev: &CudaDevice,
    model: &'m LoadedModel,
    req: &BackendRequest<'_>,
) -> Result<CudaBackend<'m>> {
    let weights = model.weights()?;
    let kv = kv_dtype(true);
    let graph = fused_graph(model, req.passes, req.max_context, kv)?;
    let steps = StepGraphs::new(model, req.passes, req.max_context, kv);
    Ok(
        CudaBackend::new(dev, &graph, weights, req.max_context, req.exec)?
            .with_prefill(steps, req.prefill),
    )
}

/// The CUDA executor of `model`'s fused decode step on `dev` (bf16 KV cache), for the commands that
/// drive the executor directly (`bench`, `profile`).
///
/// Errors: no weights; lowering, pass or executor set-up failures.
pub fn cuda_executor(
    dev: &CudaDevice,
    model: &LoadedModel,
    spec: &str,
    max_context: usize,
    opts: ExecOptions,
) -> Result<CudaExecutor> {
    let weights = model.weights()?;
    check_kv_memory(model, max_context, Some(dev))?;
    let g = fused_graph(model, spec, max_context, kv_dtype(true))?;
    CudaExecutor::new(dev, &g, weights, opts).context("setting up the CUDA decode step")
}

/// Refuses a KV cache that does not fit before anything is allocated. Its bytes (k and v caches of
/// every layer: `max_context` rows of `num_key_value_heads * head_dim` elements, bf16 on the GPU, f32
/// on the CPU) are compared with the GPU's free memory, or on the CPU with the available memory
/// (sysinfo; the cgroup limit when lower) less the f32 copies of the weights the reference
/// interpreter makes.
///
/// Errors: the bytes overflow, or are more than is available; the message gives both figures.
pub fn check_kv_memory(
    model: &LoadedModel,
    max_context: usize,
    gpu: Option<&CudaDevice>,
) -> Result<()> {
    let c = &model.config;
    let dtype = kv_dtype(gpu.is_some());
    let per_row =
        (c.num_key_value_heads as u128) * (c.head_dim as u128) * dtype.size_bytes() as u128;
    let kv = 2 * (c.num_hidden_layers as u128) * (max_context as u128) * per_row;
    let (available, other, place) = match gpu {
        Some(dev) => {
            let (free, _total) = dev.memory()?;
            (free as u128, 0u128, format!("free on {}", dev.name()))
        }
        None => {
            let mut sys = sysinfo::System::new();
            sys.refresh_memory();
            let mut avail = sys.available_memory();
            if let Some(limit) = sys.cgroup_limits() {
                avail = avail.min(limit.free_memory);
            }
            // The interpreter upcasts every weight it reads to f32 and keeps it.
            let params: u128 = c
                .tensor_specs()
                .iter()
                .map(|s| s.shape.iter().map(|&d| d as u128).product::<u128>())
                .sum();
            (avail as u128, params * 4, "available in memory".to_string())
        }
    };
    let needed = kv + other;
    let human = |b: u128| crate::ui::human_bytes(u64::try_from(b).unwrap_or(u64::MAX));
    if other > available {
        bail!(
            "{}: the CPU reference interpreter holds every weight as f32, {} ({other} bytes), but \
             only {} ({available} bytes) is {place}; run it on a GPU (--device cuda)",
            model.source,
            human(other),
            human(available)
        );
    }
    if needed > available {
        let weights = if other > 0 {
            format!(" plus {} of f32 weights", human(other))
        } else {
            String::new()
        };
        bail!(
            "--max-context {max_context}: the KV cache needs {} ({kv} bytes: k and v, {} layers x \
             {max_context} rows x {} KV heads x {} x {dtype}){weights}, but only {} ({available} bytes) \
             is {place}; lower --max-context",
            human(kv),
            c.num_hidden_layers,
            c.num_key_value_heads,
            c.head_dim,
            human(available)
        );
    }
    Ok(())
}

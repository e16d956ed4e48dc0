//! # braid-backend-cuda
//!
//! The CUDA backend of braid: it executes a [`braid_ir::Graph`] decode step (or a prefill step over
//! `T` tokens) on an NVIDIA GPU, fused or not, by turning every node into kernel launches (NVRTC-compiled `kernels/*.cu`), and replays the
//! whole step as one CUDA graph.
//!
//! ```no_run
//! # fn demo(g: &braid_ir::Graph, w: &dyn braid_ir::WeightSource) -> Result<(), braid_backend_cuda::CudaError> {
//! use braid_backend_cuda::{measure_read_bandwidth, CudaDevice, CudaExecutor, ExecOptions};
//! let dev = CudaDevice::open(0)?;                       // "no CUDA device: <reason>" without one
//! let mut exec = CudaExecutor::new(&dev, g, w, ExecOptions::default())?;
//! let mut token = 151644;
//! for position in 0..16 {
//!     token = exec.step(token, position)?;              // one graph launch, 4 bytes back
//! }
//! let more = exec.decode_greedy(token, 16, 64)?;         // 64 steps fed on the device, one sync
//! let bw = measure_read_bandwidth(&dev, exec.weight_bytes())?; // bytes/s, for the roofline
//! println!("{}", exec.profile(8)?);                      // per-op timing table
//! # let _ = (bw, more); Ok(()) }
//! ```
//!
//! ## What the backend executes
//!
//! Exactly what the graph says, with no model-specific code: activations are f32, weights keep their
//! checkpoint dtype (bf16 is the fast path; f16 and f32 work too) and are upcast on use, `token` and
//! `position` are `i32[1]` inputs, KV caches are `kv_cache` leaves `[max_context, kv_heads, head_dim]`
//! in bf16, f16 or f32. Results are found by type: the first f32 result is the logits, the first
//! `i32[1]` result the next token.
//!
//! ## Life of a decode step
//!
//! - Load ([`CudaExecutor::new`]): the graph is verified and planned ([`plan`]): weight-only
//!   subgraphs (`concat` of q/k/v weights, reshapes, splits) are folded on the host and uploaded once
//!   ([`weights`]); activations share one arena laid out by liveness; inputs, KV caches and kernel
//!   scratch get their own buffers. Every buffer exists before the launch list is built, so the list
//!   holds plain device pointers ([`launch::Launch`]).
//! - Kernels read the position from device memory, never as a launch argument, and attention uses a
//!   grid fixed for `max_context` (blocks past the position exit at once), so one recorded step serves
//!   every position.
//! - Graph mode (default): the step — copy inputs in from pinned memory, every launch (with
//!   programmatic dependent launch on sm_90+), copy the 4-byte next token out — is captured once into
//!   a CUDA graph and replayed per token. Host code never sits between two kernels of a step.
//! - Self-feeding loop ([`CudaExecutor::decode_greedy`]): the step plus a one-thread `step_advance`
//!   launch (next token -> token input, position + 1, token history) recorded once more, replayed
//!   back to back: greedy decoding with no host work between tokens.
//! - Eager mode: the same launch list from the host. [`CudaExecutor::profile`] times every launch
//!   alone (a graph of the step with an event-record node between launches) and the executor's own
//!   step, for a per-op table ([`Profile`]).
//! - [`CudaExecutor::run`] runs a step on arbitrary inputs and returns every result, with the
//!   signature of the reference interpreter's `run`: the GPU tests compare the two op by op.
//!
//! ## Prefill steps
//!
//! A graph whose `token` input is `i32[T]` (the model lowered for `T` prompt tokens) plans and runs
//! like a decode step, with what `T` rows need:
//! - matmul-family nodes over at least [`Tuning::gemm_min_rows`] rows with bf16 weights become two
//!   plan entries ([`lower::gemm`]): `gemm_prologue_f32` (the rms_norm / SwiGLU prologue, written as
//!   the bf16 operand, and a residual copied into the output) and a cuBLAS GEMM (`cublasGemmEx`, bf16
//!   operands, f32 output and accumulation, beta = 1 over the residual), printed as
//!   `cublas_gemm_bf16 MxNxK`. The device holds one cuBLAS handle on its stream, with its own
//!   workspace, so the GEMMs are captured in the step's CUDA graph; libcublas loads at run time
//!   ([`CudaError::CublasUnavailable`] when it cannot).
//! - `attention` over `q [T, h, d]` is `kv_append_{dtype}` (the chunk's rows into the caches) and
//!   `attention_prefill_{dtype}_d{D}_g{GM}` (`kernels/attention_prefill.cu`: tiles of 64 query rows
//!   x 32 cache rows in shared memory, f32 online softmax, causal mask aligned to the chunk's end).
//! - rope / q-k norm rotate token `t` at `position + t`; a `split` of `[T, n]` rows feeding only them
//!   and the prefill attention is read in place.
//! - [`CudaExecutor::prefill`] / [`CudaExecutor::prefill_logits`] run it;
//!   [`CudaExecutor::from_plan_sharing`] builds it beside a decode executor of the same model,
//!   sharing its KV caches and uploaded weights; [`CudaExecutor::profile_prefill`] times its launches;
//!   [`measure_gemm_rate`] measures the compute ceiling its matmul FLOPs are set against.
//!
//! Kernel timing and dependencies: consecutive launches use programmatic dependent launch (PDL);
//! a kernel reads only data no kernel of the step writes (weights, KV-cache rows of earlier steps,
//! the position) before its `griddepcontrol.wait`. Tuning knobs are the fields of [`Tuning`].
//!
//! ## From graph to launches
//!
//! ```text
//! ir::Graph + Target (DeviceFacts + Occupancy) + Tuning
//!     │  lower::lower      a pure function, no GPU needed (Target::h200() is a recorded H200)
//!     ▼
//! Plan  (plan)             memory regions, scratch slots, launches with typed #[repr(C)] params
//!     │                    (params, mirrored by kernels/params.cuh), backend fusions; Plan::text
//!     ▼
//! CudaExecutor::from_plan  allocate regions, upload constants, bind symbolic pointers, capture
//! ```
//!
//! Measured on one H200 (Qwen3-0.6B shapes, random bf16 weights, fused graph, positions 0..256,
//! the `gpu_decode` test of 2026-12-01): 740.6 µs per token through [`CudaExecutor::decode_greedy`]
//! (1,350 tok/s, 36% of the weight-read roofline), 754.3 µs through [`CudaExecutor::step`]; 142
//! launches per step. `BENCHMARKS.md` has the `braid bench` figures.
//!
//! ## Requirements at run time
//!
//! libcuda (the driver) and libnvrtc (`libnvrtc.so.13`) are loaded at run time (`dynamic-loading`),
//! so the crate builds without CUDA; libcublas (`libcublas.so.13`, with `libcublasLt.so.13`) is
//! loaded on the first GEMM of a prefill step only. Compiled kernels are cached on disk ([`compile`]). No CUDA header
//! is needed by the kernels; `CUDA_HOME` (default `/usr/local/cuda`) is put on NVRTC's include path
//! when present.
//!
//! Modules: [`device`] (context, stream, cuBLAS handle, buffers, kernel loading), [`facts`] (device facts,
//! occupancy, recorded targets), [`tuning`] (the knobs), `env` (the only reader of the process
//! environment), [`compile`] (NVRTC + cache), [`plan`] (the plan and its memory), [`lower`] (graph ->
//! plan, one module per kernel family), [`params`] (kernel parameter structs), [`weights`] (folding +
//! upload), [`launch`] (one bound launch), [`exec`] (eager and graph executors), [`profile`],
//! [`mod@bench`] (roofline: read bandwidth, GEMM rate).

pub mod bench;
pub mod compile;
pub mod device;
mod env;
pub mod error;
pub mod exec;
pub mod facts;
pub mod launch;
pub mod lower;
pub mod params;
pub mod persistent;
pub mod plan;
pub mod profile;
pub mod tuning;
pub mod weights;

pub use bench::{measure_gemm_rate, measure_read_bandwidth};
pub use device::CudaDevice;
pub use error::CudaError;
pub use exec::{CudaExecutor, ExecOptions};
pub use facts::{DeviceFacts, Target};
pub use plan::Plan;
pub use profile::{Profile, ProfileRow};
pub use tuning::Tuning;

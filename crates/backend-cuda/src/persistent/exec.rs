//! Runs a [`Schedule`]: uploads the weights and the instruction queues, launches one CTA per
//! multiprocessor of `persistent_gemv`, replays it as a CUDA graph, and turns a device timeout into
//! an error naming the instruction and the counter.

use braid_ir::{Graph, Tensor, WeightSource};
use cudarc::driver::{result, sys, CudaGraph};

use super::schedule::{schedule, Schedule};
use crate::device::{CudaDevice, DevBuf, DevPtr};
use crate::error::{CudaError, DriverContext};
use crate::facts::KernelRef;
use crate::launch::{Launch, Work};
use crate::params::{Params, PersistentError, PersistentInsn, PersistentParams, Ptr, Region};
use crate::plan::Form;

/// Options of a persistent executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistentOptions {
    /// Ignore every dependency wait: the weights stream as they would, the results are garbage.
    /// The streaming-only measurement of the issue.
    pub no_deps: bool,
    /// Test only: raise every wait's target by one, so the first wait can never be met and the
    /// step must time out (the bounded-wait check).
    pub break_waits: bool,
}

/// Counter / epoch slots are 128 bytes apart (32 u32): each on its own cache line.
const SLOT: usize = 32;

/// One graph on one device in persistent mode.
pub struct PersistentExecutor {
    dev: CudaDevice,
    schedule: Schedule,
    _arena: DevBuf,
    io: DevBuf,
    _weights: DevBuf,
    _insns: DevBuf,
    _queues: DevBuf,
    counters: DevBuf,
    epochs: DevBuf,
    err: DevBuf,
    launch: Launch,
    graph: Option<CudaGraph>,
    results: Vec<(braid_ir::TensorType, DevPtr)>,
    weight_bytes: usize,
}

impl PersistentExecutor {
    /// Schedules `g` for `dev` ([`schedule`]), uploads its weights from `weights` and its queues,
    /// and records the step (one kernel launch) into a CUDA graph.
    ///
    /// Errors: [`CudaError::Unsupported`] for a graph the persistent mode does not run yet (the
    /// message names the node); a schedule that fails [`Schedule::validate`]; a device that cannot
    /// hold one CTA per multiprocessor; weight, compile and driver errors.
    pub fn new(
        dev: &CudaDevice,
        g: &Graph,
        weights: &dyn WeightSource,
        opts: PersistentOptions,
    ) -> Result<Self, CudaError> {
        dev.bind()?;
        let target = dev.target()?;
        let mut schedule = schedule(g, &target)?;
        schedule.validate().map_err(CudaError::Graph)?;
        if opts.break_waits {
            for q in &mut schedule.insns {
                if q.wait_counter >= 0 {
                    q.wait_target += 1;
                }
            }
        }
        let mem = &schedule.memory;
        let arena = dev.alloc_zeroed(mem.arena_bytes, "the activation arena")?;
        let io = dev.alloc_zeroed(mem.io_bytes, "the step inputs")?;
        let weights_buf = dev.alloc_zeroed(mem.weights_bytes, "the weights")?;
        let weight_bytes = crate::weights::upload_constants(dev, g, mem, weights, weights_buf.ptr)?;
        let resolve = |r: Region, off: usize| -> DevPtr {
            let base = match r {
                Region::Arena => arena.ptr,
                Region::Io => io.ptr,
                Region::Weights => weights_buf.ptr,
                Region::Kv | Region::Scratch(_) => 0,
            };
            base + off as u64
        };
        let bind = |p: Ptr| match p.symbolic() {
            Some((r, off)) => Ptr::device(resolve(r, off)),
            None => p,
        };
        let bound: Vec<PersistentInsn> = schedule
            .insns
            .iter()
            .map(|q| PersistentInsn {
                w: bind(q.w),
                x: bind(q.x),
                y: bind(q.y),
                ..*q
            })
            .collect();
        let insns =
            dev.alloc_zeroed(std::mem::size_of_val(bound.as_slice()), "the instructions")?;
        let queues = dev.alloc_zeroed(schedule.queue_start.len() * 4, "the instruction queues")?;
        // SAFETY: both buffers hold exactly these bytes; the copies are synchronous.
        unsafe {
            result::memcpy_htod_sync(insns.ptr, bytemuck::cast_slice::<_, u8>(&bound))
                .ctx(|| "uploading the persistent instructions".into())?;
            result::memcpy_htod_sync(queues.ptr, &schedule.queue_start)
                .ctx(|| "uploading the persistent queues".into())?;
        }
        let counters = dev.alloc_zeroed(schedule.stages.len() * SLOT * 4, "the stage counters")?;
        let epochs = dev.alloc_zeroed(schedule.ctas * SLOT * 4, "the CTA epochs")?;
        let err = dev.alloc_zeroed(std::mem::size_of::<PersistentError>(), "the error slot")?;
        let params = PersistentParams {
            insns: Ptr::device(insns.ptr),
            queue_start: Ptr::device(queues.ptr),
            counters: Ptr::device(counters.ptr),
            epochs: Ptr::device(epochs.ptr),
            err: Ptr::device(err.ptr),
            ring_bytes: schedule.ring_bytes as u32,
            flags: opts.no_deps as u32,
        };
        let kernel = KernelRef::plain("persistent.cu", "persistent_gemv");
        let smem = schedule.smem_bytes() as u32;
        let resident =
            crate::facts::Occupancy::blocks_per_sm(dev, &kernel, schedule.threads, smem)?;
        if resident < 1 {
            return Err(CudaError::Graph(format!(
                "the persistent kernel ({smem} bytes of shared memory, {} threads) does not fit one \
                 multiprocessor",
                schedule.threads
            )));
        }
        let mut launch = Launch::direct(
            dev,
            "persistent",
            &kernel,
            (schedule.ctas as u32, 1, 1),
            schedule.threads,
            Params::Persistent(params),
            schedule.weight_bytes(),
        )?;
        launch.smem = smem;
        launch.work = Work::Kernel(dev.function(&kernel, smem)?);
        let mut results = Vec::new();
        for &r in g.results() {
            let ty = g
                .value_type(r)
                .map_err(|e| CudaError::Graph(e.to_string()))?
                .clone();
            let ptr = if mem.is_const(r) {
                mem.const_ptr(r, Form::F32)?
            } else {
                mem.ptr(r)?
            };
            results.push((ty, bind(ptr).raw()));
        }
        let mut exec = PersistentExecutor {
            dev: dev.clone(),
            schedule,
            _arena: arena,
            io,
            _weights: weights_buf,
            _insns: insns,
            _queues: queues,
            counters,
            epochs,
            err,
            launch,
            graph: None,
            results,
            weight_bytes,
        };
        exec.capture()?;
        Ok(exec)
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Bytes of weights uploaded.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn capture(&mut self) -> Result<(), CudaError> {
        let stream = self.dev.inner.stream.clone();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .ctx(|| "starting the capture of the persistent step".into())?;
        let enqueued = self.launch.enqueue(self.dev.cu_stream(), false);
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        enqueued?;
        let graph = ended
            .ctx(|| "ending the capture of the persistent step".into())?
            .ok_or_else(|| CudaError::Graph("the captured persistent step is empty".into()))?;
        graph
            .upload()
            .ctx(|| "uploading the persistent-step CUDA graph".into())?;
        self.graph = Some(graph);
        Ok(())
    }

    /// Replays the step `n` times back to back, waits, and checks the error slot.
    ///
    /// Errors: [`CudaError::Timeout`] naming the instruction, its stage and CTA, the counter, and
    /// the value waited for and seen (the counters are then reset, so the executor stays usable);
    /// driver errors.
    pub fn replay(&mut self, n: usize) -> Result<(), CudaError> {
        self.dev.bind()?;
        let graph = self
            .graph
            .as_ref()
            .ok_or_else(|| CudaError::Graph("the persistent step was not captured".into()))?;
        for _ in 0..n {
            graph
                .launch()
                .ctx(|| "launching the persistent step".into())?;
        }
        self.dev.sync("the persistent step")?;
        self.check_error()
    }

    /// Runs one step on `inputs` (by input name) and returns every graph result (f32).
    ///
    /// Errors: a missing input or one of the wrong type; as [`PersistentExecutor::replay`].
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<Tensor>, CudaError> {
        for slot in &self.schedule.memory.inputs {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == slot.name)
                .map(|(_, t)| t)
                .ok_or_else(|| {
                    CudaError::BadArgument(format!(
                        "input `{}` ({}) was not given",
                        slot.name, slot.ty
                    ))
                })?;
            if t.ty != slot.ty || slot.ty.dtype != braid_ir::DType::F32 {
                return Err(CudaError::BadArgument(format!(
                    "input `{}` is {}, the graph declares {} (the persistent mode takes f32 inputs)",
                    slot.name, t.ty, slot.ty
                )));
            }
            // SAFETY: the IO buffer holds the slot at its offset; the copy is synchronous.
            unsafe { result::memcpy_htod_sync(self.io.ptr + slot.offset as u64, &t.data) }
                .ctx(|| format!("copying input `{}` to the device", slot.name))?;
        }
        self.replay(1)?;
        self.results
            .iter()
            .map(|(ty, ptr)| {
                let mut out = vec![0f32; ty.numel()];
                // SAFETY: the result holds `numel` f32 at `ptr`; the copy is synchronous.
                unsafe { result::memcpy_dtoh_sync(&mut out, *ptr) }
                    .ctx(|| "copying a persistent result to the host".into())?;
                Ok(Tensor::f32(ty.shape.clone(), out))
            })
            .collect()
    }

    fn check_error(&mut self) -> Result<(), CudaError> {
        let mut e = [PersistentError::default()];
        // SAFETY: the error slot holds one PersistentError; the copy is synchronous.
        unsafe {
            result::memcpy_dtoh_sync(bytemuck::cast_slice_mut::<_, u8>(&mut e), self.err.ptr)
        }
        .ctx(|| "reading the persistent step's error slot".into())?;
        if e[0].code == 0 {
            return Ok(());
        }
        let msg = describe_timeout(&e[0], &self.schedule);
        // Counters and epochs of an aborted step are inconsistent: start again from zero.
        for (buf, what) in [
            (&self.counters, "the stage counters"),
            (&self.epochs, "the CTA epochs"),
            (&self.err, "the error slot"),
        ] {
            // SAFETY: a live allocation of `len` bytes; no launch is in flight (synchronised).
            unsafe { result::memset_d8_async(buf.ptr, 0, buf.len, self.dev.cu_stream()) }
                .ctx(|| format!("resetting {what}"))?;
        }
        self.dev.sync("resetting the persistent counters")?;
        Err(CudaError::Timeout(msg))
    }
}

/// The message of a timeout record: which instruction (its stage, node, rows, CTA) waited on which
/// counter for what, and what it saw.
pub fn describe_timeout(e: &PersistentError, s: &Schedule) -> String {
    let q = s.insns.get(e.insn.max(0) as usize);
    let stage = q.map_or(-1, |q| q.signal_counter);
    let node = usize::try_from(stage)
        .ok()
        .and_then(|i| s.stages.get(i))
        .map_or("?".to_string(), |st| st.node.clone());
    let rows = q.map_or("?".to_string(), |q| {
        format!("{}..{}", q.row0, q.row0 + q.rows)
    });
    format!(
        "instruction {} (stage {stage}, {node} = matmul rows {rows}) on CTA {} waited for counter {} \
         to reach {} and saw {} (the producer stage did not finish within the bound)",
        e.insn, e.cta, e.counter, e.expected, e.seen
    )
}

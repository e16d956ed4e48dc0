//! The executor: plans a graph, uploads its constants, builds the launch list once, and runs decode
//! steps either eagerly (one launch at a time, optionally timed with CUDA events) or by replaying the
//! whole step recorded once into a CUDA graph.
//!
//! A step is: one host-to-device copy of the inputs (`token`, `position`) from pinned memory, every
//! launch of the list, and one device-to-host copy of the 4-byte next token into pinned memory. In
//! graph mode all three are inside the captured graph, so a token costs one graph launch and one
//! stream synchronisation, and no host code runs between two kernels.

use std::collections::HashMap;
use std::sync::Arc;

use braid_ir::{DType, Graph, Tensor, TensorType, WeightSource};
use cudarc::driver::{result, sys, CudaGraph};
use half::{bf16, f16};

use crate::device::{CudaDevice, DevBuf, DevPtr, PinnedBuf};
use crate::error::{CudaError, DriverContext};
use crate::facts::KernelRef;
use crate::launch::Launch;
use crate::params::{Params, Ptr, Region, StepAdvanceParams};
use crate::plan::{Form, Plan};
use crate::profile::{Profile, ProfileRow};
use crate::tuning::Tuning;

/// How the executor runs a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecOptions {
    /// Record the step once into a CUDA graph and replay it (the fast path). When false, every step
    /// launches the kernels one by one from the host.
    pub use_graph: bool,
    /// Launch kernels with programmatic dependent launch (sm_90+): a kernel's weight loads overlap
    /// the tail of the kernel before it. Ignored by [`CudaExecutor::profile`], which times each
    /// launch on its own.
    pub pdl: bool,
    /// Eager mode only: synchronise after every launch, so a faulting kernel is named in the error.
    pub sync_each_launch: bool,
    /// The lowering's tuning knobs ([`Tuning::default`] unless set; the runner reads the
    /// environment with [`Tuning::from_env`]).
    pub tuning: Tuning,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            use_graph: true,
            pdl: true,
            sync_each_launch: false,
            tuning: Tuning::default(),
        }
    }
}

/// A graph result: where it lives and what it is.
#[derive(Clone, Debug)]
struct ResultSlot {
    ty: TensorType,
    ptr: DevPtr,
    /// The dtype of the bytes at `ptr` (constants are read back in their f32 form).
    dtype: DType,
}

/// The device base address of every region of a plan.
struct Bases {
    arena: DevPtr,
    io: DevPtr,
    kv: DevPtr,
    weights: DevPtr,
    scratch: DevPtr,
    /// When the weights buffer is another executor's: `(start, bytes, start there)` of each of
    /// this plan's constants, sorted by start.
    weight_map: Option<Vec<(usize, usize, usize)>>,
}

impl Bases {
    /// The device address of `offset` bytes into `region` (a scratch slot's offset comes from the
    /// plan's scratch layout; a weights offset is moved to the shared buffer's layout).
    fn resolve(&self, plan: &Plan, region: Region, offset: usize) -> DevPtr {
        let (base, offset) = match region {
            Region::Arena => (self.arena, offset),
            Region::Io => (self.io, offset),
            Region::Kv => (self.kv, offset),
            Region::Weights => (self.weights, self.weight_offset(offset)),
            Region::Scratch(s) => (
                self.scratch + plan.scratch.offset(s).unwrap_or(0) as u64,
                offset,
            ),
        };
        base + offset as u64
    }

    fn weight_offset(&self, offset: usize) -> usize {
        let Some(map) = &self.weight_map else {
            return offset;
        };
        let i = map.partition_point(|&(start, _, _)| start <= offset);
        match i.checked_sub(1).map(|i| map[i]) {
            Some((start, bytes, there)) if offset < start + bytes.max(1) => there + offset - start,
            // Not inside a constant (cannot happen for a planned pointer): keep it.
            _ => offset,
        }
    }
}

/// One constant in an executor's weights buffer, named by what it is made of
/// ([`const_keys`]), so another graph of the same model can find it.
#[derive(Clone, Debug)]
struct ConstEntry {
    key: String,
    form: Form,
    offset: usize,
    bytes: usize,
}

/// A key for every constant of `g` that `mem` places, the same in every graph of one model:
/// `@name: type` for a weight, `op(inputs)#output` for a folded `concat` / `split` / `reshape`.
fn const_keys(g: &Graph, mem: &crate::plan::MemoryPlan) -> Result<Vec<ConstEntry>, CudaError> {
    fn key(g: &Graph, v: braid_ir::Value, memo: &mut HashMap<braid_ir::Value, String>) -> String {
        if let Some(k) = memo.get(&v) {
            return k.clone();
        }
        let k = match g.node(v.node).map(|n| &n.op) {
            Some(braid_ir::Op::Weight { name, ty }) => format!("@{name}: {ty}"),
            Some(op) => {
                let ins: Vec<String> = g
                    .inputs(v.node)
                    .into_iter()
                    .map(|i| key(g, i, memo))
                    .collect();
                format!("{op:?}({})#{}", ins.join(", "), v.output)
            }
            None => format!("?{}", v.node.index()),
        };
        memo.insert(v, k.clone());
        k
    }
    let mut memo = HashMap::new();
    mem.const_places
        .iter()
        .map(|(&(v, form), &offset)| {
            let ty = g
                .value_type(v)
                .map_err(|e| CudaError::Graph(e.to_string()))?;
            let bytes = match form {
                Form::Raw => ty.size_bytes(),
                Form::F32 => ty.numel() * 4,
            };
            Ok(ConstEntry {
                key: key(g, v, &mut memo),
                form,
                offset,
                bytes,
            })
        })
        .collect()
}

/// The map of [`Bases::weight_map`] when every constant of `mine` is in `theirs` (same key, form
/// and size), else `None`.
fn weight_map(mine: &[ConstEntry], theirs: &[ConstEntry]) -> Option<Vec<(usize, usize, usize)>> {
    let index: HashMap<(&str, Form), &ConstEntry> = theirs
        .iter()
        .map(|c| ((c.key.as_str(), c.form), c))
        .collect();
    let mut map = mine
        .iter()
        .map(|c| {
            let t = index.get(&(c.key.as_str(), c.form))?;
            (t.bytes == c.bytes).then_some((c.offset, c.bytes, t.offset))
        })
        .collect::<Option<Vec<_>>>()?;
    map.sort_unstable();
    Some(map)
}

/// Runs decode steps of one graph on one device. See the crate docs for the life of a step.
pub struct CudaExecutor {
    dev: CudaDevice,
    plan: Plan,
    launches: Vec<Launch>,
    _arena: DevBuf,
    io: DevBuf,
    /// The KV caches: this executor's, or shared with the executor it was built beside
    /// ([`CudaExecutor::from_plan_sharing`]).
    kv: Arc<DevBuf>,
    /// The constants: this executor's, or shared.
    weights_buf: Arc<DevBuf>,
    /// What the constants of this executor's graph are and where they lie in `weights_buf`.
    consts: Vec<ConstEntry>,
    _scratch: DevBuf,
    /// Pinned staging: the inputs (`plan.memory.io_bytes`), then 16 bytes for the next token.
    host_io: PinnedBuf,
    token_out: usize,
    token_input: Option<usize>,
    /// Tokens a step takes (the `token` input's length: 1 for a decode step, `T` for prefill).
    tokens: usize,
    position_input: Option<usize>,
    results: Vec<ResultSlot>,
    logits: Option<usize>,
    next_token: Option<usize>,
    token_limit: Option<usize>,
    max_context: Option<usize>,
    weight_bytes: usize,
    graph: Option<CudaGraph>,
    opts: ExecOptions,
    /// The self-feeding end of a step (kernels/elementwise.cu `step_advance`), when the graph has
    /// `token` / `position` inputs and an i32 next-token result.
    advance: Option<Launch>,
    /// Tokens the self-feeding loop produced, by position (`max_context + 1` i32).
    history: Option<DevBuf>,
    history_len: usize,
    /// The step plus `advance`, recorded once for [`CudaExecutor::decode_greedy`].
    loop_graph: Option<CudaGraph>,
}

impl CudaExecutor {
    /// Lowers `g` for `dev` with `opts.tuning` ([`crate::lower::lower`] on the live device's facts)
    /// and builds an executor for the plan ([`CudaExecutor::from_plan`]).
    ///
    /// Errors: [`CudaError::Graph`] when `g` fails [`braid_ir::verify()`]; [`CudaError::Weight`] for a
    /// missing or mismatched weight; [`CudaError::Unsupported`] for an op shape the kernels do not
    /// cover (the message names the node); compile and driver errors.
    pub fn new(
        dev: &CudaDevice,
        g: &Graph,
        weights: &dyn WeightSource,
        opts: ExecOptions,
    ) -> Result<Self, CudaError> {
        dev.bind()?;
        let target = dev.target()?;
        let plan = crate::lower::lower(g, &target, &opts.tuning)?;
        Self::from_plan(dev, g, plan, weights, opts)
    }

    /// An executor for `plan` (lowered from `g`): allocates the activation arena, inputs, KV caches
    /// (zeroed) and scratch, folds and uploads the constants from `weights`, binds every launch to
    /// the buffers and, with `opts.use_graph`, records the step into a CUDA graph.
    ///
    /// Errors: as [`CudaExecutor::new`].
    pub fn from_plan(
        dev: &CudaDevice,
        g: &Graph,
        plan: Plan,
        weights: &dyn WeightSource,
        opts: ExecOptions,
    ) -> Result<Self, CudaError> {
        Self::build(dev, g, plan, weights, None, opts)
    }

    /// An executor for `plan` (lowered from `g`) that shares `other`'s KV caches and, when every
    /// constant of `g` is one of `other`'s (a step of the same model, e.g. its prefill step beside
    /// its decode step), `other`'s uploaded weights; otherwise its constants are uploaded from
    /// `weights`. Both executors then read and write one KV cache: a prefill here is seen by the
    /// next decode step there. `reset` on either zeroes the shared cache.
    ///
    /// Errors: [`CudaError::Graph`] when the KV-cache leaves differ (name, type or order) from
    /// `other`'s; otherwise as [`CudaExecutor::new`].
    pub fn from_plan_sharing(
        dev: &CudaDevice,
        g: &Graph,
        plan: Plan,
        weights: &dyn WeightSource,
        other: &CudaExecutor,
        opts: ExecOptions,
    ) -> Result<Self, CudaError> {
        Self::build(dev, g, plan, weights, Some(other), opts)
    }

    /// Lowers `g` for `dev` and builds an executor sharing `other`'s KV caches and weights
    /// ([`CudaExecutor::from_plan_sharing`]).
    ///
    /// Errors: as [`CudaExecutor::from_plan_sharing`].
    pub fn new_sharing(
        dev: &CudaDevice,
        g: &Graph,
        weights: &dyn WeightSource,
        other: &CudaExecutor,
        opts: ExecOptions,
    ) -> Result<Self, CudaError> {
        dev.bind()?;
        let target = dev.target()?;
        let plan = crate::lower::lower(g, &target, &opts.tuning)?;
        Self::from_plan_sharing(dev, g, plan, weights, other, opts)
    }

    fn build(
        dev: &CudaDevice,
        g: &Graph,
        plan: Plan,
        weights: &dyn WeightSource,
        share: Option<&CudaExecutor>,
        opts: ExecOptions,
    ) -> Result<Self, CudaError> {
        let mem = &plan.memory;
        for slot in &mem.inputs {
            let ok = match slot.name.as_str() {
                "position" => slot.ty.dtype == DType::I32 && slot.ty.shape == [1],
                "token" => {
                    slot.ty.dtype == DType::I32 && slot.ty.shape.len() == 1 && slot.ty.numel() > 0
                }
                _ => true,
            };
            if !ok {
                return Err(CudaError::Graph(format!(
                    "input `{}` must be i32[1] (`token` may be i32[T]), got {}",
                    slot.name, slot.ty
                )));
            }
        }
        dev.bind()?;
        let consts = const_keys(g, mem)?;
        let arena = dev.alloc_zeroed(mem.arena_bytes, "the activation arena")?;
        let io = dev.alloc_zeroed(mem.io_bytes, "the step inputs")?;
        let kv = match share {
            Some(o) => {
                let (mine, theirs) = (&mem.kv, &o.plan.memory.kv);
                let same = mine.len() == theirs.len()
                    && mine
                        .iter()
                        .zip(theirs)
                        .all(|(a, b)| a.name == b.name && a.ty == b.ty && a.offset == b.offset);
                if !same {
                    let list = |v: &[crate::plan::LeafSlot]| {
                        v.iter()
                            .map(|s| format!("@{} {}", s.name, s.ty))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(CudaError::Graph(format!(
                        "cannot share KV caches: this graph has [{}], the other [{}]",
                        list(mine),
                        list(theirs)
                    )));
                }
                o.kv.clone()
            }
            None => Arc::new(dev.alloc_zeroed(mem.kv_bytes, "the KV caches")?),
        };
        let shared_weights = share.and_then(|o| {
            weight_map(&consts, &o.consts).map(|map| (o.weights_buf.clone(), map, o.consts.clone()))
        });
        let scratch = dev.alloc_zeroed(plan.scratch.bytes, "kernel scratch")?;
        for (slot, table) in &plan.scratch.init {
            let off = plan
                .scratch
                .offset(*slot)
                .ok_or_else(|| CudaError::Graph(format!("scratch slot {slot:?} has no place")))?;
            // SAFETY: the scratch buffer holds the slot at `off` (sized by the layout); the copy is
            // synchronous.
            unsafe { result::memcpy_htod_sync(scratch.ptr + off as u64, table) }
                .ctx(|| format!("uploading scratch slot {slot:?}"))?;
        }
        let (weights_buf, weight_map, weight_bytes, consts) = match shared_weights {
            Some((buf, map, theirs)) => {
                let bytes = consts.iter().map(|c| c.bytes).sum();
                (buf, Some(map), bytes, theirs)
            }
            None => {
                let buf = dev.alloc_zeroed(mem.weights_bytes, "the weights")?;
                let bytes =
                    crate::weights::upload_constants(dev, g, &plan.memory, weights, buf.ptr)?;
                (Arc::new(buf), None, bytes, consts)
            }
        };
        let bases = Bases {
            arena: arena.ptr,
            io: io.ptr,
            kv: kv.ptr,
            weights: weights_buf.ptr,
            scratch: scratch.ptr,
            weight_map,
        };
        let resolve = |r: Region, off: usize| bases.resolve(&plan, r, off);
        let launches = plan
            .launches
            .iter()
            .map(|p| Launch::bind(dev, p, &resolve))
            .collect::<Result<Vec<_>, _>>()?;
        let mem = &plan.memory;
        let token_out = mem.io_bytes.div_ceil(16) * 16;
        let host_io = dev.alloc_pinned(token_out + 16, "the step inputs and next token")?;

        let results = result_slots(g, &plan, &resolve)?;
        let logits = results.iter().position(|r| r.ty.dtype == DType::F32);
        let next_token = results
            .iter()
            .position(|r| r.ty.dtype == DType::I32 && r.ty.numel() == 1);
        let input_offset =
            |name: &str| mem.inputs.iter().find(|s| s.name == name).map(|s| s.offset);
        let token_input = input_offset("token");
        let tokens = mem
            .inputs
            .iter()
            .find(|s| s.name == "token")
            .map_or(1, |s| s.ty.numel());
        let position_input = input_offset("position");
        let (token_limit, max_context) = (plan.token_limit, plan.max_context);

        // The self-feeding decode loop: next token -> token input, position + 1, history.
        let history_len = max_context.unwrap_or(4096) + 1;
        let (advance, history) = match (token_input, next_token) {
            (Some(t), Some(r)) if tokens == 1 => {
                let history = dev.alloc_zeroed(history_len * 4, "the decode-loop token history")?;
                // Without a position input, history[0] (never a token slot) counts the positions.
                let pos = position_input.map_or(history.ptr, |p| io.ptr + p as u64);
                let params = StepAdvanceParams {
                    next: Ptr::device(results[r].ptr),
                    token: Ptr::device(io.ptr + t as u64),
                    pos: Ptr::device(pos),
                    history: Ptr::device(history.ptr),
                    history_len: history_len as i32,
                    pad_: 0,
                };
                (Some(advance_launch(dev, params)?), Some(history))
            }
            _ => (None, None),
        };

        let mut exec = CudaExecutor {
            dev: dev.clone(),
            plan,
            launches,
            _arena: arena,
            io,
            kv,
            weights_buf,
            consts,
            _scratch: scratch,
            host_io,
            token_out,
            token_input,
            tokens,
            position_input,
            results,
            logits,
            next_token,
            token_limit,
            max_context,
            weight_bytes,
            graph: None,
            opts,
            advance,
            history,
            history_len,
            loop_graph: None,
        };
        if opts.use_graph {
            exec.capture()?;
        }
        Ok(exec)
    }

    /// The plan this executor runs (symbolic addresses; [`Plan::text`] prints it).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Kernel launches per decode step.
    pub fn launches_per_step(&self) -> usize {
        self.launches.len()
    }

    /// The launch list (for inspection and reports).
    pub fn launches(&self) -> &[Launch] {
        &self.launches
    }

    /// Bytes of constants uploaded to the device (weights in the forms the kernels read).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Bytes every launch of a step at `position` reads and writes (weights, activations, KV rows).
    pub fn bytes_per_step(&self, position: usize) -> usize {
        self.launches.iter().map(|l| l.bytes_at(position)).sum()
    }

    /// Device bytes held: `(arena, kv caches, weights)`.
    pub fn memory_bytes(&self) -> (usize, usize, usize) {
        let m = &self.plan.memory;
        (m.arena_bytes, m.kv_bytes, m.weights_bytes)
    }

    /// The largest position a step accepts plus one (the KV caches' `max_context`), if the graph has
    /// attention.
    pub fn max_context(&self) -> Option<usize> {
        self.max_context
    }

    /// Whether steps replay a CUDA graph.
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Runs one decode step for `token` at `position` and returns the greedy next token: the graph's
    /// i32 result (its `argmax`, computed on the device; 4 bytes come back), or, for a graph without
    /// one, the host argmax of its f32 result.
    ///
    /// Errors: [`CudaError::BadArgument`] for a token outside the embedding table or a position
    /// `>= max_context`; [`CudaError::Graph`] when the graph has no `token`/`position` input or no
    /// result to pick a token from; driver errors (a faulting kernel shows up here).
    pub fn step(&mut self, token: u32, position: usize) -> Result<u32, CudaError> {
        self.run_step(token, position)?;
        if self.next_token.is_some() {
            return self.last_token();
        }
        let logits = self.read_logits()?;
        host_argmax(&logits)
            .ok_or_else(|| CudaError::Graph("the logits result is empty or all NaN".into()))
    }

    /// The greedy next token of the last step ([`CudaExecutor::step`] or
    /// [`CudaExecutor::step_logits`]): the graph's i32 result, copied to pinned memory by the step
    /// itself (4 bytes, no extra transfer).
    ///
    /// Errors: [`CudaError::Graph`] when the graph has no i32[1] result, or it is negative.
    pub fn last_token(&self) -> Result<u32, CudaError> {
        if self.next_token.is_none() {
            return Err(CudaError::Graph(
                "the graph has no i32[1] next-token result".into(),
            ));
        }
        let bytes = self.host_io.read(self.token_out, 4);
        let id = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        u32::try_from(id)
            .map_err(|_| CudaError::Graph(format!("the argmax result is negative ({id})")))
    }

    /// Runs one decode step and copies the f32 result (the logits `[1, vocab]`) back.
    ///
    /// Errors: as [`CudaExecutor::step`]; [`CudaError::Graph`] when the graph has no f32 result.
    pub fn step_logits(&mut self, token: u32, position: usize) -> Result<Vec<f32>, CudaError> {
        self.run_step(token, position)?;
        self.read_logits()
    }

    /// Tokens one step of this graph takes: 1 for a decode step, `T` for a prefill step (the
    /// `token` input is `i32[T]`).
    pub fn tokens_per_step(&self) -> usize {
        self.tokens
    }

    /// Runs one prefill step: `tokens` (exactly [`CudaExecutor::tokens_per_step`] of them) at
    /// positions `position ..`, appending their rows to the KV caches, and returns the greedy
    /// next token after the last of them (the graph's i32 result, 4 bytes back; or the host argmax
    /// of the last row of the logits for a graph without one). For a one-token graph this is
    /// [`CudaExecutor::step`].
    ///
    /// Errors: [`CudaError::BadArgument`] for a wrong token count, a token outside the embedding
    /// table or `position + T > max_context`; as [`CudaExecutor::step`] otherwise.
    pub fn prefill(&mut self, tokens: &[u32], position: usize) -> Result<u32, CudaError> {
        self.stage_tokens(tokens, position)?;
        self.launch_step()?;
        if self.next_token.is_some() {
            return self.last_token();
        }
        let logits = self.read_logits()?;
        let vocab = logits.len() / self.logit_rows().max(1);
        host_argmax(&logits[logits.len().saturating_sub(vocab)..])
            .ok_or_else(|| CudaError::Graph("the logits result is empty or all NaN".into()))
    }

    /// Runs one prefill step as [`CudaExecutor::prefill`] and copies its f32 result back: the
    /// logits `[rows, vocab]` (one row, or one per token for a graph lowered with every token's
    /// logits), row-major.
    ///
    /// Errors: as [`CudaExecutor::prefill`]; [`CudaError::Graph`] when the graph has no f32 result.
    pub fn prefill_logits(
        &mut self,
        tokens: &[u32],
        position: usize,
    ) -> Result<Vec<f32>, CudaError> {
        self.stage_tokens(tokens, position)?;
        self.launch_step()?;
        self.read_logits()
    }

    /// Rows of the logits result (`[rows, vocab]`): 1, or the token count with every token's
    /// logits.
    pub fn logit_rows(&self) -> usize {
        self.logits.map_or(1, |i| self.results[i].ty.rows())
    }

    /// Floating-point operations of the step's matmuls ([`Plan::matmul_flops`]).
    pub fn matmul_flops(&self) -> f64 {
        self.plan.matmul_flops()
    }

    /// Greedy decoding on the device: starting from `token` at `position`, runs `n` steps in which
    /// each step's next token (the graph's argmax) becomes the next step's token and the position
    /// advances, with no host work between steps (in graph mode, `n` back-to-back replays of the step
    /// recorded with a final `step_advance` launch). Returns the `n` generated tokens, the one for
    /// position `position + 1` first, after one synchronisation.
    ///
    /// Errors: [`CudaError::Graph`] when the graph lacks `token` / `position` inputs or an i32
    /// next-token result; [`CudaError::BadArgument`] when `position + n` exceeds `max_context` or the
    /// token is outside the embedding table; driver errors.
    pub fn decode_greedy(
        &mut self,
        token: u32,
        position: usize,
        n: usize,
    ) -> Result<Vec<u32>, CudaError> {
        let Some(advance) = self.advance.clone() else {
            return Err(CudaError::Graph(
                "decode_greedy needs a `token` input and an i32[1] next-token result".into(),
            ));
        };
        if position + n > self.history_len - 1 {
            return Err(CudaError::BadArgument(format!(
                "decoding {n} tokens from position {position} passes max_context {}",
                self.history_len - 1
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        self.write_step_inputs(token, position)?;
        self.dev.bind()?;
        let stream = self.dev.cu_stream();
        self.copy_inputs_in(stream)?;
        if self.position_input.is_none() {
            if let Some(h) = &self.history {
                let p = [position as i32];
                // SAFETY: history holds at least one i32; the copy is synchronous.
                unsafe { result::memcpy_htod_sync(h.ptr, &p) }
                    .ctx(|| "setting the decode-loop position counter".into())?;
            }
        }
        if self.opts.use_graph && self.loop_graph.is_none() {
            let s = self.dev.inner.stream.clone();
            s.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .ctx(|| "starting the capture of the decode loop".into())?;
            let enqueued = self.enqueue_launches(self.opts.pdl, false, Some(&advance));
            let ended = s.end_capture(sys::CUgraphInstantiate_flags(0));
            enqueued?;
            let graph = ended
                .ctx(|| "ending the capture of the decode loop".into())?
                .ok_or_else(|| CudaError::Graph("the captured decode loop is empty".into()))?;
            graph
                .upload()
                .ctx(|| "uploading the decode-loop CUDA graph".into())?;
            self.loop_graph = Some(graph);
        }
        for _ in 0..n {
            match &self.loop_graph {
                Some(graph) => graph
                    .launch()
                    .ctx(|| "launching the decode-loop CUDA graph".into())?,
                None => self.enqueue_launches(
                    self.opts.pdl,
                    self.opts.sync_each_launch,
                    Some(&advance),
                )?,
            }
        }
        self.dev.sync("the decode loop")?;
        let history = self
            .history
            .as_ref()
            .ok_or_else(|| CudaError::Graph("the decode-loop history is missing".into()))?;
        let mut out = vec![0i32; n];
        // SAFETY: `history` holds `history_len` i32 and `position + n < history_len`.
        unsafe { result::memcpy_dtoh_sync(&mut out, history.ptr + 4 * (position as u64 + 1)) }
            .ctx(|| "copying the decoded tokens to the host".into())?;
        out.iter()
            .map(|&t| {
                u32::try_from(t)
                    .map_err(|_| CudaError::Graph(format!("negative token {t} decoded")))
            })
            .collect()
    }

    /// Runs one step with arbitrary inputs (by `input` leaf name, as
    /// `braid_ir::interp::Interpreter::run` takes them) and returns every graph result in order.
    /// Float results come back as f32, i32 results as i32.
    ///
    /// Errors: [`CudaError::BadArgument`] for a missing input, one given twice or of another type
    /// than declared; driver errors.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<Tensor>, CudaError> {
        let slots = self.plan.memory.inputs.clone();
        for slot in &slots {
            let mut given = inputs.iter().filter(|(n, _)| *n == slot.name);
            let t = given.next().map(|(_, t)| t).ok_or_else(|| {
                CudaError::BadArgument(format!("input `{}` ({}) was not given", slot.name, slot.ty))
            })?;
            if given.next().is_some() {
                return Err(CudaError::BadArgument(format!(
                    "input `{}` is given twice",
                    slot.name
                )));
            }
            if t.ty != slot.ty {
                return Err(CudaError::BadArgument(format!(
                    "input `{}` is {}, but the graph declares {}",
                    slot.name, t.ty, slot.ty
                )));
            }
            let bytes: Vec<u8> = match slot.ty.dtype {
                DType::I32 => t.ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::BF16 => t
                    .data
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                DType::F16 => t
                    .data
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            if bytes.len() != slot.ty.size_bytes() {
                return Err(CudaError::BadArgument(format!(
                    "input `{}` {} holds {} bytes of data, expected {}",
                    slot.name,
                    slot.ty,
                    bytes.len(),
                    slot.ty.size_bytes()
                )));
            }
            if let (Some(p), "position") = (self.max_context, slot.name.as_str()) {
                let pos = t.ints.first().copied().unwrap_or(-1);
                if pos < 0 || pos as usize + self.tokens > p {
                    return Err(CudaError::BadArgument(format!(
                        "{} token(s) at position {pos} run past the KV caches (max_context {p})",
                        self.tokens
                    )));
                }
            }
            self.host_io.write(slot.offset, &bytes);
        }
        self.launch_step()?;
        (0..self.results.len())
            .map(|i| self.read_result(i))
            .collect()
    }

    /// Replays the step `n` times back to back on the inputs staged last (by [`CudaExecutor::run`]
    /// or a step), with one synchronisation at the end: for timing graphs without a `token` input.
    /// Eager executors launch the list `n` times.
    ///
    /// Errors: driver errors.
    pub fn replay(&mut self, n: usize) -> Result<(), CudaError> {
        self.dev.bind()?;
        for _ in 0..n {
            match &self.graph {
                Some(graph) => graph
                    .launch()
                    .ctx(|| "launching the decode-step CUDA graph".into())?,
                None => self.enqueue_step(self.opts.pdl, false)?,
            }
        }
        self.dev.sync("replayed steps")
    }

    /// Zeroes every KV cache (a new sequence).
    pub fn reset(&mut self) -> Result<(), CudaError> {
        self.dev.bind()?;
        // SAFETY: `kv` is a live allocation of `len` bytes; no step is in flight (steps synchronise).
        unsafe { result::memset_d8_async(self.kv.ptr, 0, self.kv.len, self.dev.cu_stream()) }
            .ctx(|| "zeroing the KV caches".into())?;
        self.dev.sync("zeroing the KV caches")
    }

    /// Profiles `steps` decode steps (positions `0..steps`, each feeding back the previous next token,
    /// after one untimed warm-up step). Per-launch times come from a CUDA graph of the step with an
    /// event-record node between every two launches (launched without PDL), so each kernel is timed
    /// on the device alone, free of host launch gaps. The step time is that of the executor's own
    /// path (graph replay or eager launches) over the same positions. Resets the KV caches before and
    /// after.
    ///
    /// Errors: as [`CudaExecutor::step`]; `steps` larger than `max_context`.
    pub fn profile(&mut self, steps: usize) -> Result<Profile, CudaError> {
        let steps = steps.max(1);
        if let Some(max) = self.max_context {
            if steps > max {
                return Err(CudaError::BadArgument(format!(
                    "profiling {steps} steps needs max_context >= {steps}, the KV caches hold {max}"
                )));
            }
        }
        self.dev.bind()?;
        let n = self.launches.len();
        let events = self.timing_events()?;
        let timing = self.timing_graph(&events)?;

        let mut per_launch = vec![0.0f64; n];
        let mut bytes = vec![0usize; n];
        let mut token = 0u32;
        let mut tokens = Vec::with_capacity(steps);
        self.reset()?;
        for s in 0..=steps {
            let position = s.saturating_sub(1);
            if s == 1 {
                self.reset()?;
            }
            self.write_step_inputs(token, position)?;
            timing
                .launch()
                .ctx(|| "launching the profiling graph".into())?;
            self.dev.sync("a profiled decode step")?;
            if s > 0 {
                tokens.push(token);
                self.add_launch_times(&events, position, &mut per_launch, &mut bytes)?;
            }
            token = self.read_next_token(token);
        }

        // The executor's own step time over the same inputs.
        let (start, end) = (&events[0], &events[n]);
        let mut step_ms = 0.0f64;
        self.reset()?;
        for (position, &t) in tokens.iter().enumerate() {
            self.write_step_inputs(t, position)?;
            step_ms += self.time_own_step(start, end)?;
        }
        self.reset()?;
        Ok(self.profile_of(steps, step_ms, &per_launch, &bytes, steps / 2))
    }

    /// Profiles the prefill step of `tokens` at `position` (exactly
    /// [`CudaExecutor::tokens_per_step`] tokens), `reps` times after one untimed run, as
    /// [`CudaExecutor::profile`] times a decode step: every launch (GEMMs included) alone, then
    /// the executor's own step. The KV caches' rows `position ..` are rewritten by every run (the
    /// same values) and left as a prefill leaves them.
    ///
    /// Errors: as [`CudaExecutor::prefill`].
    pub fn profile_prefill(
        &mut self,
        tokens: &[u32],
        position: usize,
        reps: usize,
    ) -> Result<Profile, CudaError> {
        let reps = reps.max(1);
        self.stage_tokens(tokens, position)?;
        self.dev.bind()?;
        let n = self.launches.len();
        let events = self.timing_events()?;
        let timing = self.timing_graph(&events)?;
        let mut per_launch = vec![0.0f64; n];
        let mut bytes = vec![0usize; n];
        for r in 0..=reps {
            timing
                .launch()
                .ctx(|| "launching the profiling graph".into())?;
            self.dev.sync("a profiled prefill step")?;
            if r > 0 {
                self.add_launch_times(&events, position, &mut per_launch, &mut bytes)?;
            }
        }
        let (start, end) = (&events[0], &events[n]);
        let mut step_ms = 0.0f64;
        for _ in 0..reps {
            step_ms += self.time_own_step(start, end)?;
        }
        Ok(self.profile_of(reps, step_ms, &per_launch, &bytes, position))
    }

    /// One timing event per launch boundary (`launches + 1`).
    fn timing_events(&self) -> Result<Vec<cudarc::driver::CudaEvent>, CudaError> {
        let ctx = self.dev.inner.ctx.clone();
        (0..=self.launches.len())
            .map(|_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)))
            .collect::<Result<Vec<_>, _>>()
            .ctx(|| "creating timing events".into())
    }

    /// The timing graph: inputs in, (event, launch)*, event, token out (launched without PDL).
    fn timing_graph(&self, events: &[cudarc::driver::CudaEvent]) -> Result<CudaGraph, CudaError> {
        let n = self.launches.len();
        let stream = self.dev.inner.stream.clone();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .ctx(|| "starting the capture of the profiling graph".into())?;
        let enqueued = (|| -> Result<(), CudaError> {
            let cu = stream.cu_stream();
            self.copy_inputs_in(cu)?;
            for (i, l) in self.launches.iter().enumerate() {
                record_external(&events[i], cu)?;
                l.enqueue(cu, false)?;
            }
            record_external(&events[n], cu)?;
            self.copy_token_out(cu)
        })();
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        enqueued?;
        ended
            .ctx(|| "ending the capture of the profiling graph".into())?
            .ok_or_else(|| CudaError::Graph("the profiling graph is empty".into()))
    }

    /// Adds each launch's time between its two events, and its bytes at `position`.
    fn add_launch_times(
        &self,
        events: &[cudarc::driver::CudaEvent],
        position: usize,
        per_launch: &mut [f64],
        bytes: &mut [usize],
    ) -> Result<(), CudaError> {
        for (i, l) in self.launches.iter().enumerate() {
            let ms = events[i]
                .elapsed_ms(&events[i + 1])
                .ctx(|| format!("reading the time of kernel `{}`", l.kernel))?;
            per_launch[i] += ms as f64;
            bytes[i] += l.bytes_at(position);
        }
        Ok(())
    }

    /// The time (ms) of one step on the executor's own path with the staged inputs.
    fn time_own_step(
        &self,
        start: &cudarc::driver::CudaEvent,
        end: &cudarc::driver::CudaEvent,
    ) -> Result<f64, CudaError> {
        start
            .record(&self.dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        if let Some(graph) = &self.graph {
            graph
                .launch()
                .ctx(|| "launching the step's CUDA graph".into())?;
        } else {
            self.enqueue_step(self.opts.pdl, false)?;
        }
        end.record(&self.dev.inner.stream)
            .ctx(|| "recording an event".into())?;
        self.dev.sync("a timed step")?;
        Ok(start
            .elapsed_ms(end)
            .ctx(|| "reading the step time".into())? as f64)
    }

    /// The profile of `steps` timed steps from the summed per-launch times and bytes.
    fn profile_of(
        &self,
        steps: usize,
        step_ms: f64,
        per_launch: &[f64],
        bytes: &[usize],
        position: usize,
    ) -> Profile {
        let n = self.launches.len();
        let mut groups: HashMap<(String, String), (usize, f64, usize)> = HashMap::new();
        for (i, l) in self.launches.iter().enumerate() {
            let kernel = if l.detail.is_empty() {
                l.kernel.clone()
            } else {
                format!("{} {}", l.kernel, l.detail)
            };
            let e = groups
                .entry((l.op.to_string(), kernel))
                .or_insert((0, 0.0, 0));
            e.0 += 1;
            e.1 += per_launch[i];
            e.2 += bytes[i];
        }
        let total_ms: f64 = per_launch.iter().sum();
        let mut rows: Vec<ProfileRow> = groups
            .into_iter()
            .map(|((op, kernel), (calls, ms, b))| ProfileRow {
                op,
                kernel,
                calls,
                us_per_call: ms * 1e3 / (steps * calls) as f64,
                percent: if total_ms > 0.0 {
                    100.0 * ms / total_ms
                } else {
                    0.0
                },
                gb_per_s: if ms > 0.0 {
                    b as f64 / (ms * 1e-3) / 1e9
                } else {
                    0.0
                },
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.us_per_call * b.calls as f64)
                .total_cmp(&(a.us_per_call * a.calls as f64))
                .then(a.op.cmp(&b.op))
        });
        Profile {
            steps,
            graph: self.graph.is_some(),
            step_us: step_ms * 1e3 / steps as f64,
            kernel_us: total_ms * 1e3 / steps as f64,
            launches: n,
            bytes_per_step: self.bytes_per_step(position),
            rows,
        }
    }

    /// The next token the last step wrote to pinned memory, clamped into the embedding table, or
    /// `fallback` when the graph has no i32 result.
    fn read_next_token(&self, fallback: u32) -> u32 {
        if self.next_token.is_none() {
            return fallback;
        }
        let b = self.host_io.read(self.token_out, 4);
        let mut t = i32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(0) as u32;
        if let Some(limit) = self.token_limit {
            t = t.min(limit.saturating_sub(1) as u32);
        }
        t
    }

    // ---- internals ----

    fn write_step_inputs(&mut self, token: u32, position: usize) -> Result<(), CudaError> {
        if self.tokens != 1 {
            return Err(CudaError::Graph(format!(
                "step() feeds one token, but this graph's step takes {} (`token` is i32[{}]); use \
                 prefill()",
                self.tokens, self.tokens
            )));
        }
        self.stage_tokens(&[token], position)
    }

    /// Writes `ids` (exactly [`CudaExecutor::tokens_per_step`] of them) and `position` into the
    /// pinned input staging, after checking them against the embedding table and the caches.
    fn stage_tokens(&mut self, ids: &[u32], position: usize) -> Result<(), CudaError> {
        let Some(t_off) = self.token_input else {
            return Err(CudaError::Graph(
                "step() needs the graph input `token` (i32[T]); use run() for other inputs".into(),
            ));
        };
        if ids.len() != self.tokens {
            return Err(CudaError::BadArgument(format!(
                "this step takes {} tokens, got {}",
                self.tokens,
                ids.len()
            )));
        }
        if let Some(limit) = self.token_limit {
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= limit) {
                return Err(CudaError::BadArgument(format!(
                    "token {bad} is outside the embedding table ({limit} rows)"
                )));
            }
        }
        if let Some(max) = self.max_context {
            if position + ids.len() > max {
                return Err(CudaError::BadArgument(if ids.len() == 1 {
                    format!("position {position} is outside the KV caches (max_context {max})")
                } else {
                    format!(
                        "{} tokens at position {position} run past the KV caches (max_context {max})",
                        ids.len()
                    )
                }));
            }
        }
        let p = i32::try_from(position).map_err(|_| {
            CudaError::BadArgument(format!("position {position} does not fit in i32"))
        })?;
        let mut bytes = Vec::with_capacity(4 * ids.len());
        for &t in ids {
            let t = i32::try_from(t)
                .map_err(|_| CudaError::BadArgument(format!("token {t} does not fit in i32")))?;
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        let expected = 1 + self.position_input.is_some() as usize;
        if self.plan.memory.inputs.len() != expected {
            let others: Vec<&str> = self
                .plan
                .memory
                .inputs
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| *n != "token" && *n != "position")
                .collect();
            return Err(CudaError::Graph(format!(
                "step() feeds only `token` and `position`, but the graph also has inputs {others:?}; use run()"
            )));
        }
        self.host_io.write(t_off, &bytes);
        if let Some(p_off) = self.position_input {
            self.host_io.write(p_off, &p.to_le_bytes());
        }
        Ok(())
    }

    fn run_step(&mut self, token: u32, position: usize) -> Result<(), CudaError> {
        self.write_step_inputs(token, position)?;
        self.launch_step()
    }

    /// Runs the step (graph replay or eager launches) on the staged inputs and waits for it.
    fn launch_step(&mut self) -> Result<(), CudaError> {
        self.dev.bind()?;
        if let Some(graph) = &self.graph {
            graph
                .launch()
                .ctx(|| "launching the decode-step CUDA graph".into())?;
        } else {
            self.enqueue_step(self.opts.pdl, self.opts.sync_each_launch)?;
        }
        self.dev.sync("the decode step")
    }

    fn copy_inputs_in(&self, stream: sys::CUstream) -> Result<(), CudaError> {
        if self.plan.memory.io_bytes == 0 {
            return Ok(());
        }
        // SAFETY: both buffers hold at least `io_bytes`; the pinned source stays alive and unwritten
        // until the step is synchronised.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                self.io.ptr,
                self.host_io.ptr as *const std::ffi::c_void,
                self.plan.memory.io_bytes,
                stream,
            )
        }
        .result()
        .ctx(|| "copying the step inputs to the device".into())
    }

    fn copy_token_out(&self, stream: sys::CUstream) -> Result<(), CudaError> {
        let Some(t) = self.next_token else {
            return Ok(());
        };
        let src = self.results[t].ptr;
        // SAFETY: the pinned destination has 16 bytes at `token_out`; the source is the 4-byte i32
        // result, alive as long as the executor.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                self.host_io.ptr.add(self.token_out) as *mut std::ffi::c_void,
                src,
                4,
                stream,
            )
        }
        .result()
        .ctx(|| "copying the next token to the host".into())
    }

    /// Enqueues one step: inputs in, every launch, next token out.
    fn enqueue_step(&self, pdl: bool, sync_each: bool) -> Result<(), CudaError> {
        let stream = self.dev.cu_stream();
        self.copy_inputs_in(stream)?;
        self.enqueue_launches(pdl, sync_each, None)?;
        self.copy_token_out(stream)
    }

    /// Enqueues every launch of the step, then `tail` (the decode-loop advance) if given.
    fn enqueue_launches(
        &self,
        pdl: bool,
        sync_each: bool,
        tail: Option<&Launch>,
    ) -> Result<(), CudaError> {
        let stream = self.dev.cu_stream();
        let mut after_kernel = false;
        for l in self.launches.iter().chain(tail) {
            // The first kernel follows a copy or another graph, and a kernel after a cuBLAS GEMM
            // follows cuBLAS's kernels, not ours: launch those plainly.
            l.enqueue(stream, pdl && after_kernel)?;
            after_kernel = !l.is_gemm();
            if sync_each {
                self.dev
                    .sync(&format!("kernel `{}` of {} = {}", l.kernel, l.node, l.op))?;
            }
        }
        Ok(())
    }

    fn capture(&mut self) -> Result<(), CudaError> {
        self.dev.bind()?;
        self.warm_gemms()?;
        let stream = self.dev.inner.stream.clone();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .ctx(|| "starting the capture of the decode step".into())?;
        let enqueued = self.enqueue_step(self.opts.pdl, false);
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        enqueued?;
        let graph = ended
            .ctx(|| "ending the capture of the decode step".into())?
            .ok_or_else(|| CudaError::Graph("the captured decode step is empty".into()))?;
        graph
            .upload()
            .ctx(|| "uploading the decode-step CUDA graph".into())?;
        self.graph = Some(graph);
        Ok(())
    }

    /// Runs every cuBLAS GEMM of the step once, eagerly, so that cuBLAS's first-use work (loading
    /// its kernels, choosing an algorithm) happens before a capture rather than inside it. The
    /// GEMMs read weights and the operand scratch and write their arena outputs only: the KV
    /// caches (perhaps shared with a decode executor in the middle of a sequence) are untouched.
    fn warm_gemms(&self) -> Result<(), CudaError> {
        let stream = self.dev.cu_stream();
        let mut any = false;
        for l in self.launches.iter().filter(|l| l.is_gemm()) {
            l.enqueue(stream, false)?;
            any = true;
        }
        if any {
            self.dev.sync("warming up cuBLAS before the capture")?;
        }
        Ok(())
    }

    fn read_logits(&self) -> Result<Vec<f32>, CudaError> {
        let i = self
            .logits
            .ok_or_else(|| CudaError::Graph("the graph has no f32 result (logits)".into()))?;
        Ok(self.read_result(i)?.data)
    }

    fn read_result(&self, i: usize) -> Result<Tensor, CudaError> {
        let r = &self.results[i];
        let n = r.ty.numel();
        self.dev.bind()?;
        match r.dtype {
            DType::I32 => {
                let mut out = vec![0i32; n];
                // SAFETY: the result holds `n` i32 at `ptr`; the copy is synchronous.
                unsafe { result::memcpy_dtoh_sync(&mut out, r.ptr) }
                    .ctx(|| format!("copying result {i} ({}) to the host", r.ty))?;
                Ok(Tensor::i32(r.ty.shape.clone(), out))
            }
            DType::F32 => {
                let mut out = vec![0f32; n];
                // SAFETY: the result holds `n` f32 at `ptr`; the copy is synchronous.
                unsafe { result::memcpy_dtoh_sync(&mut out, r.ptr) }
                    .ctx(|| format!("copying result {i} ({}) to the host", r.ty))?;
                Ok(Tensor::f32(r.ty.shape.clone(), out))
            }
            DType::BF16 | DType::F16 => {
                let mut raw = vec![0u16; n];
                // SAFETY: the result holds `n` 16-bit values at `ptr`; the copy is synchronous.
                unsafe { result::memcpy_dtoh_sync(&mut raw, r.ptr) }
                    .ctx(|| format!("copying result {i} ({}) to the host", r.ty))?;
                let data = raw
                    .iter()
                    .map(|&b| {
                        if r.dtype == DType::BF16 {
                            bf16::from_bits(b).to_f32()
                        } else {
                            f16::from_bits(b).to_f32()
                        }
                    })
                    .collect();
                Ok(Tensor::f32(r.ty.shape.clone(), data))
            }
        }
    }
}

/// Where each graph result lives on the device (constants are read back in their f32 form).
fn result_slots(
    g: &Graph,
    plan: &Plan,
    resolve: &dyn Fn(Region, usize) -> DevPtr,
) -> Result<Vec<ResultSlot>, CudaError> {
    let mem = &plan.memory;
    g.results()
        .iter()
        .map(|&r| {
            let ty = g
                .value_type(r)
                .map_err(|e| CudaError::Graph(e.to_string()))?
                .clone();
            let (ptr, dtype) = if mem.is_const(r) {
                (mem.const_ptr(r, Form::F32)?, DType::F32)
            } else {
                (mem.ptr(r)?, ty.dtype)
            };
            let (region, off) = ptr
                .symbolic()
                .ok_or_else(|| CudaError::Graph(format!("result {} has no place", mem.label(r))))?;
            Ok(ResultSlot {
                ty,
                ptr: resolve(region, off),
                dtype,
            })
        })
        .collect()
}

/// The self-feeding end of a greedy step (`step_advance`, one thread).
fn advance_launch(dev: &CudaDevice, params: StepAdvanceParams) -> Result<Launch, CudaError> {
    Launch::direct(
        dev,
        "step_advance",
        &KernelRef::plain("elementwise.cu", "step_advance"),
        (1, 1, 1),
        32,
        Params::StepAdvance(params),
        16,
    )
}

/// Records `event` as an event-record node of the graph being captured on `stream`.
fn record_external(
    event: &cudarc::driver::CudaEvent,
    stream: sys::CUstream,
) -> Result<(), CudaError> {
    // SAFETY: the event and the stream are live and belong to the same context.
    unsafe {
        sys::cuEventRecordWithFlags(
            event.cu_event(),
            stream,
            sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32,
        )
    }
    .result()
    .ctx(|| "recording a timing event in the profiling graph".into())
}

/// Index of the largest element, first on ties, NaN skipped.
fn host_argmax(x: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(host_argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(host_argmax(&[f32::NAN, -2.0, -1.0]), Some(2));
        assert_eq!(host_argmax(&[]), None);
    }

    /// `x [rows, 64]` through rms_norm + a packed q/k matmul, then an o matmul, with the weight
    /// leaves declared in the order `order` (another graph of the same model may place its
    /// constants elsewhere); `wo_rows` changes o's shape.
    fn model_graph(rows: usize, order: &[&str], wo_rows: usize) -> Graph {
        use braid_ir::{Op, Value};
        let mut g = Graph::new();
        let leaf = |g: &mut Graph, name: &str| -> Value {
            let shape = match name {
                "ln" => vec![64],
                "wq" | "wk" => vec![32, 64],
                _ => vec![wo_rows, 64],
            };
            let op = Op::Weight {
                name: name.into(),
                ty: TensorType::new(DType::BF16, shape),
            };
            g.add1(op, &[]).expect("weight")
        };
        let mut w = HashMap::new();
        for name in order {
            w.insert(*name, leaf(&mut g, name));
        }
        let x = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: TensorType::new(DType::F32, [rows, 64]),
                },
                &[],
            )
            .expect("x");
        let cat = g
            .add1(Op::Concat { axis: 0 }, &[w["wq"], w["wk"]])
            .expect("concat");
        let y = g
            .add1(Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, w["ln"], cat])
            .expect("qk");
        let o = g.add1(Op::MatMul, &[y, w["wo"]]).expect("o");
        g.set_results(vec![o]);
        g
    }

    fn entries(g: &Graph) -> Vec<ConstEntry> {
        let mem = crate::plan::MemoryPlan::new(g, crate::lower::operand_form).expect("plan");
        const_keys(g, &mem).expect("keys")
    }

    #[test]
    fn a_step_of_the_same_model_maps_onto_the_other_steps_weights() {
        let decode = entries(&model_graph(1, &["ln", "wq", "wk", "wo"], 64));
        let prefill = entries(&model_graph(16, &["wo", "wk", "wq", "ln"], 64));
        let map = weight_map(&prefill, &decode).expect("every constant is shared");
        assert_eq!(map.len(), prefill.len());
        // Each constant lands on the decode step's copy of the same constant.
        for c in &prefill {
            let there = decode
                .iter()
                .find(|d| d.key == c.key && d.form == c.form)
                .expect("same key");
            let bases = Bases {
                arena: 0,
                io: 0,
                kv: 0,
                weights: 0x1000_0000,
                scratch: 0,
                weight_map: Some(map.clone()),
            };
            assert_eq!(bases.weight_offset(c.offset), there.offset, "{}", c.key);
            assert_eq!(
                bases.weight_offset(c.offset + c.bytes - 2),
                there.offset + c.bytes - 2
            );
        }
        assert!(prefill.iter().any(|c| c.key.starts_with("Concat")));
        // A different weight shape is another model: nothing is shared.
        let other = entries(&model_graph(16, &["ln", "wq", "wk", "wo"], 32));
        assert!(weight_map(&other, &decode).is_none());
    }

    #[test]
    fn default_options_replay_a_graph_with_pdl() {
        let o = ExecOptions::default();
        assert!(o.use_graph && o.pdl && !o.sync_each_launch);
        assert_eq!(o.tuning, Tuning::default());
    }
}

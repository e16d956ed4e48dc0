//! The persistent step's schedule: the graph's matmuls as tile instructions on per-CTA queues with
//! dependency counters, decided from the graph and the device's facts alone (no model names or
//! shapes), printable and snapshot-tested like the per-op [`crate::Plan`].
//!
//! First stage of the persistent mode: graphs whose launching nodes are bf16 GEMVs (`matmul` of
//! one row, views between them) chained one after another: the GEMV-chain benchmark of the issue
//! (Qwen3-0.6B's 113 matmuls) and the shape of every transformer step's dependency chain. Each
//! stage (matmul) is cut into row slices, one contiguous range per CTA, each range cut again so
//! that a slice fits half the shared-memory ring (so the next slice can always stream in while one
//! is computed). Stage `s` waits for every instruction of stage `s - 1`: one counter per stage,
//! counting up across steps.

use std::fmt::Write;

use braid_ir::op::split_is_view;
use braid_ir::{DType, Graph, Op, Value};

use crate::error::CudaError;
use crate::facts::Target;
use crate::lower::{operand_form, View};
use crate::params::{PersistentInsn, PERSISTENT_THREADS};
use crate::plan::MemoryPlan;

/// Bytes of shared memory the kernel keeps for itself (its static variables, alignment).
const STATIC_SMEM_RESERVE: usize = 1024;

/// One matmul of the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The matmul's value, as printed (`%12`).
    pub node: String,
    /// Rows of W (outputs).
    pub n: usize,
    /// Columns of W (inputs).
    pub k: usize,
    /// The stage whose output this stage reads (`None`: a graph input).
    pub producer: Option<usize>,
    /// Instructions of this stage, over all CTAs.
    pub insns: usize,
    /// Fewest and most rows of one instruction.
    pub rows_per_insn: (usize, usize),
}

/// The static schedule of one step.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// CTAs (one per multiprocessor).
    pub ctas: usize,
    /// Threads per CTA.
    pub threads: u32,
    /// Shared memory for weight slices, bytes.
    pub ring_bytes: usize,
    /// Shared memory for x (the largest k, f32), bytes.
    pub x_bytes: usize,
    /// The matmuls, in chain order.
    pub stages: Vec<Stage>,
    /// Every CTA's instructions back to back (pointers symbolic).
    pub insns: Vec<PersistentInsn>,
    /// CTA `c` runs `insns[queue_start[c] .. queue_start[c + 1]]`.
    pub queue_start: Vec<i32>,
    /// The memory plan (places of weights, inputs, activations).
    pub memory: MemoryPlan,
}

/// The stage that produced `x` (through views), or `None` for a graph input.
fn producer_of(g: &Graph, x: Value, stage_of: &[(Value, usize)]) -> Result<Option<usize>, String> {
    let mut v = x;
    loop {
        let node = g.node(v.node).ok_or("a missing node")?;
        match &node.op {
            Op::Input { .. } => return Ok(None),
            Op::MatMul => {
                return stage_of
                    .iter()
                    .find(|(s, _)| s.node == v.node)
                    .map(|&(_, i)| Some(i))
                    .ok_or_else(|| "a matmul planned after its user".to_string())
            }
            Op::Reshape { .. } => v = g.inputs(v.node)[0],
            Op::Split { axis, .. } => {
                let ins = g.inputs(v.node);
                let t = g.value_type(ins[0]).map_err(|e| e.to_string())?;
                if !split_is_view(*axis, &[t]) {
                    return Err("a split that is not a view".into());
                }
                v = ins[0];
            }
            other => return Err(format!("`{}`", other.name())),
        }
    }
}

/// Builds the schedule of `g` for `target`.
///
/// Errors: [`CudaError::Unsupported`] naming the node for anything but a chain of one-row bf16
/// matmuls (k a multiple of 8) joined by views, each reading the previous one's output.
pub fn schedule(g: &Graph, target: &Target<'_>) -> Result<Schedule, CudaError> {
    braid_ir::verify(g).map_err(|e| CudaError::Graph(e.to_string()))?;
    let memory = MemoryPlan::new(g, operand_form)?;
    let view = View { g, mem: &memory };
    let ctas = target.facts.sm_count as usize;
    // Collect the stages.
    let mut stage_of: Vec<(Value, usize)> = Vec::new();
    let mut stages = Vec::new();
    let mut operands = Vec::new();
    for &n in &memory.order {
        if memory.consts.contains(&n) {
            continue;
        }
        let node = view.node(n)?;
        match &node.op {
            Op::Input { .. } | Op::Reshape { .. } => continue,
            Op::Split { axis, .. } if split_is_view(*axis, &[view.ty(g.inputs(n.node)[0])?]) => {
                continue
            }
            Op::MatMul => {}
            other => {
                return Err(view.unsupported(
                    n,
                    format!(
                        "the persistent mode runs chains of matmuls so far, not `{}`",
                        other.name()
                    ),
                ))
            }
        }
        let (x, w) = (view.operand(n, 0)?, view.operand(n, 1)?);
        if !w.is_const || w.dtype != DType::BF16 || x.dtype != DType::F32 || x.ty.rows() != 1 {
            return Err(view.unsupported(
                n,
                format!(
                    "the persistent GEMV takes a constant bf16 W and one f32 row of x, got x {} and W {}",
                    x.ty, w.ty
                ),
            ));
        }
        let (rows, k) = (w.ty.shape[0], w.ty.shape[1]);
        if !k.is_multiple_of(8) || !x.ptr.is_aligned(16) {
            return Err(view.unsupported(
                n,
                format!("the persistent GEMV needs k % 8 == 0 and x 16-byte aligned (k = {k})"),
            ));
        }
        let producer = producer_of(g, g.inputs(n.node)[0], &stage_of)
            .map_err(|what| view.unsupported(n, format!("x comes from {what}")))?;
        let s = stages.len();
        // A stage reads the stage before it (or a graph input, for the first): every wait then
        // also orders the arena's reuse of earlier buffers (no write-after-read hazard).
        if producer != s.checked_sub(1) {
            return Err(view.unsupported(
                n,
                format!(
                    "stage {s} reads {}; the persistent mode needs each matmul to read the one before it",
                    producer.map_or("a graph input".to_string(), |p| format!("stage {p}"))
                ),
            ));
        }
        stage_of.push((n, s));
        stages.push(Stage {
            node: memory.label(n),
            n: rows,
            k,
            producer,
            insns: 0,
            rows_per_insn: (usize::MAX, 0),
        });
        operands.push((w.ptr, x.ptr, view.output(n, 0)?));
    }
    if stages.is_empty() {
        return Err(CudaError::Graph(
            "the graph has no matmul to schedule".into(),
        ));
    }
    let max_k = stages.iter().map(|s| s.k).max().unwrap_or(0);
    let x_bytes = (max_k * 4).div_ceil(16) * 16;
    let smem = target.facts.smem_per_block_optin as usize;
    let ring_bytes = (smem.saturating_sub(x_bytes + STATIC_SMEM_RESERVE)) / 16 * 16;
    // Instructions: per CTA, per stage, contiguous row slices of at most half the ring.
    let mut per_cta: Vec<Vec<(usize, PersistentInsn)>> = vec![Vec::new(); ctas];
    for (s, st) in stages.iter_mut().enumerate() {
        let max_rows = (ring_bytes / 2) / (st.k * 2);
        if max_rows == 0 {
            return Err(CudaError::Graph(format!(
                "{}: one row of W ({} bytes) does not fit half the persistent kernel's ring ({} bytes)",
                st.node,
                st.k * 2,
                ring_bytes
            )));
        }
        let (base, rem) = (st.n / ctas, st.n % ctas);
        let (w, x, y) = operands[s];
        for (c, queue) in per_cta.iter_mut().enumerate() {
            let row0 = c * base + c.min(rem);
            let rows = base + usize::from(c < rem);
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(max_rows);
                queue.push((
                    s,
                    PersistentInsn {
                        w,
                        x,
                        y,
                        row0: (row0 + r) as i32,
                        rows: take as i32,
                        k: st.k as i32,
                        wait_counter: -1,
                        wait_target: 0,
                        signal_counter: s as i32,
                    },
                ));
                st.insns += 1;
                st.rows_per_insn = (st.rows_per_insn.0.min(take), st.rows_per_insn.1.max(take));
                r += take;
            }
        }
    }
    // Waits: on every instruction of the producer stage.
    let totals: Vec<u32> = stages.iter().map(|s| s.insns as u32).collect();
    let mut insns = Vec::new();
    let mut queue_start = vec![0i32];
    for queue in per_cta {
        for (s, mut q) in queue {
            if let Some(p) = stages[s].producer {
                q.wait_counter = p as i32;
                q.wait_target = totals[p];
            }
            insns.push(q);
        }
        queue_start.push(insns.len() as i32);
    }
    Ok(Schedule {
        ctas,
        threads: PERSISTENT_THREADS,
        ring_bytes,
        x_bytes,
        stages,
        insns,
        queue_start,
        memory,
    })
}

impl Schedule {
    /// Dynamic shared memory of the kernel: the ring, then x.
    pub fn smem_bytes(&self) -> usize {
        self.ring_bytes + self.x_bytes
    }

    /// Bytes of weights one step streams.
    pub fn weight_bytes(&self) -> usize {
        self.stages.iter().map(|s| s.n * s.k * 2).sum()
    }

    /// Checks what the kernel relies on: every slice fits half the ring, every wait names an
    /// earlier stage's counter with that stage's instruction count, and every CTA's queue is in
    /// stage order (so no CTA waits on work queued after its own).
    ///
    /// Errors: a sentence naming the instruction and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let totals: Vec<u32> = self.stages.iter().map(|s| s.insns as u32).collect();
        for c in 0..self.ctas {
            let (a, b) = (
                self.queue_start[c] as usize,
                self.queue_start[c + 1] as usize,
            );
            let mut last_stage = -1i32;
            for (i, q) in self.insns[a..b].iter().enumerate() {
                let at = a + i;
                let bytes = q.rows as usize * q.k as usize * 2;
                if bytes > self.ring_bytes / 2 {
                    return Err(format!(
                        "instruction {at} (CTA {c}): a {bytes}-byte slice exceeds half the ring"
                    ));
                }
                if q.signal_counter < last_stage {
                    return Err(format!("instruction {at} (CTA {c}): stages out of order"));
                }
                last_stage = q.signal_counter;
                if q.wait_counter >= 0 {
                    let w = q.wait_counter as usize;
                    if w >= q.signal_counter as usize || totals.get(w) != Some(&q.wait_target) {
                        return Err(format!(
                            "instruction {at} (CTA {c}) waits for {} arrivals on counter {w}, which \
                             stage {w}'s {} instructions cannot give",
                            q.wait_target,
                            totals.get(w).copied().unwrap_or(0)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The schedule as text: the header, one line per stage (node, shape, instructions, rows per
    /// instruction, wait and signal counters), and each CTA's queue length.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "persistent  {} CTAs x {} threads, ring {} B + x {} B of shared memory, {} stages, {} instructions",
            self.ctas,
            self.threads,
            self.ring_bytes,
            self.x_bytes,
            self.stages.len(),
            self.insns.len()
        );
        let _ = writeln!(
            s,
            "{:>5}  {:<6} {:<14} {:>6} {:>10}  {:<22} signals",
            "stage", "value", "gemv", "insns", "rows/insn", "waits for"
        );
        for (i, st) in self.stages.iter().enumerate() {
            let wait = st.producer.map_or("-".to_string(), |p| {
                format!("c{p} >= {} per step", self.stages[p].insns)
            });
            let _ = writeln!(
                s,
                "{i:>5}  {:<6} {:<14} {:>6} {:>10}  {wait:<22} c{i}",
                st.node,
                format!("{}x{}", st.n, st.k),
                st.insns,
                format!("{}-{}", st.rows_per_insn.0, st.rows_per_insn.1)
            );
        }
        let lens: Vec<i32> = self.queue_start.windows(2).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = (
            lens.iter().min().copied().unwrap_or(0),
            lens.iter().max().copied().unwrap_or(0),
        );
        let _ = writeln!(s, "queues      {lo}-{hi} instructions per CTA");
        s
    }
}

//! The plan: everything the lowering decided for one graph on one target, as data. Built without a
//! GPU ([`crate::lower::lower`]), printed ([`Plan::text`]) and snapshot-tested; an executor binds it
//! to its buffers and runs it.
//!
//! ```text
//! fused ir::Graph + DeviceFacts + Occupancy + Tuning ──lower──► Plan
//!     memory      MemoryPlan: constants, inputs, KV caches, the liveness-packed activation arena
//!     scratch     ScratchLayout: per-launch scratch slots (attention and argmax partials, rope tables)
//!     launches    one PlannedLaunch per kernel: kernel, grid, block, shared memory, typed params
//!     fusions     what the backend folded into which launch, and the knob that turns it off
//! ```

mod memory;
mod text;

use std::collections::BTreeMap;

pub use memory::{place_by_liveness, Form, LeafSlot, MemoryPlan, Place, Space, ALIGN};

use crate::facts::{DeviceFacts, KernelRef};
use crate::params::{GemmParams, Params, Ptr, Scratch};
use crate::tuning::Tuning;

/// One kernel launch of a step, every argument decided; pointers are symbolic
/// ([`crate::params::Ptr`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedLaunch {
    /// The op's name, e.g. `fused_rms_norm_matmul`.
    pub op: &'static str,
    /// The value the launch computes, as printed (`%12`).
    pub node: String,
    /// The kernel and its variant defines.
    pub kernel: KernelRef,
    /// Grid dimensions (blocks).
    pub grid: (u32, u32, u32),
    /// Block dimensions (threads).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub smem: u32,
    /// Thread-block cluster dimensions (sm_90+), or `None`.
    pub cluster: Option<(u32, u32, u32)>,
    /// The kernel's parameters.
    pub params: Params,
    /// Bytes of device memory read and written by one launch, KV-cache rows aside.
    pub bytes: usize,
    /// Bytes read per attended KV-cache row (attention reads `position + 1` rows).
    pub bytes_per_kv_row: usize,
    /// The constant weight bytes this launch streams (`(pointer, bytes)`), for L2 prefetch
    /// planning.
    pub weight_range: Option<(Ptr, usize)>,
    /// Whether the kernel honours its parameters' L2 prefetch range (`pf`, `pf_bytes`).
    pub can_prefetch: bool,
    /// Shape details for reports, e.g. `4096x1024 +swiglu`.
    pub detail: String,
    /// Nodes whose work this launch does besides its own (backend fusions), as printed
    /// (`%9 = fused_qk_norm_rope`).
    pub absorbed: Vec<String>,
}

impl PlannedLaunch {
    /// Bytes this launch moves at decode position `position`.
    pub fn bytes_at(&self, position: usize) -> usize {
        self.bytes + self.bytes_per_kv_row * (position + 1)
    }

    /// The GEMM this entry runs through cuBLAS ([`crate::lower::gemm`]), or `None` for a kernel
    /// launch.
    pub fn gemm(&self) -> Option<&GemmParams> {
        match &self.params {
            Params::Gemm(g) => Some(g),
            _ => None,
        }
    }

    /// Whether this entry is a cuBLAS GEMM rather than a kernel of ours.
    pub fn is_gemm(&self) -> bool {
        self.gemm().is_some()
    }
}

/// Where each scratch slot sits in the scratch buffer, and the data some slots start with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScratchLayout {
    /// Byte offset and size of every slot in use.
    pub slots: BTreeMap<Scratch, (usize, usize)>,
    /// Slots uploaded once at load (rotary tables: `inv_freq [d / 2]`), f32.
    pub init: Vec<(Scratch, Vec<f32>)>,
    /// Bytes of the scratch buffer.
    pub bytes: usize,
}

impl ScratchLayout {
    /// Lays out slots of the given sizes (bytes), each 256-byte aligned.
    pub fn new(sizes: &BTreeMap<Scratch, usize>, init: Vec<(Scratch, Vec<f32>)>) -> Self {
        let mut slots = BTreeMap::new();
        let mut at = 0;
        for (&s, &size) in sizes {
            slots.insert(s, (at, size));
            at += size.max(4).div_ceil(ALIGN) * ALIGN;
        }
        ScratchLayout {
            slots,
            init,
            bytes: at,
        }
    }

    /// The byte offset of slot `s`, if it is in use.
    pub fn offset(&self, s: Scratch) -> Option<usize> {
        self.slots.get(&s).map(|&(off, _)| off)
    }
}

/// A backend fusion applied (or turned off) in a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionNote {
    /// What was folded, e.g. `q/k rms_norm + rope into attention`.
    pub what: &'static str,
    /// The tuning knob that turns it off, e.g. `BRAID_ATT_QK_FOLD=0`.
    pub knob: &'static str,
    /// How many times it applied.
    pub count: usize,
    /// Whether the knob allows it (a fusion turned off is listed with count 0).
    pub enabled: bool,
}

/// Everything decided for one graph on one target.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The device the plan is for.
    pub facts: DeviceFacts,
    /// The knobs in force.
    pub tuning: Tuning,
    /// Where every value lives.
    pub memory: MemoryPlan,
    /// Where each scratch slot lives.
    pub scratch: ScratchLayout,
    /// Every launch of one step, in order.
    pub launches: Vec<PlannedLaunch>,
    /// Backend fusions, applied or not.
    pub fusions: Vec<FusionNote>,
    /// Rows of the smallest embedding table the `token` input indexes (the token id bound).
    pub token_limit: Option<usize>,
    /// Rows of the smallest KV cache (one more than the largest position), if the graph has
    /// attention.
    pub max_context: Option<usize>,
}

impl Plan {
    /// Bytes every launch of a step at `position` reads and writes.
    pub fn bytes_per_step(&self, position: usize) -> usize {
        self.launches.iter().map(|l| l.bytes_at(position)).sum()
    }

    /// Floating-point operations of the step's matmul-family nodes (`2 m n k` each, GEMMs and
    /// GEMVs alike): the work a prefill's compute floor is measured against.
    pub fn matmul_flops(&self) -> f64 {
        self.launches
            .iter()
            .map(|l| match &l.params {
                Params::Gemm(g) => g.flops(),
                Params::Gemv(g) => 2.0 * l.grid.1 as f64 * g.n as f64 * g.k as f64,
                _ => 0.0,
            })
            .sum()
    }

    /// cuBLAS GEMMs of a step.
    pub fn gemm_count(&self) -> usize {
        self.launches.iter().filter(|l| l.is_gemm()).count()
    }
}

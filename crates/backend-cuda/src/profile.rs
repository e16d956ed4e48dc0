//! Per-op timing of eager decode steps ([`crate::CudaExecutor::profile`]).

use std::fmt;

/// One row of a profile: every launch of one kernel for one op kind, per step.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// The op's name, e.g. `fused_rms_norm_matmul`.
    pub op: String,
    /// The kernel's name and shape details, e.g. `gemv_bf16 4096x1024`.
    pub kernel: String,
    /// Launches per step.
    pub calls: usize,
    /// Mean time of one launch, in microseconds (CUDA events).
    pub us_per_call: f64,
    /// Share of the summed kernel time of a step, in percent.
    pub percent: f64,
    /// Achieved bandwidth: bytes the launches read and write over their time, in GB/s (1e9 B/s).
    pub gb_per_s: f64,
}

/// Per-op timing of a number of decode steps ([`crate::CudaExecutor::profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Steps timed (after one warm-up step).
    pub steps: usize,
    /// Whether `step_us` is a CUDA graph replay (else eager launches).
    pub graph: bool,
    /// Mean time of one step on the executor's own path (graph replay or eager launches, inputs in
    /// and next token out included), in microseconds (CUDA events).
    pub step_us: f64,
    /// Mean summed time of the launches of a step, each timed alone, in microseconds.
    pub kernel_us: f64,
    /// Kernel launches per step.
    pub launches: usize,
    /// Bytes a step reads and writes (at the middle position of the profiled steps).
    pub bytes_per_step: usize,
    /// Rows, most expensive first.
    pub rows: Vec<ProfileRow>,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} steps, {} launches/step, {:.1} µs/step ({}), {:.1} µs summed over kernels timed alone, \
             {:.1} MB/step",
            self.steps,
            self.launches,
            self.step_us,
            if self.graph { "graph replay" } else { "eager" },
            self.kernel_us,
            self.bytes_per_step as f64 / 1e6
        )?;
        writeln!(
            f,
            "{:<24} {:<44} {:>6} {:>10} {:>7} {:>9}",
            "op", "kernel", "calls", "µs/call", "%", "GB/s"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<24} {:<44} {:>6} {:>10.2} {:>7.1} {:>9.0}",
                r.op, r.kernel, r.calls, r.us_per_call, r.percent, r.gb_per_s
            )?;
        }
        Ok(())
    }
}

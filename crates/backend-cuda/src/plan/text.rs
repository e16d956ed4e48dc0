//! The text form of a plan (`braid plan`): a header (device, tuning, memory, backend fusions) and
//! one line per launch, in the style of a compiler's filetest output: stable, aligned, diffable.

use std::fmt::Write;

use super::Plan;

/// `n` bytes with a binary-free unit (B, KB, MB, GB; powers of 1000), one decimal.
pub fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} KB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

fn dims((x, y, z): (u32, u32, u32)) -> String {
    format!("{x}x{y}x{z}")
}

impl Plan {
    /// The plan as text: the header, then one line per launch (index, value, op, kernel and shape,
    /// grid, block, dynamic shared memory, cluster, bytes moved at position 0, and what it
    /// absorbed). With `verbose`, every launch is followed by its parameters (`name=value`,
    /// pointers as `region+offset`).
    pub fn text(&self, verbose: bool) -> String {
        let mut s = String::new();
        let f = &self.facts;
        let _ = writeln!(
            s,
            "device    {} ({}, {} SMs, {} KiB shared memory per block)",
            f.name,
            f.arch(),
            f.sm_count,
            f.smem_per_block_optin / 1024
        );
        let changed = self.tuning.changed();
        let tuning = if changed.is_empty() {
            "defaults".to_string()
        } else {
            changed
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(s, "tuning    {tuning}");
        let m = &self.memory;
        let _ = writeln!(
            s,
            "memory    weights {}, kv caches {}, arena {}, inputs {}, scratch {}",
            human_bytes(m.weights_bytes),
            human_bytes(m.kv_bytes),
            human_bytes(m.arena_bytes),
            human_bytes(m.io_bytes),
            human_bytes(self.scratch.bytes)
        );
        let _ = writeln!(
            s,
            "step      {} launches, {} at position 0",
            self.launches.len(),
            human_bytes(self.bytes_per_step(0))
        );
        for (i, n) in self.fusions.iter().enumerate() {
            let head = if i == 0 { "fusions" } else { "" };
            let state = if n.enabled {
                format!("x{}", n.count)
            } else {
                "off".to_string()
            };
            let _ = writeln!(s, "{head:<9} {:<44} {state:<5} ({})", n.what, n.knob);
        }
        let kernel_w = self
            .launches
            .iter()
            .map(|l| l.kernel.name.len() + 1 + l.detail.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "{:>4}  {:<6} {:<26} {:<kernel_w$}  {:<11} {:>5} {:>7}  {:<7}  {:>9}  absorbs",
            "#", "value", "op", "kernel", "grid", "block", "smem", "cluster", "bytes"
        );
        for (i, l) in self.launches.iter().enumerate() {
            let kernel = if l.detail.is_empty() {
                l.kernel.name.clone()
            } else {
                format!("{} {}", l.kernel.name, l.detail)
            };
            let cluster = l.cluster.map_or("-".to_string(), dims);
            // A cuBLAS GEMM has no grid, block or shared memory of ours.
            let (grid, block, smem) = if l.is_gemm() {
                ("-".to_string(), "-".to_string(), "-".to_string())
            } else {
                (dims(l.grid), l.block.0.to_string(), l.smem.to_string())
            };
            let line = format!(
                "{i:>4}  {:<6} {:<26} {kernel:<kernel_w$}  {grid:<11} {block:>5} {smem:>7}  {cluster:<7}  {:>9}  {}",
                l.node,
                l.op,
                human_bytes(l.bytes_at(0)),
                l.absorbed.join(", ")
            );
            let _ = writeln!(s, "{}", line.trim_end());
            if verbose {
                let params: Vec<String> = l
                    .params
                    .describe()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(s, "      {}", params.join(" "));
            }
        }
        s
    }
}

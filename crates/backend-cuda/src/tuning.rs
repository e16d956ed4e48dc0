//! The backend's tuning knobs: every choice of the lowering that is not forced by the graph or the
//! device, with the default that measured fastest and the measurement that chose it.
//!
//! A [`Tuning`] is part of [`crate::ExecOptions`] and an input of [`crate::lower::lower`]. Tests set
//! its fields directly; the `braid` runner reads the `BRAID_*` environment variables once
//! ([`Tuning::from_env`], in `env.rs`, the only place the backend reads its environment) and prints
//! the values in force (`braid bench`, `braid profile`, `braid plan`). Every default below was
//! measured on an H200 with Qwen3-0.6B's shape, 128-token prompt + 256 tokens, device loop, A/B in
//! one call (`BENCHMARKS.md`).

use std::fmt;

/// Which GEMV kernel runs the matmul-family nodes (`BRAID_GEMV_KERNEL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvKernel {
    /// `auto` (default): the direct kernels while a wave of warps covers the rows about once
    /// (two rows per warp per [`Rows2`]), the staged kernel for taller matrices (an LM head).
    Auto,
    /// `direct4`: the one-row-per-warp direct kernel wherever its alignment holds (never two rows
    /// per warp).
    Direct4,
    /// `direct2`: the two-rows-per-warp direct kernel wherever its alignment holds.
    Direct2,
    /// `staged`: x staged in shared memory once per block, for every matrix.
    Staged,
}

/// When the auto GEMV choice takes the two-rows-per-warp direct kernel (`BRAID_GEMV_ROWS2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows2 {
    /// `0`: never.
    Never,
    /// `1` (default): when the rows outnumber one wave of warps (one row per resident warp):
    /// every row's loads are then in flight in one round. Measured: `2` cost 0.3% (785.4 vs 783.0
    /// µs/token), `0` loses the gate/up projection's best kernel.
    Wide,
    /// `2`: whenever a row would otherwise get a single warp.
    Always,
}

/// Which kernel runs a prefill attention (`BRAID_PREFILL_ATT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillAtt {
    /// `mma` (default): the tensor-core kernel (mma.sync, f16 operands, f32 accumulation) where it
    /// applies (bf16 / f16 caches, head_dim up to 128, sm_80+), else the f32 kernel.
    Mma,
    /// `simt`: the f32 kernel everywhere (the exact one: f32 q and probabilities).
    Simt,
}

/// Every tuning knob of the lowering. `Tuning::default()` is the measured-fastest configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// `BRAID_GEMV_KERNEL`: see [`GemvKernel`].
    pub gemv_kernel: GemvKernel,
    /// `BRAID_GEMV_ROWS2`: see [`Rows2`].
    pub gemv_rows2: Rows2,
    /// `BRAID_GEMV_BLOCKS_PER_SM`: cap on resident blocks per multiprocessor of the direct4 /
    /// staged GEMVs (default: as many as fit). Caps of 3 and 2 measured 1,105 and 1,228 µs against
    /// 926.8 (an older build).
    pub gemv_blocks_per_sm: Option<usize>,
    /// `BRAID_GEMV_MAX_WPR`: most warps sharing one weight row (1-8, default 8). 4 measured 790.9
    /// and 2 805.6 against 791.1.
    pub gemv_max_wpr: usize,
    /// `BRAID_GEMV_GLU`: a gate/up GEMV feeding only a `fused_gated_mlp` writes silu(gate) · up
    /// (default on: 850.7 → 783.9 µs/token).
    pub gemv_glu: bool,
    /// `BRAID_ARGMAX_FOLD`: an `argmax` of an LM head's staged GEMV runs inside that GEMV (default
    /// on: 793.2 → 791.1 µs/token, one launch fewer).
    pub argmax_fold: bool,
    /// `BRAID_ATT_QK_FOLD`: q/k rms_norm and rope feeding only an attention (`fused_qk_norm_rope`,
    /// or a pair of `rope`s) run in the attention kernel's prologue (default on: one launch per
    /// layer fewer).
    pub att_qk_fold: bool,
    /// `BRAID_ATT_CLUSTER`: merge attention's KV splits inside a thread-block cluster while the
    /// context is short (sm_90+; default on: 763.6 → 744.4 µs/token).
    pub att_cluster: bool,
    /// `BRAID_ATT_SPLITS`: KV splits per KV head with the global merge (default about two blocks
    /// per multiprocessor; 8 or 16 gained 0.7% at 128 + 256 tokens but cost more at long contexts).
    pub att_splits: Option<usize>,
    /// `BRAID_ATT_MIN_CHUNK`: smallest KV chunk per attention block in rows (default 0: one batch).
    /// 256 / 512 / 1,024 measured 988 / 1,004 / 1,005 against 927 µs/token.
    pub att_min_chunk: usize,
    /// `BRAID_ATT_UNROLL`: KV rows per lane group in flight in attention (1-16, default 4: 782.1 →
    /// 744.4 µs/token against 8, and faster at every context measured up to 4,224).
    pub att_unroll: usize,
    /// `BRAID_L2_PREFETCH`: each GEMV / attention launch pulls the weights of the launch this many
    /// places later into L2 (default 0, off: distances 1 / 2 / 3 measured 861.6 / 893.0 / 869.8
    /// against 860.8 µs/token).
    pub l2_prefetch: usize,
    /// `BRAID_GEMM_MIN_ROWS`: a matmul-family node with at least this many rows (tokens) and
    /// bf16 weights runs as a cuBLAS GEMM instead of a GEMV (default 2: the GEMVs read the weights
    /// once per row, a GEMM once for all rows, so a GEMM wins from two rows on; a decode step has
    /// one row and keeps its GEMVs).
    pub gemm_min_rows: usize,
    /// `BRAID_SPLIT_IN_PLACE`: a `split` of `[T, n]` rows (a prefill chunk's packed q/k/v) whose
    /// slices feed only rope / q-k norm / prefill attention is read in place with a row stride
    /// instead of copied (default on: one to three launches per layer fewer).
    pub split_in_place: bool,
    /// `BRAID_PREFILL_ATT`: see [`PrefillAtt`].
    pub prefill_att: PrefillAtt,
    /// `BRAID_PREFILL_ATT_SPLITS`: KV splits of the tensor-core prefill attention, merged inside
    /// a thread-block cluster (1-8; default: enough for two blocks per multiprocessor, with at
    /// least two 64-row key tiles per split, see `lower::attention::prefill_splits`; `1` is one
    /// block per query tile: 512 tokens of Qwen3-0.6B 3.90 ms against 3.36 with the default).
    pub prefill_att_splits: Option<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            gemv_kernel: GemvKernel::Auto,
            gemv_rows2: Rows2::Wide,
            gemv_blocks_per_sm: None,
            gemv_max_wpr: 8,
            gemv_glu: true,
            argmax_fold: true,
            att_qk_fold: true,
            att_cluster: true,
            att_splits: None,
            att_min_chunk: 0,
            att_unroll: 4,
            l2_prefetch: 0,
            gemm_min_rows: 2,
            split_in_place: true,
            prefill_att: PrefillAtt::Mma,
            prefill_att_splits: None,
        }
    }
}

/// The environment variable of every knob, in the order [`Tuning::entries`] lists them.
pub const KNOBS: [&str; 16] = [
    "BRAID_GEMV_KERNEL",
    "BRAID_GEMV_ROWS2",
    "BRAID_GEMV_BLOCKS_PER_SM",
    "BRAID_GEMV_MAX_WPR",
    "BRAID_GEMV_GLU",
    "BRAID_ARGMAX_FOLD",
    "BRAID_ATT_QK_FOLD",
    "BRAID_ATT_CLUSTER",
    "BRAID_ATT_SPLITS",
    "BRAID_ATT_MIN_CHUNK",
    "BRAID_ATT_UNROLL",
    "BRAID_L2_PREFETCH",
    "BRAID_GEMM_MIN_ROWS",
    "BRAID_SPLIT_IN_PLACE",
    "BRAID_PREFILL_ATT",
    "BRAID_PREFILL_ATT_SPLITS",
];

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "on" | "true" => Ok(true),
        "0" | "off" | "false" => Ok(false),
        _ => Err("0 or 1".into()),
    }
}

fn parse_usize(v: &str, lo: usize, hi: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("an integer in {lo}..={hi}")),
    }
}

fn parse_opt(v: &str, lo: usize, hi: usize) -> Result<Option<usize>, String> {
    if v == "auto" {
        return Ok(None);
    }
    parse_usize(v, lo, hi)
        .map(Some)
        .map_err(|e| format!("`auto` or {e}"))
}

impl Tuning {
    /// Sets the knob of environment variable `name` from its text `value` (the forms
    /// [`Tuning::entries`] prints).
    ///
    /// Errors: a sentence naming the knob, the value and what was expected.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        let r = match name {
            "BRAID_GEMV_KERNEL" => match v {
                "auto" => Ok(GemvKernel::Auto),
                "direct4" => Ok(GemvKernel::Direct4),
                "direct2" => Ok(GemvKernel::Direct2),
                "staged" => Ok(GemvKernel::Staged),
                _ => Err("auto, direct4, direct2 or staged".to_string()),
            }
            .map(|x| self.gemv_kernel = x),
            "BRAID_GEMV_ROWS2" => match v {
                "0" => Ok(Rows2::Never),
                "1" => Ok(Rows2::Wide),
                "2" => Ok(Rows2::Always),
                _ => Err("0 (never), 1 (rows beyond a wave of warps) or 2 (always)".to_string()),
            }
            .map(|x| self.gemv_rows2 = x),
            "BRAID_GEMV_BLOCKS_PER_SM" => parse_opt(v, 1, 32).map(|x| self.gemv_blocks_per_sm = x),
            "BRAID_GEMV_MAX_WPR" => parse_usize(v, 1, 8).map(|x| self.gemv_max_wpr = x),
            "BRAID_GEMV_GLU" => parse_bool(v).map(|x| self.gemv_glu = x),
            "BRAID_ARGMAX_FOLD" => parse_bool(v).map(|x| self.argmax_fold = x),
            "BRAID_ATT_QK_FOLD" => parse_bool(v).map(|x| self.att_qk_fold = x),
            "BRAID_ATT_CLUSTER" => parse_bool(v).map(|x| self.att_cluster = x),
            "BRAID_ATT_SPLITS" => parse_opt(v, 1, 64).map(|x| self.att_splits = x),
            "BRAID_ATT_MIN_CHUNK" => parse_usize(v, 0, 1 << 20).map(|x| self.att_min_chunk = x),
            "BRAID_ATT_UNROLL" => parse_usize(v, 1, 16).map(|x| self.att_unroll = x),
            "BRAID_L2_PREFETCH" => parse_usize(v, 0, 64).map(|x| self.l2_prefetch = x),
            "BRAID_GEMM_MIN_ROWS" => parse_usize(v, 1, 1 << 20).map(|x| self.gemm_min_rows = x),
            "BRAID_SPLIT_IN_PLACE" => parse_bool(v).map(|x| self.split_in_place = x),
            "BRAID_PREFILL_ATT" => match v {
                "mma" => Ok(PrefillAtt::Mma),
                "simt" => Ok(PrefillAtt::Simt),
                _ => Err("mma or simt".to_string()),
            }
            .map(|x| self.prefill_att = x),
            "BRAID_PREFILL_ATT_SPLITS" => parse_opt(v, 1, 8).map(|x| self.prefill_att_splits = x),
            _ => {
                return Err(format!(
                    "unknown tuning knob {name} (known: {})",
                    KNOBS.join(", ")
                ))
            }
        };
        r.map_err(|expected| format!("{name}={value}: expected {expected}"))
    }

    /// Every knob as `(environment variable, value)`, in [`KNOBS`] order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let opt = |o: Option<usize>| o.map_or("auto".to_string(), |n| n.to_string());
        let b = |x: bool| if x { "1" } else { "0" }.to_string();
        let kernel = match self.gemv_kernel {
            GemvKernel::Auto => "auto",
            GemvKernel::Direct4 => "direct4",
            GemvKernel::Direct2 => "direct2",
            GemvKernel::Staged => "staged",
        };
        let rows2 = match self.gemv_rows2 {
            Rows2::Never => "0",
            Rows2::Wide => "1",
            Rows2::Always => "2",
        };
        let values = [
            kernel.to_string(),
            rows2.to_string(),
            opt(self.gemv_blocks_per_sm),
            self.gemv_max_wpr.to_string(),
            b(self.gemv_glu),
            b(self.argmax_fold),
            b(self.att_qk_fold),
            b(self.att_cluster),
            opt(self.att_splits),
            self.att_min_chunk.to_string(),
            self.att_unroll.to_string(),
            self.l2_prefetch.to_string(),
            self.gemm_min_rows.to_string(),
            b(self.split_in_place),
            match self.prefill_att {
                PrefillAtt::Mma => "mma".to_string(),
                PrefillAtt::Simt => "simt".to_string(),
            },
            opt(self.prefill_att_splits),
        ];
        KNOBS.into_iter().zip(values).collect()
    }

    /// The knobs that differ from [`Tuning::default`].
    pub fn changed(&self) -> Vec<(&'static str, String)> {
        let d = Tuning::default().entries();
        self.entries()
            .into_iter()
            .zip(d)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a)
            .collect()
    }
}

impl fmt::Display for Tuning {
    /// `KNOB=value` for every knob, space-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_back_to_the_same_tuning() {
        let mut t = Tuning::default();
        t.set("BRAID_GEMV_KERNEL", "staged").unwrap();
        t.set("BRAID_ATT_SPLITS", "8").unwrap();
        t.set("BRAID_GEMV_GLU", "0").unwrap();
        let mut back = Tuning::default();
        for (k, v) in t.entries() {
            back.set(k, &v).unwrap();
        }
        assert_eq!(back, t);
        assert_eq!(
            t.changed(),
            vec![
                ("BRAID_GEMV_KERNEL", "staged".to_string()),
                ("BRAID_GEMV_GLU", "0".to_string()),
                ("BRAID_ATT_SPLITS", "8".to_string())
            ]
        );
    }

    #[test]
    fn bad_values_and_unknown_knobs_are_named() {
        let mut t = Tuning::default();
        let e = t.set("BRAID_ATT_UNROLL", "99").unwrap_err();
        assert!(
            e.contains("BRAID_ATT_UNROLL=99") && e.contains("1..=16"),
            "{e}"
        );
        let e = t.set("BRAID_GEMV_KERNEL", "direct").unwrap_err();
        assert!(e.contains("direct4"), "{e}");
        let e = t.set("BRAID_NOPE", "1").unwrap_err();
        assert!(e.contains("unknown tuning knob BRAID_NOPE"), "{e}");
        assert_eq!(t, Tuning::default());
    }
}

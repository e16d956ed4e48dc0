//! Rotary-embedding frequencies: the [`RopeScaling`] attribute of the rope-bearing ops (`rope`,
//! `fused_qk_norm_rope`) and [`rope_inv_freq`], the one function that turns `(theta, scaling,
//! head_dim)` into the `inv_freq` table. The interpreter uses it; a backend builds its device tables
//! from it, so every consumer agrees on the frequencies bit for bit.

/// How a rope op derives its inverse frequencies from `theta` (HF `config.rope_scaling`, whose
/// `rope_type` names the variant).
///
/// Not `Copy`, so that later variants may carry tables (e.g. `longrope`'s per-dimension factors).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RopeScaling {
    /// HF `_compute_default_rope_parameters` (`rope_type = "default"`, or no `rope_scaling`):
    /// `inv_freq[i] = 1 / theta^(2i/d)`.
    #[default]
    Default,
    /// Llama 3's frequency-dependent scaling, HF `_compute_llama3_parameters` (`rope_type =
    /// "llama3"`); the fields are the `rope_scaling` keys of the same names. Llama-3.2-1B:
    /// `factor = 32`, `low_freq_factor = 1`, `high_freq_factor = 4`,
    /// `original_max_position_embeddings = 8192`.
    Llama3 {
        /// How much the low frequencies are divided by (`factor`, HF requires >= 1).
        factor: f32,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// The context length the model was pre-trained with (HF `old_context_len`).
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// Whether this is [`RopeScaling::Default`].
    pub fn is_default(&self) -> bool {
        matches!(self, RopeScaling::Default)
    }

    /// The variant's `rope_type` name as in HF configs and the IR text form: `default`, `llama3`.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Llama3 { .. } => "llama3",
        }
    }

    /// Checks the parameters so that [`rope_inv_freq`] yields finite frequencies: for `Llama3`,
    /// `factor` finite and > 0, `0 < low_freq_factor < high_freq_factor` (both finite),
    /// `original_max_position_embeddings > 0`.
    ///
    /// Errors: a sentence naming the parameter and what was expected, e.g.
    /// ``expects llama3 `factor` finite and > 0, got -1e0``.
    pub fn validate(&self) -> Result<(), String> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        } = self
        else {
            return Ok(());
        };
        if !(factor.is_finite() && *factor > 0.0) {
            return Err(format!(
                "expects llama3 `factor` finite and > 0, got {factor:e}"
            ));
        }
        if !(low.is_finite() && *low > 0.0) {
            return Err(format!(
                "expects llama3 `low_freq_factor` finite and > 0, got {low:e}"
            ));
        }
        if !(high.is_finite() && *high > *low) {
            return Err(format!(
                "expects llama3 `high_freq_factor` finite and > low_freq_factor ({low:e}), got {high:e}"
            ));
        }
        if *old == 0 {
            return Err("expects llama3 `original_max_position_embeddings` > 0, got 0".into());
        }
        Ok(())
    }
}

/// The rotary inverse frequencies `inv_freq [head_dim / 2]` (f32) of a rope op with base `theta`
/// and `scaling`; the angle of pair `i` at position `p` is `p as f32 * inv_freq[i]` (f32 product,
/// as HF's `inv_freq @ position_ids` in float32). `head_dim` is even (the ops' type rules check it).
///
/// Every step is one f32 operation rounded as torch float32 rounds it on the CPU, where HF builds
/// the `inv_freq` buffer (`modeling_rope_utils.py`):
///
/// - default (`_compute_default_rope_parameters`): `1.0 / (base ** (torch.arange(0, dim, 2,
///   dtype=torch.int64).float() / dim))`, i.e. `1 / theta.powf(f32(2i) / f32(d))`.
/// - llama3 (`_compute_llama3_parameters`), from the default table `inv`, with
///   `old = original_max_position_embeddings`:
///   `low_freq_wavelen = old / low_freq_factor`, `high_freq_wavelen = old / high_freq_factor`
///   (Python f64, compared in f32);
///   `wavelen = 2π / inv` (torch's `scalar / tensor` is `tensor.reciprocal() * scalar`, so
///   `(1 / inv) · f32(2π)`);
///   `inv_llama = where(wavelen > low_freq_wavelen, inv / factor, inv)`;
///   `smooth = (old / wavelen − low_freq_factor) / (high_freq_factor − low_freq_factor)` (again
///   `(1 / wavelen) · old`; the divisor is a Python f64 difference, divided in f32);
///   `smoothed = (1 − smooth) · inv_llama / factor + smooth · inv_llama` (left to right);
///   the medium band `!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)` takes
///   `smoothed`, every other entry `inv_llama`.
///
/// (torch on CUDA divides a tensor by a scalar as a multiplication by its reciprocal, which can
/// differ from the CPU's division by one ulp; HF computes this table on the CPU.)
///
/// Checked against transformers 5.17 / torch 2.11 on the CPU (`tests/rope_freqs.rs`): three llama3
/// configurations bit for bit; default tables within 1 ulp, since torch's vectorised `pow` is not
/// always correctly rounded where the platform `powf` used here is.
pub fn rope_inv_freq(theta: f32, scaling: &RopeScaling, head_dim: usize) -> Vec<f32> {
    let d = head_dim;
    let default = (0..d / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32));
    match *scaling {
        RopeScaling::Default => default.collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        } => {
            let low_freq_wavelen = (old as f64 / low as f64) as f32;
            let high_freq_wavelen = (old as f64 / high as f64) as f32;
            let two_pi = (2.0 * std::f64::consts::PI) as f32;
            let band = (high as f64 - low as f64) as f32;
            let old = old as f32;
            default
                .map(|inv| {
                    let wavelen = (1.0 / inv) * two_pi;
                    let inv_llama = if wavelen > low_freq_wavelen {
                        inv / factor
                    } else {
                        inv
                    };
                    let smooth = ((1.0 / wavelen) * old - low) / band;
                    let smoothed = (1.0 - smooth) * inv_llama / factor + smooth * inv_llama;
                    // HF: `~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)`.
                    let medium = !(wavelen < high_freq_wavelen || wavelen > low_freq_wavelen);
                    if medium {
                        smoothed
                    } else {
                        inv_llama
                    }
                })
                .collect()
        }
    }
}

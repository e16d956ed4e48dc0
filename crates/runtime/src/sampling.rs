//! Next-token sampling: greedy, temperature, top-k, top-p (nucleus).
//!
//! Order of the filters follows transformers' `generate` logits processors: temperature, then top-k,
//! then top-p (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration"), then a draw.

use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Sampling parameters. `temperature == 0` means greedy (argmax), which ignores the rest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to at least `top_p`; 1.0 disables.
    pub top_p: f32,
    /// Seed of the sampler's RNG (ChaCha8), so a run is reproducible.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Whether these parameters select greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks the ranges: temperature ≥ 0 and finite, top_p in (0, 1].
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "--temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// A seeded sampler.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler with its RNG seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
        }
    }

    /// Picks the next token from `logits` (`[vocab]`, f32). Greedy returns the first maximum.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let candidates = filtered_probabilities(logits, &self.params);
        match WeightedIndex::new(candidates.iter().map(|(_, p)| *p)) {
            Ok(dist) => candidates[dist.sample(&mut self.rng)].0,
            // All weights zero or NaN logits: fall back to the most likely token.
            Err(_) => argmax(logits),
        }
    }
}

/// Index of the first maximum of `x`; NaN elements are skipped (0 when `x` is empty or all NaN, as
/// the device argmax answers).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// The candidate tokens and their (unnormalised) probabilities after temperature, top-k and top-p,
/// most likely first.
pub fn filtered_probabilities(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f32)> {
    if logits.is_empty() {
        return Vec::new();
    }
    let t = p.temperature.max(1e-6);
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let max = logits[order[0] as usize] / t;
    let mut probs: Vec<(u32, f32)> = order
        .iter()
        .map(|&i| (i, (logits[i as usize] / t - max).exp()))
        .collect();
    let total: f32 = probs.iter().map(|(_, q)| q).sum();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|(_, q)| {
                acc += q / total;
                acc >= p.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    probs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn greedy_picks_first_max() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn argmax_skips_nan_wherever_it_is() {
        // A NaN first element used to win: every later comparison with it is false.
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0, 0.5]), 2);
        assert_eq!(argmax(&[1.0, f32::NAN, 3.0, 3.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[-f32::INFINITY, -1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(1.0, 1, 1.0));
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.5, 0.2, 2.0, 1.9]), 2);
        }
    }

    #[test]
    fn top_p_keeps_smallest_nucleus() {
        // Softmax of [ln 6, ln 3, ln 1] = [0.6, 0.3, 0.1]: top_p 0.85 keeps the first two.
        let logits = [6f32.ln(), 3f32.ln(), 0.0];
        let kept = filtered_probabilities(&logits, &params(1.0, 0, 0.85));
        assert_eq!(kept.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
        let kept = filtered_probabilities(&logits, &params(1.0, 0, 0.5));
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn same_seed_same_draws_and_frequencies_follow_probabilities() {
        let logits = [2f32.ln(), 1f32.ln()]; // p = [2/3, 1/3]
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0, 0, 1.0)
            });
            (0..3000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        let zeros = draw(1).iter().filter(|t| **t == 0).count() as f32 / 3000.0;
        assert!((zeros - 2.0 / 3.0).abs() < 0.03, "{zeros}");
    }

    #[test]
    fn empty_logits_do_not_panic() {
        assert!(filtered_probabilities(&[], &params(1.0, 5, 0.9)).is_empty());
        assert_eq!(Sampler::new(params(1.0, 0, 1.0)).sample(&[]), 0);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        assert!(params(-1.0, 0, 1.0).validate().is_err());
        assert!(params(1.0, 0, 0.0).validate().is_err());
        assert!(params(1.0, 0, 1.5).validate().is_err());
        assert!(params(0.7, 40, 0.9).validate().is_ok());
    }
}

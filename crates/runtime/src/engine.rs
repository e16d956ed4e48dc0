//! The decode engine: prefill, the decode loop, sampling, stop conditions, streaming.
//!
//! A [`DecodeBackend`] runs one captured/interpreted decode step (`crate::cpu`, `crate::cuda`); the
//! engine drives it token by token. Prefill feeds the prompt through the same decode step one token
//! at a time.

use std::time::{Duration, Instant};

use crate::sampling::{Sampler, SamplingParams};

/// What one decode step returns.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// The greedy next token (argmax of the logits, computed inside the step).
    pub next_token: u32,
    /// The logits `[vocab]` (f32), when they were asked for.
    pub logits: Option<Vec<f32>>,
}

/// An error of the engine or a backend; the message says what and where.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "the prompt ({prompt} tokens) plus --max-tokens ({max_tokens}) needs {} positions, but the \
         context holds {max_context}; shorten the prompt, lower --max-tokens or raise --max-context",
        positions_needed(*prompt, *max_tokens)
    )]
    ContextOverflow {
        prompt: usize,
        max_tokens: usize,
        max_context: usize,
    },
    #[error("the prompt is empty: nothing to decode from")]
    EmptyPrompt,
    #[error("{backend} backend: {msg}")]
    Backend { backend: &'static str, msg: String },
    #[error("output: {0}")]
    Output(String),
}

/// One decode step on some device: `token` at `position` in, next-token (and maybe logits) out.
pub trait DecodeBackend {
    /// Short name for messages (`cpu`, `cuda`).
    fn name(&self) -> &'static str;
    /// KV-cache rows: the largest number of positions a sequence may use.
    fn max_context(&self) -> usize;
    /// Runs the step. `want_logits` asks for the logits to be copied back (sampling, `check`).
    fn step(
        &mut self,
        token: u32,
        position: usize,
        want_logits: bool,
    ) -> Result<StepOutput, EngineError>;
    /// Forgets the sequence (zeroes the KV caches).
    fn reset(&mut self) -> Result<(), EngineError>;
}

/// KV-cache positions a generation uses: every prompt token, and every generated token but the last
/// (which is emitted without being fed back).
pub fn positions_needed(prompt: usize, max_tokens: usize) -> usize {
    prompt + max_tokens.saturating_sub(1)
}

/// Checks a request before any work: a non-empty prompt whose generation fits in `max_context`.
///
/// Errors: [`EngineError::EmptyPrompt`], [`EngineError::ContextOverflow`].
pub fn check_context(
    prompt: usize,
    max_tokens: usize,
    max_context: usize,
) -> Result<(), EngineError> {
    if prompt == 0 {
        return Err(EngineError::EmptyPrompt);
    }
    if positions_needed(prompt, max_tokens) > max_context {
        return Err(EngineError::ContextOverflow {
            prompt,
            max_tokens,
            max_context,
        });
    }
    Ok(())
}

/// Options of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Tokens that end generation (EOS, `<|im_end|>`); the stop token is not emitted.
    pub stop_tokens: Vec<u32>,
}

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Wall time of the prompt steps.
    pub prefill: Duration,
    /// Decode steps run after prefill (the first generated token comes from the last prompt step).
    pub decode_steps: usize,
    /// Wall time of the decode steps.
    pub decode: Duration,
    /// Whether generation ended on a stop token (rather than `max_tokens`).
    pub stopped: bool,
}

impl GenerationStats {
    /// Decode throughput in steps (tokens) per second (0 when no decode step ran).
    pub fn decode_tok_per_s(&self) -> f64 {
        let s = self.decode.as_secs_f64();
        if s > 0.0 {
            self.decode_steps as f64 / s
        } else {
            0.0
        }
    }
}

/// Runs prefill and the decode loop from a fresh KV cache, calling `on_token` with each generated
/// token as soon as it is known (for streaming).
///
/// Errors: [`EngineError::ContextOverflow`] before any work when `prompt.len() + max_tokens` exceeds
/// the backend's context; [`EngineError::EmptyPrompt`]; backend errors; errors from `on_token`.
pub fn generate(
    backend: &mut dyn DecodeBackend,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<(), EngineError>,
) -> Result<GenerationStats, EngineError> {
    check_context(prompt.len(), opts.max_tokens, backend.max_context())?;
    backend.reset()?;
    let mut sampler = Sampler::new(opts.sampling);
    let want_logits = !opts.sampling.is_greedy();
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };

    let start = Instant::now();
    let mut out = StepOutput {
        next_token: 0,
        logits: None,
    };
    for (pos, &tok) in prompt.iter().enumerate() {
        let last = pos + 1 == prompt.len();
        out = backend.step(tok, pos, want_logits && last)?;
    }
    stats.prefill = start.elapsed();

    let start = Instant::now();
    for (i, pos) in (prompt.len()..).take(opts.max_tokens).enumerate() {
        let next = match &out.logits {
            Some(logits) => sampler.sample(logits),
            None => out.next_token,
        };
        if opts.stop_tokens.contains(&next) {
            stats.stopped = true;
            break;
        }
        on_token(next)?;
        stats.generated_tokens += 1;
        if i + 1 == opts.max_tokens {
            break;
        }
        out = backend.step(next, pos, want_logits)?;
        stats.decode_steps += 1;
    }
    stats.decode = start.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose greedy next token after step `i` is `script[i]`; records what it was fed.
    struct Scripted {
        script: Vec<u32>,
        fed: Vec<(u32, usize)>,
    }

    impl DecodeBackend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn max_context(&self) -> usize {
            64
        }
        fn step(
            &mut self,
            token: u32,
            position: usize,
            _: bool,
        ) -> Result<StepOutput, EngineError> {
            let next_token = self.script[self.fed.len()];
            self.fed.push((token, position));
            Ok(StepOutput {
                next_token,
                logits: None,
            })
        }
        fn reset(&mut self) -> Result<(), EngineError> {
            self.fed.clear();
            Ok(())
        }
    }

    fn run(
        script: &[u32],
        prompt: &[u32],
        max_tokens: usize,
    ) -> (Vec<u32>, GenerationStats, Scripted) {
        let mut b = Scripted {
            script: script.to_vec(),
            fed: vec![(0, 99)],
        };
        let opts = GenerateOptions {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![7, 9],
        };
        let mut out = Vec::new();
        let stats = generate(&mut b, prompt, &opts, &mut |t| {
            out.push(t);
            Ok(())
        })
        .expect("scripted generation runs");
        (out, stats, b)
    }

    #[test]
    fn generation_ends_at_a_stop_token_without_emitting_it() {
        // Prompt [1, 2]: step 1 predicts 3, then 4, then the stop token 9.
        let (out, stats, b) = run(&[5, 3, 4, 9, 6], &[1, 2], 10);
        assert_eq!(out, vec![3, 4]);
        assert!(stats.stopped);
        assert_eq!((stats.generated_tokens, stats.decode_steps), (2, 2));
        // reset() ran first; the prompt, then each emitted token, was fed at consecutive positions.
        assert_eq!(b.fed, vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
        // A stop token right after the prompt: nothing is emitted.
        let (out, stats, _) = run(&[5, 7], &[1, 2], 10);
        assert!(out.is_empty() && stats.stopped && stats.generated_tokens == 0);
    }

    #[test]
    fn generation_ends_at_max_tokens_without_an_extra_step() {
        let (out, stats, b) = run(&[5, 3, 4, 6, 8], &[1, 2], 3);
        assert_eq!(out, vec![3, 4, 6]);
        assert!(!stats.stopped);
        // The last emitted token is never fed back.
        assert_eq!(b.fed.len(), 4);
    }

    #[test]
    fn context_check_counts_the_unfed_last_token() {
        // 4 prompt tokens + 5 generated use positions 0..8: the 5th token is never fed back.
        assert!(check_context(4, 5, 8).is_ok());
        let err = check_context(4, 6, 8).unwrap_err().to_string();
        assert!(
            err.contains("needs 9 positions") && err.contains("holds 8"),
            "{err}"
        );
        assert!(matches!(
            check_context(0, 1, 8),
            Err(EngineError::EmptyPrompt)
        ));
    }
}

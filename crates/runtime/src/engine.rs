//! The decode engine: prefill, the decode loop, sampling, stop conditions, streaming.
//!
//! A [`DecodeBackend`] runs one captured/interpreted decode step (`crate::cpu`, `crate::cuda`); the
//! engine drives it token by token. Prefill goes through [`DecodeBackend::prefill`], which by
//! default feeds the prompt through the same decode step one token at a time.
//!
//! Two entry points:
//!
//! - [`Session`] owns a backend and remembers which tokens its KV cache holds. Each
//!   [`Session::generate`] reuses the longest common token prefix of the new prompt and the cache
//!   and prefills only the rest, so a multi-turn conversation (or a server's next request) pays
//!   only for its new tokens. It streams text (never splitting a UTF-8 character), matches stop
//!   tokens and stop strings, lets the caller stop at any token, and reports [`GenerationStats`].
//! - [`generate`] runs one generation from a fresh cache on a borrowed backend, token ids only.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::model::StreamDecoder;
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
    /// Feeds `tokens` at positions `start..start + tokens.len()` (writing their KV-cache rows; rows
    /// below `start` are kept) and returns the output of the last token; `want_logits` applies to
    /// that last token only.
    ///
    /// The default runs [`DecodeBackend::step`] once per token ([`prefill_by_token`]); a backend
    /// with a batched prefill overrides it.
    ///
    /// Errors: [`EngineError::EmptyPrompt`] when `tokens` is empty; the backend's step errors.
    fn prefill(
        &mut self,
        tokens: &[u32],
        start: usize,
        want_logits: bool,
    ) -> Result<StepOutput, EngineError> {
        prefill_by_token(self, tokens, start, want_logits)
    }

    /// Prepares whatever a prefill of `len` tokens needs (a batched prefill's steps for its chunk
    /// sizes), so that the prefill itself, and the time to first token, do not include set-up.
    /// The default does nothing.
    ///
    /// Errors: the backend's set-up errors.
    fn warm_prefill(&mut self, len: usize) -> Result<(), EngineError> {
        let _ = len;
        Ok(())
    }

    /// Feeds `tokens` at positions `start..` as [`DecodeBackend::prefill`] does and returns the
    /// logits of every one of them (`[tokens.len()][vocab]`, teacher forcing: `braid check`).
    ///
    /// The default runs [`DecodeBackend::step`] once per token with its logits; a backend with a
    /// batched prefill overrides it with one prefill step whose graph returns every row.
    ///
    /// Errors: [`EngineError::EmptyPrompt`] when `tokens` is empty; the backend's step errors.
    fn prefill_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        logits_by_token(self, tokens, start)
    }
}

/// How a prompt goes through a backend before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillMode {
    /// Token by token through the decode step (the ablation, and the fallback).
    Token,
    /// Through the prefill step over `T` tokens, in chunks of at most `chunk` tokens (the
    /// activations of one chunk stay bounded); see [`prefill_chunks`].
    Batched { chunk: usize },
}

impl PrefillMode {
    /// Chunks of at most this many tokens: the default of batched prefill. Larger chunks give the
    /// prefill attention more blocks and walk the earlier tokens' keys fewer times; on the H200
    /// (Qwen3-0.6B shape, 2026-12-03) 2,048 / 8,192-token prompts took 26.4 / 282 ms in chunks of
    /// 512, 13.2 / 130 in chunks of 2,048 and 13.2 / 107 in chunks of 4,096, with 512 tokens at
    /// 3.9 ms for all. 2,048 bounds one chunk's activations to about 170 MB at Llama-3.2-1B's
    /// size (`braid plan --prefill 2048`).
    pub const DEFAULT_CHUNK: usize = 2048;
}

impl Default for PrefillMode {
    /// Batched, in chunks of [`PrefillMode::DEFAULT_CHUNK`] tokens.
    fn default() -> Self {
        PrefillMode::Batched {
            chunk: PrefillMode::DEFAULT_CHUNK,
        }
    }
}

/// The chunk sizes a batched prefill of `len` tokens runs, in order: the largest power of two
/// that fits, at most `max_chunk` (itself rounded down to a power of two), again and again. A
/// backend then needs a prefill step for only `log2(max_chunk) + 1` distinct sizes (each built
/// once and kept), at the price of at most that many chunks for the tail of a prompt. 547
/// tokens with chunks of 512: 512, 32, 2, 1 (a chunk of 1 is a decode step).
pub fn prefill_chunks(len: usize, max_chunk: usize) -> Vec<usize> {
    let cap = if max_chunk <= 1 {
        1
    } else {
        1usize << (usize::BITS - 1 - max_chunk.leading_zeros())
    };
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let c = if left >= cap {
            cap
        } else {
            1usize << (usize::BITS - 1 - left.leading_zeros())
        };
        out.push(c);
        left -= c;
    }
    out
}

/// [`DecodeBackend::prefill`] one [`DecodeBackend::step`] at a time.
///
/// Errors: [`EngineError::EmptyPrompt`] when `tokens` is empty; the backend's step errors.
pub fn prefill_by_token<B: DecodeBackend + ?Sized>(
    backend: &mut B,
    tokens: &[u32],
    start: usize,
    want_logits: bool,
) -> Result<StepOutput, EngineError> {
    let (&last, init) = tokens.split_last().ok_or(EngineError::EmptyPrompt)?;
    for (i, &tok) in init.iter().enumerate() {
        backend.step(tok, start + i, false)?;
    }
    backend.step(last, start + init.len(), want_logits)
}

/// [`DecodeBackend::prefill_logits`] one [`DecodeBackend::step`] at a time.
///
/// Errors: [`EngineError::EmptyPrompt`] when `tokens` is empty; the backend's step errors, or a
/// step that returns no logits.
pub fn logits_by_token<B: DecodeBackend + ?Sized>(
    backend: &mut B,
    tokens: &[u32],
    start: usize,
) -> Result<Vec<Vec<f32>>, EngineError> {
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    tokens
        .iter()
        .enumerate()
        .map(|(i, &tok)| {
            let out = backend.step(tok, start + i, true)?;
            out.logits.ok_or_else(|| EngineError::Backend {
                backend: backend.name(),
                msg: format!("the step at position {} returned no logits", start + i),
            })
        })
        .collect()
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
    /// Temperature, top-k, top-p and seed (greedy when the temperature is 0).
    pub sampling: SamplingParams,
    /// Tokens that end generation (EOS, `<|im_end|>`); the stop token is not emitted.
    pub stop_tokens: Vec<u32>,
    /// Texts that end generation when they appear in the decoded output ([`Session::generate`]
    /// only; [`generate`] decodes no text). The matched text and anything after it is not
    /// emitted; empty strings are ignored.
    pub stop_strings: Vec<String>,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled or a stop string appeared in the text.
    Stop,
    /// `max_tokens` tokens were generated.
    #[default]
    Length,
    /// The per-token callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// `stop`, `length` or `cancelled` (OpenAI's `finish_reason` spelling for the first two).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the prompt, reused ones included.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV-cache rows were reused from the previous generation (not prefilled).
    pub cached_tokens: usize,
    /// Tokens generated (and handed to the callback); a stop token is not counted.
    pub generated_tokens: usize,
    /// Wall time of the prompt steps (only the tokens not reused).
    pub prefill: Duration,
    /// Wall time from the start of the generation to the first generated token being known
    /// (prefill plus one sampling).
    pub ttft: Duration,
    /// Decode steps run after prefill (the first generated token comes from the last prompt step).
    pub decode_steps: usize,
    /// Wall time of the decode steps.
    pub decode: Duration,
    /// Why generation ended.
    pub stop_reason: StopReason,
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

    /// Whether generation ended on a stop token or stop string (rather than `max_tokens` or a
    /// cancel).
    pub fn stopped(&self) -> bool {
        self.stop_reason == StopReason::Stop
    }
}

/// Turns generated token ids into text as they arrive. [`StreamDecoder`] is the real one; it
/// never splits a UTF-8 character across pieces.
pub trait TextStream {
    /// Adds one token; returns the text it completes, if any.
    ///
    /// Errors: [`EngineError::Output`] when decoding fails.
    fn push(&mut self, token: u32) -> Result<Option<String>, EngineError>;
    /// The text of tokens not yet returned by [`TextStream::push`], if any.
    ///
    /// Errors: [`EngineError::Output`] when decoding fails.
    fn finish(&mut self) -> Result<Option<String>, EngineError>;
}

impl TextStream for StreamDecoder {
    fn push(&mut self, token: u32) -> Result<Option<String>, EngineError> {
        self.step(token)
            .map_err(|e| EngineError::Output(e.to_string()))
    }

    fn finish(&mut self) -> Result<Option<String>, EngineError> {
        StreamDecoder::finish(self).map_err(|e| EngineError::Output(e.to_string()))
    }
}

/// A [`TextStream`] that decodes nothing (token ids only).
struct NoText;

impl TextStream for NoText {
    fn push(&mut self, _: u32) -> Result<Option<String>, EngineError> {
        Ok(None)
    }
    fn finish(&mut self) -> Result<Option<String>, EngineError> {
        Ok(None)
    }
}

/// One generated token as the per-token callback of [`Session::generate`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// The token id.
    pub id: u32,
    /// Text that may be shown now: it never ends inside a UTF-8 character and never holds (part
    /// of) a stop string. Often empty: a character still incomplete, or text held back because it
    /// may be the start of a stop string.
    pub text: &'a str,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generation {
    /// Counts, timings and the stop reason.
    pub stats: GenerationStats,
    /// Text not handed to the callback when generation ended (the decoder's last piece, text held
    /// back for a stop string that did not come); show it after the streamed text.
    pub tail: String,
}

/// A backend together with the tokens its KV cache holds, for generations that reuse the cache of
/// the previous one (chat turns, server requests).
pub struct Session<'m> {
    backend: Box<dyn DecodeBackend + 'm>,
    /// Tokens whose KV-cache rows are valid, at positions `0..cached.len()`.
    cached: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session with an empty cache on `backend` (whatever its cache holds is not trusted).
    pub fn new(backend: Box<dyn DecodeBackend + 'm>) -> Self {
        Session {
            backend,
            cached: Vec::new(),
        }
    }

    /// The backend (for its name and context size).
    pub fn backend(&self) -> &dyn DecodeBackend {
        self.backend.as_ref()
    }

    /// Tokens whose KV-cache rows are valid, at positions `0..len`.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the cached tokens and resets the backend's KV cache.
    ///
    /// Errors: the backend's.
    pub fn reset(&mut self) -> Result<(), EngineError> {
        self.cached.clear();
        self.backend.reset()
    }

    /// Generates a continuation of `prompt`, reusing the KV-cache rows of the longest common
    /// prefix of `prompt` and [`Session::cached_tokens`] and prefilling only the rest (the last
    /// prompt token is always run again, for its logits).
    ///
    /// `text` turns tokens into text (e.g. `tokenizer.stream(true)`); `on_token` is called with
    /// each generated token and the text that may be shown now, and returns
    /// [`ControlFlow::Break`] to stop after that token ([`StopReason::Cancelled`]). A stop token
    /// ends generation without being emitted; a stop string ends it after the token whose text
    /// completes it, and neither the stop string nor what follows it is emitted.
    ///
    /// Errors, all before any work unless noted: [`EngineError::EmptyPrompt`],
    /// [`EngineError::ContextOverflow`] when `prompt.len() + max_tokens - 1` exceeds the
    /// backend's context; during the run, backend errors (the cache is then forgotten) and the
    /// errors of `text` and `on_token` (the cache stays valid).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        text: &mut dyn TextStream,
        on_token: &mut dyn FnMut(Token<'_>) -> Result<ControlFlow<()>, EngineError>,
    ) -> Result<Generation, EngineError> {
        check_context(prompt.len(), opts.max_tokens, self.backend.max_context())?;
        let result = run(
            self.backend.as_mut(),
            &mut self.cached,
            prompt,
            opts,
            text,
            on_token,
        );
        if let Err(EngineError::Backend { .. }) = &result {
            // A failed step may leave any row in doubt: start from scratch next time.
            self.cached.clear();
        }
        result
    }
}

/// Length of the longest common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs prefill and the decode loop from a fresh KV cache, calling `on_token` with each generated
/// token as soon as it is known (for streaming). Stop strings are not matched (no text is decoded).
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
    let mut cached = Vec::new();
    let generation = run(backend, &mut cached, prompt, opts, &mut NoText, &mut |t| {
        on_token(t.id).map(ControlFlow::Continue)
    })?;
    Ok(generation.stats)
}

/// The generation loop shared by [`Session::generate`] and [`generate`]; `cached` holds the
/// tokens whose rows are valid and is kept up to date step by step. The context was checked.
fn run(
    backend: &mut dyn DecodeBackend,
    cached: &mut Vec<u32>,
    prompt: &[u32],
    opts: &GenerateOptions,
    text: &mut dyn TextStream,
    on_token: &mut dyn FnMut(Token<'_>) -> Result<ControlFlow<()>, EngineError>,
) -> Result<Generation, EngineError> {
    let mut sampler = Sampler::new(opts.sampling);
    let want_logits = !opts.sampling.is_greedy();
    // Keep at least the last prompt token to run: its step gives the first token's logits.
    let reuse = common_prefix(cached, prompt).min(prompt.len().saturating_sub(1));
    cached.truncate(reuse);
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        cached_tokens: reuse,
        ..Default::default()
    };

    let start = Instant::now();
    let mut out = backend.prefill(&prompt[reuse..], reuse, want_logits)?;
    cached.extend_from_slice(&prompt[reuse..]);
    stats.prefill = start.elapsed();

    let mut stops = StopMatcher::new(&opts.stop_strings);
    let decode_start = Instant::now();
    let mut matched = false;
    for i in 0..opts.max_tokens {
        let next = match &out.logits {
            Some(logits) => sampler.sample(logits),
            None => out.next_token,
        };
        if i == 0 {
            stats.ttft = start.elapsed();
        }
        if opts.stop_tokens.contains(&next) {
            stats.stop_reason = StopReason::Stop;
            break;
        }
        let piece = text.push(next)?.unwrap_or_default();
        let (visible, hit) = stops.push(&piece);
        stats.generated_tokens += 1;
        let flow = on_token(Token {
            id: next,
            text: &visible,
        })?;
        if hit {
            matched = true;
            stats.stop_reason = StopReason::Stop;
            break;
        }
        if flow.is_break() {
            stats.stop_reason = StopReason::Cancelled;
            break;
        }
        if i + 1 == opts.max_tokens {
            break;
        }
        out = backend.step(next, cached.len(), want_logits)?;
        cached.push(next);
        stats.decode_steps += 1;
    }
    stats.decode = decode_start.elapsed();

    let mut tail = String::new();
    if !matched {
        if let Some(rest) = text.finish()? {
            let (visible, hit) = stops.push(&rest);
            tail.push_str(&visible);
            if hit {
                matched = true;
                stats.stop_reason = StopReason::Stop;
            }
        }
        if !matched {
            tail.push_str(&stops.held);
        }
    }
    Ok(Generation { stats, tail })
}

/// Holds back decoded text that may be the start of a stop string until it is known not to be.
struct StopMatcher<'a> {
    stops: Vec<&'a str>,
    /// Text received but not yet released: a suffix that is a prefix of some stop string.
    held: String,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopMatcher {
            stops: stops
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text that may be released and whether a stop string matched (then
    /// the text before the earliest match is released and the rest dropped).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.held), false);
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        // The longest suffix of `held` that is a proper prefix of a stop string stays held.
        let len = self.held.len();
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len().min(len + 1)).map(move |k| (s, k)))
            .filter(|(s, k)| {
                self.held.is_char_boundary(len - k)
                    && s.as_bytes()[..*k] == self.held.as_bytes()[len - k..]
            })
            .map(|(_, k)| k)
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(len - keep);
        (std::mem::replace(&mut self.held, rest), false)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

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
            stop_strings: vec![],
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
    fn prefill_chunks_are_powers_of_two_up_to_the_chunk() {
        assert_eq!(prefill_chunks(547, 512), vec![512, 32, 2, 1]);
        assert_eq!(prefill_chunks(2048, 512), vec![512; 4]);
        assert_eq!(prefill_chunks(128, 512), vec![128]);
        assert_eq!(prefill_chunks(7, 1000), vec![4, 2, 1]);
        assert_eq!(prefill_chunks(5, 1), vec![1; 5]);
        assert_eq!(prefill_chunks(0, 512), Vec::<usize>::new());
        for len in 1..300 {
            let c = prefill_chunks(len, 64);
            assert_eq!(c.iter().sum::<usize>(), len);
            assert!(c.iter().all(|x| x.is_power_of_two() && *x <= 64));
        }
    }

    #[test]
    fn generation_ends_at_a_stop_token_without_emitting_it() {
        // Prompt [1, 2]: step 1 predicts 3, then 4, then the stop token 9.
        let (out, stats, b) = run(&[5, 3, 4, 9, 6], &[1, 2], 10);
        assert_eq!(out, vec![3, 4]);
        assert!(stats.stopped());
        assert_eq!((stats.generated_tokens, stats.decode_steps), (2, 2));
        // reset() ran first; the prompt, then each emitted token, was fed at consecutive positions.
        assert_eq!(b.fed, vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
        // A stop token right after the prompt: nothing is emitted.
        let (out, stats, _) = run(&[5, 7], &[1, 2], 10);
        assert!(out.is_empty() && stats.stopped() && stats.generated_tokens == 0);
    }

    #[test]
    fn generation_ends_at_max_tokens_without_an_extra_step() {
        let (out, stats, b) = run(&[5, 3, 4, 6, 8], &[1, 2], 3);
        assert_eq!(out, vec![3, 4, 6]);
        assert_eq!(stats.stop_reason, StopReason::Length);
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

    /// A backend whose greedy next token is `(token * 7 + position) % 50`; logs every step in a
    /// log the test keeps (the session owns the backend).
    #[derive(Clone, Default)]
    struct Arith {
        log: Rc<RefCell<Vec<(u32, usize)>>>,
        fail_at: Rc<Cell<Option<usize>>>,
    }

    impl DecodeBackend for Arith {
        fn name(&self) -> &'static str {
            "arith"
        }
        fn max_context(&self) -> usize {
            32
        }
        fn step(
            &mut self,
            token: u32,
            position: usize,
            _: bool,
        ) -> Result<StepOutput, EngineError> {
            if self.fail_at.get() == Some(position) {
                return Err(EngineError::Backend {
                    backend: "arith",
                    msg: format!("step at position {position} failed"),
                });
            }
            self.log.borrow_mut().push((token, position));
            Ok(StepOutput {
                next_token: next_of(token, position),
                logits: None,
            })
        }
        fn reset(&mut self) -> Result<(), EngineError> {
            Ok(())
        }
    }

    fn next_of(token: u32, position: usize) -> u32 {
        (token * 7 + position as u32) % 50
    }

    /// Decodes token `t` as the letter `'a' + t % 26`, except token 40, an "é" split over two
    /// tokens: 40 gives nothing and the next token's text starts with it.
    #[derive(Default)]
    struct Letters {
        pending: bool,
    }

    impl TextStream for Letters {
        fn push(&mut self, token: u32) -> Result<Option<String>, EngineError> {
            if token == 40 {
                self.pending = true;
                return Ok(None);
            }
            let mut s = String::new();
            if std::mem::take(&mut self.pending) {
                s.push('é');
            }
            s.push(letter(token));
            Ok(Some(s))
        }
        fn finish(&mut self) -> Result<Option<String>, EngineError> {
            Ok(std::mem::take(&mut self.pending).then(|| "\u{FFFD}".to_string()))
        }
    }

    fn letter(token: u32) -> char {
        (b'a' + (token % 26) as u8) as char
    }

    fn opts(max_tokens: usize, stops: &[&str]) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_tokens: vec![],
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The tokens `Arith` generates after `prompt` (fed from position 0), `n` of them.
    fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut next = next_of(*prompt.last().unwrap(), prompt.len() - 1);
        for i in 0..n {
            out.push(next);
            next = next_of(next, prompt.len() + i);
        }
        out
    }

    /// Runs a session generation; returns the ids, the visible text (streamed pieces + tail) and
    /// the result. `cancel_after` stops after that many tokens.
    fn session_run(
        s: &mut Session<'_>,
        prompt: &[u32],
        o: &GenerateOptions,
        cancel_after: Option<usize>,
    ) -> (Vec<u32>, String, Generation) {
        let mut ids = Vec::new();
        let mut text = String::new();
        let g = s
            .generate(prompt, o, &mut Letters::default(), &mut |t| {
                ids.push(t.id);
                text.push_str(t.text);
                Ok(if cancel_after == Some(ids.len()) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .expect("session generation runs");
        text.push_str(&g.tail);
        (ids, text, g)
    }

    fn session() -> (Session<'static>, Arith) {
        let b = Arith::default();
        (Session::new(Box::new(b.clone())), b)
    }

    #[test]
    fn prefill_default_steps_each_token_at_consecutive_positions() {
        let mut b = Arith::default();
        let out = b.prefill(&[3, 4, 5], 6, false).unwrap();
        assert_eq!(*b.log.borrow(), vec![(3, 6), (4, 7), (5, 8)]);
        assert_eq!(out.next_token, next_of(5, 8));
        assert!(matches!(
            b.prefill(&[], 0, false),
            Err(EngineError::EmptyPrompt)
        ));
    }

    #[test]
    fn a_follow_up_prompt_prefills_only_its_new_tokens() {
        let (mut s, b) = session();
        let (ids, _, g) = session_run(&mut s, &[1, 2, 3], &opts(3, &[]), None);
        assert_eq!(ids, expected(&[1, 2, 3], 3));
        assert_eq!(g.stats.cached_tokens, 0);
        // The cache holds the prompt and every generated token but the last (never fed back).
        assert_eq!(s.cached_tokens(), &[1, 2, 3, ids[0], ids[1]]);

        // Turn two: the whole first turn, then two new tokens.
        let mut prompt2 = vec![1, 2, 3];
        prompt2.extend(&ids);
        prompt2.extend([8, 9]);
        b.log.borrow_mut().clear();
        let (ids2, _, g2) = session_run(&mut s, &prompt2, &opts(2, &[]), None);
        assert_eq!(g2.stats.cached_tokens, 5);
        assert_eq!(g2.stats.prompt_tokens, 8);
        // Prefill starts at position 5 (the last generated token was never in the cache).
        assert_eq!(b.log.borrow()[..3], [(ids[2], 5), (8, 6), (9, 7)]);
        // Same tokens as a fresh run of the whole prompt.
        assert_eq!(ids2, expected(&prompt2, 2));
    }

    #[test]
    fn the_same_prompt_again_reruns_only_its_last_token() {
        let (mut s, b) = session();
        let (first, _, _) = session_run(&mut s, &[4, 5, 6, 7], &opts(2, &[]), None);
        b.log.borrow_mut().clear();
        let (again, _, g) = session_run(&mut s, &[4, 5, 6, 7], &opts(2, &[]), None);
        assert_eq!(again, first);
        assert_eq!(g.stats.cached_tokens, 3);
        assert_eq!(b.log.borrow()[0], (7, 3));
    }

    #[test]
    fn a_diverging_prompt_reuses_only_the_common_prefix() {
        let (mut s, b) = session();
        session_run(&mut s, &[1, 2, 3, 4, 5], &opts(1, &[]), None);
        b.log.borrow_mut().clear();
        let (ids, _, g) = session_run(&mut s, &[1, 2, 9, 9], &opts(2, &[]), None);
        assert_eq!(g.stats.cached_tokens, 2);
        assert_eq!(b.log.borrow()[..2], [(9, 2), (9, 3)]);
        assert_eq!(ids, expected(&[1, 2, 9, 9], 2));
        // A shorter prompt inside the cache.
        let (_, _, g) = session_run(&mut s, &[1, 2], &opts(1, &[]), None);
        assert_eq!(g.stats.cached_tokens, 1);
    }

    #[test]
    fn the_callback_cancels_at_the_next_token_and_the_session_goes_on() {
        let (mut s, b) = session();
        let (ids, _, g) = session_run(&mut s, &[1, 2], &opts(10, &[]), Some(2));
        assert_eq!(ids.len(), 2);
        assert_eq!(g.stats.stop_reason, StopReason::Cancelled);
        assert_eq!(g.stats.generated_tokens, 2);
        // Two prompt steps and one decode step: no step after the cancelling token.
        assert_eq!(b.log.borrow().len(), 3);
        assert_eq!(s.cached_tokens(), &[1, 2, ids[0]]);
        let (ids2, _, g2) = session_run(&mut s, &[1, 2, ids[0], ids[1]], &opts(2, &[]), None);
        assert_eq!(g2.stats.cached_tokens, 3);
        assert_eq!(g2.stats.stop_reason, StopReason::Length);
        assert_eq!(ids2, expected(&[1, 2, ids[0], ids[1]], 2));
    }

    #[test]
    fn stop_strings_end_generation_and_are_not_emitted() {
        let (mut s, _) = session();
        let all = expected(&[1, 2], 8);
        let text: String = all.iter().map(|&t| letter(t)).collect();
        assert!(!all.contains(&40), "pick a prompt without the split token");
        // A stop string spanning tokens 3 and 4 (0-based 2..4).
        let stop = &text[2..4];
        let (ids, out, g) = session_run(&mut s, &[1, 2], &opts(8, &[stop]), None);
        assert_eq!(g.stats.stop_reason, StopReason::Stop);
        let end = text.find(stop).unwrap() + stop.len();
        assert_eq!(
            ids.len(),
            end,
            "generation ends at the token completing the stop string"
        );
        assert_eq!(out, text[..text.find(stop).unwrap()]);
        // Text held back as a possible stop string is released when the match fails.
        let not_quite = format!("{}#", &text[..2]);
        let (_, out, g) = session_run(&mut s, &[1, 2], &opts(8, &[&not_quite]), None);
        assert_eq!(out, text);
        assert_eq!(g.stats.stop_reason, StopReason::Length);
    }

    #[test]
    fn stop_matcher_holds_only_possible_stop_prefixes_and_never_splits_a_character() {
        let stops = vec!["éx".to_string(), "END".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("abE"), ("ab".to_string(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("d é"), ("ENd ".to_string(), false));
        assert_eq!(m.push("y"), ("éy".to_string(), false));
        assert_eq!(m.push("zéx and more"), ("z".to_string(), true));
        // Without stop strings everything is released at once.
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("é"), ("é".to_string(), false));
    }

    #[test]
    fn a_split_character_reaches_the_callback_whole() {
        // A two-token prompt after which the split token 40 comes second or third of four.
        let prompt = (0..50u32)
            .flat_map(|a| (0..50u32).map(move |b| vec![a, b]))
            .find(|p| expected(p, 4)[1..3].contains(&40))
            .expect("some two-token prompt produces the split token");
        let (mut s, _) = session();
        let mut pieces = Vec::new();
        s.generate(&prompt, &opts(4, &[]), &mut Letters::default(), &mut |t| {
            pieces.push(t.text.to_string());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert!(pieces.contains(&String::new()), "{pieces:?}");
        assert!(pieces.iter().any(|p| p.starts_with('é')), "{pieces:?}");
    }

    #[test]
    fn a_backend_error_forgets_the_cache() {
        let (mut s, b) = session();
        session_run(&mut s, &[1, 2, 3], &opts(3, &[]), None);
        assert_eq!(s.cached_tokens().len(), 5);
        b.fail_at.set(Some(6));
        let err = s
            .generate(
                &[1, 2, 3, 4, 5, 6, 7],
                &opts(2, &[]),
                &mut Letters::default(),
                &mut |_| Ok(ControlFlow::Continue(())),
            )
            .unwrap_err();
        assert!(err.to_string().contains("position 6"), "{err}");
        assert!(s.cached_tokens().is_empty());
        b.fail_at.set(None);
        let (_, _, g) = session_run(&mut s, &[1, 2, 3], &opts(1, &[]), None);
        assert_eq!(g.stats.cached_tokens, 0);
    }

    #[test]
    fn session_refuses_an_overlong_request_before_any_step() {
        let (mut s, b) = session();
        let prompt: Vec<u32> = (0..30).collect();
        let err = s
            .generate(&prompt, &opts(4, &[]), &mut Letters::default(), &mut |_| {
                Ok(ControlFlow::Continue(()))
            })
            .unwrap_err();
        assert!(matches!(err, EngineError::ContextOverflow { .. }), "{err}");
        assert!(b.log.borrow().is_empty());
    }
}

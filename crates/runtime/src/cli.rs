//! Command-line interface of the `braid` runner (clap).
//!
//! Numbers are parsed by the `parse_*` functions below rather than by clap's defaults, so an
//! out-of-range value (`--temperature -1`, `--top-k -3`, `--seed -1`) is refused with a message that
//! says what the option accepts, instead of clap taking `-1` for an unknown flag.

use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::model::Qwen3Config;
pub use crate::ui::ProgressMode;

pub use crate::pipeline::{
    ContextRequest, DEFAULT_MAX_CONTEXT, MAX_CONTEXT_LIMIT, MAX_TENSOR_ELEMENTS,
};

/// braid: a graph-capture runtime for batch-1 LLM decoding (Qwen3, Qwen2, Llama).
///
/// The decode step of the model is lowered to an op-graph IR, fused by egg rewrite passes, and run by
/// the reference interpreter (CPU) or the CUDA backend, which records the step into a CUDA graph and
/// replays it once per token. With no --model, the built-in tiny Qwen3-architecture model is used
/// (random weights, real Qwen3 tokenizer): its text is meaningless, but every stage runs anywhere.
///
/// Results go to stdout, diagnostics to stderr. A closed stdout (`braid graph | head -1`) ends braid
/// quietly with exit status 0; any error exits with status 1 and one `error:` line on stderr.
#[derive(Debug, Parser)]
#[command(name = "braid", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `braid_passes=debug`; logs go to
    /// stderr. egg's own logs stay off unless the filter names the `egg` target.
    #[arg(long, global = true, default_value = "warn", value_name = "FILTER")]
    pub log: String,
    /// Progress bars, spinners and the model summary on stderr: `auto` shows them when stderr is a
    /// terminal.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, value_name = "WHEN")]
    pub progress: ProgressMode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streamed to stdout as it is decoded.
    Generate(GenerateArgs),
    /// Print the decode-step IR of a model (text or DOT), or per-op counts with --stats.
    Graph(GraphArgs),
    /// Parse IR text from a file (or - for stdin), verify it, run passes, print the result.
    Opt(OptArgs),
    /// Measure decode speed: tok/s, µs/token, launches/token and the fraction of the memory roofline.
    Bench(BenchArgs),
    /// Per-op time breakdown of one decode step on the GPU, or with --prefill T of a prefill step
    /// (CUDA events around each launch); needs an NVIDIA GPU.
    Profile(ProfileArgs),
    /// Compare braid's logits with a transformers reference (made by scripts/make_checkpoint.py).
    Check(CheckArgs),
    /// Print the CUDA backend's plan for the decode step (one line per kernel launch: kernel, grid,
    /// block, shared memory, bytes, backend fusions), for a recorded device or the live GPU.
    Plan(PlanArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat completions, completions, SSE).
    Serve(ServeArgs),
    /// Talk to the model: a multi-turn chat on stdin/stdout that reuses the KV cache of earlier
    /// turns.
    Chat(ChatArgs),
    /// The GEMV-chain benchmark (needs a GPU): the model's matmuls of one step, chained, in the
    /// per-op CUDA graph and in the persistent kernel, next to a read pass of the same bytes.
    BenchChain(ChainArgs),
}

/// Where the decode step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU (said on stderr).
    Auto,
    /// The reference interpreter on the CPU.
    Cpu,
    /// The CUDA backend (fails with a clear error when no GPU is usable).
    Cuda,
}

impl From<DeviceArg> for crate::pipeline::Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => crate::pipeline::Device::Auto,
            DeviceArg::Cpu => crate::pipeline::Device::Cpu,
            DeviceArg::Cuda => crate::pipeline::Device::Cuda,
        }
    }
}

/// How the decode step is built: passes and KV-cache size (shared by every command that builds one).
#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// Fusion passes: `none`, `default`, or a comma-separated list of pass names.
    #[arg(long, default_value = "default", value_parser = parse_passes)]
    pub passes: String,
    /// KV-cache rows (tokens): the longest prompt + generation a run may use. Default: 1024, or the
    /// model's max_position_embeddings when smaller. More than max_position_embeddings is refused
    /// unless --allow-long-context is given.
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_context: Option<usize>,
    /// Allow --max-context beyond the model's max_position_embeddings (positions it was never
    /// trained on; RoPE still computes them).
    #[arg(long)]
    pub allow_long_context: bool,
}

impl BuildArgs {
    /// The KV-cache rows to use: `--max-context`, or `default` (capped at the model's
    /// max_position_embeddings when not given).
    ///
    /// Errors: `--max-context` beyond max_position_embeddings without `--allow-long-context`, or
    /// beyond [`MAX_CONTEXT_LIMIT`].
    pub fn max_context_or(&self, config: &Qwen3Config, default: usize) -> Result<usize> {
        crate::pipeline::resolve_max_context(config, self.context(), default)
    }

    /// `--max-context` and `--allow-long-context` as the library takes them.
    pub fn context(&self) -> ContextRequest {
        ContextRequest {
            rows: self.max_context,
            allow_long: self.allow_long_context,
        }
    }

    /// [`BuildArgs::max_context_or`] with the default [`DEFAULT_MAX_CONTEXT`].
    pub fn max_context(&self, config: &Qwen3Config) -> Result<usize> {
        self.max_context_or(config, DEFAULT_MAX_CONTEXT)
    }
}

/// Model selection shared by the subcommands.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face checkpoint directory of a Qwen3, Qwen2 or Llama model (config.json,
    /// *.safetensors, tokenizer.json), or `tiny` for the built-in tiny model.
    #[arg(long, default_value = "tiny", value_name = "DIR|tiny")]
    pub model: String,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("prompt_source").args(["prompt", "prompt_file", "prompt_text"])))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prefill: PrefillArgs,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// The prompt (the same as --prompt).
    #[arg(value_name = "PROMPT")]
    pub prompt_text: Option<String>,
    /// The prompt text; `-` reads it from standard input. Default: "Hello". (A prompt that starts
    /// with `-`: `--prompt=-text`, or after `--`.)
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,
    /// Format the prompt with the model's chat template (a single user turn).
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long, requires = "chat", value_name = "TEXT")]
    pub system: Option<String>,
    /// With --chat: ask the template to skip the thinking block (Qwen3's `enable_thinking=false`).
    #[arg(long, requires = "chat")]
    pub no_think: bool,
    /// Most tokens to generate (at least 1).
    #[arg(long, default_value_t = 64, value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Softmax temperature, a finite number >= 0; 0 means greedy.
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample from the k most likely tokens only; 0 disables.
    #[arg(long, default_value_t = 0, value_parser = parse_count, allow_negative_numbers = true)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with probability >= p, p in (0, 1]; 1 disables.
    #[arg(long, default_value_t = 1.0, value_parser = parse_top_p, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Sampler seed (an integer in 0..=2^64-1), for reproducible sampling.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Print prefill/decode timings to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Print one JSON object at the end (text, token ids, timings, stop reason) instead of
    /// streaming the text.
    #[arg(long)]
    pub json: bool,
    /// Run the CUDA step without graph capture (eager launches), for comparison.
    #[arg(long)]
    pub no_graph: bool,
}

/// Output format of IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The braid IR text form (round-trips through `braid opt`).
    Text,
    /// Graphviz DOT.
    Dot,
}

/// How `graph` and `opt` print their result.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format of the graph.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print one line `<op> <count>` per op kind, sorted, then `nodes <total>` and
    /// `launches <kernel-launching nodes>`, instead of the graph (not with --format).
    #[arg(long, conflicts_with = "format")]
    pub stats: bool,
    /// Print the graph after the named pass, to stderr, as the pipeline runs (repeatable).
    #[arg(long, value_name = "PASS")]
    pub print_after: Vec<String>,
}

/// Which step of the model to lower (`graph`, `plan`).
#[derive(Debug, Args, Clone, Copy)]
pub struct StepArgs {
    /// Lower the prefill step over T prompt tokens (activations [T, hidden], causal attention that
    /// appends T cache rows) instead of the decode step.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..65537))]
    pub prefill: Option<u64>,
    /// With --prefill: logits for every token ([T, vocab], as `braid check` uses) instead of the
    /// last token's only.
    #[arg(long, requires = "prefill")]
    pub all_logits: bool,
}

impl StepArgs {
    /// The lowering options of this step for `max_context` rows of a `kv_dtype` cache.
    pub fn options(
        &self,
        max_context: usize,
        kv_dtype: braid_ir::DType,
    ) -> crate::decoder::LowerOptions {
        let tokens = self.prefill.map_or(1, |t| t as usize);
        crate::decoder::LowerOptions::decode(max_context, kv_dtype)
            .with_tokens(tokens, self.all_logits)
    }
}

/// How the prompt is fed before decoding (`generate`, `bench`, `check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrefillArg {
    /// Batched prefill: the prompt in chunks of T tokens through the prefill step (the default;
    /// on the CPU the interpreter runs the T-token graph).
    Batched,
    /// Token by token through the decode step (the ablation, and a fallback).
    Token,
}

/// How `generate`, `bench` and `check` prefill the prompt.
#[derive(Debug, Args, Clone, Copy)]
pub struct PrefillArgs {
    /// How the prompt is fed before decoding: `batched` (prefill steps over chunks of tokens) or
    /// `token` (one decode step per token).
    #[arg(long, value_enum, default_value_t = PrefillArg::Batched)]
    pub prefill: PrefillArg,
    /// Most tokens of one batched prefill chunk (rounded down to a power of two): bounds the
    /// activation memory of a chunk.
    #[arg(long, default_value_t = crate::engine::PrefillMode::DEFAULT_CHUNK,
          value_parser = parse_chunk)]
    pub prefill_chunk: usize,
}

fn parse_chunk(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1 << 16).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: expected an integer in 1..=65536")),
    }
}

impl PrefillArgs {
    /// The engine's prefill mode.
    pub fn mode(&self) -> crate::engine::PrefillMode {
        match self.prefill {
            PrefillArg::Batched => crate::engine::PrefillMode::Batched {
                chunk: self.prefill_chunk,
            },
            PrefillArg::Token => crate::engine::PrefillMode::Token,
        }
    }
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub step: StepArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct OptArgs {
    /// IR text file, or - for standard input.
    pub file: PathBuf,
    /// Passes to run: `none`, `default`, or a comma-separated list.
    #[arg(long, default_value = "default", value_parser = parse_passes)]
    pub passes: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How `bench` prints its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    /// A Markdown table, one row per (prompt length, generated tokens) pair.
    Md,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of row objects (every measured field).
    Json,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prefill: PrefillArgs,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Prompt tokens fed before timing (random ids, fixed seed); a comma-separated list sweeps,
    /// e.g. `128,512,2048`.
    #[arg(long, default_value = "128", value_delimiter = ',', value_parser = parse_list, allow_negative_numbers = true, value_name = "N[,N...]")]
    pub prompt_len: Vec<usize>,
    /// Generated tokens timed; a comma-separated list sweeps (every pair with --prompt-len is a row).
    #[arg(long, default_value = "256", value_delimiter = ',', value_parser = parse_list, allow_negative_numbers = true, value_name = "N[,N...]")]
    pub gen: Vec<usize>,
    /// Prompt lengths of the prefill section (time to first token, prefill tok/s, fractions of
    /// the compute and memory floors; GPU only), comma-separated; `0` skips the section.
    #[arg(long, value_delimiter = ',', default_value = "128,512,2048,8192", value_parser = parse_count)]
    pub prefill_lens: Vec<usize>,
    /// Runs per row; the table shows mean ± standard deviation.
    #[arg(long, default_value_t = 1, value_parser = parse_positive, allow_negative_numbers = true)]
    pub repeat: usize,
    /// Launch kernels one by one instead of replaying a captured CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Md)]
    pub format: BenchFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

impl BenchArgs {
    /// The output format, `--json` included.
    pub fn output_format(&self) -> BenchFormat {
        if self.json {
            BenchFormat::Json
        } else {
            self.format
        }
    }

    /// The prompt lengths of the sweep, flattened (each `--prompt-len` may hold a list).
    pub fn prompt_lens(&self) -> Vec<usize> {
        flatten_unique(&self.prompt_len)
    }

    /// The generated-token counts of the sweep.
    pub fn gens(&self) -> Vec<usize> {
        flatten_unique(&self.gen)
    }
}

fn flatten_unique(v: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode steps timed, at positions 0..steps (so the attention length grows to `steps`).
    #[arg(long, default_value_t = 128, value_parser = parse_positive, allow_negative_numbers = true)]
    pub steps: usize,
    /// Profile the prefill step over T random prompt tokens (from an empty cache, `--steps`
    /// repetitions) instead of decode steps.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(2..65537))]
    pub prefill: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The checkpoint directory to check (it holds reference.safetensors unless --reference says
    /// otherwise); `tiny` works with --reference.
    #[arg(long, value_name = "DIR|tiny")]
    pub model: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub prefill: PrefillArgs,
    /// reference.safetensors written by scripts/make_checkpoint.py (default: <model>/reference.safetensors).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Check at most this many positions (default: all in the reference).
    #[arg(long, value_parser = parse_count, allow_negative_numbers = true)]
    pub positions: Option<usize>,
    /// Print every position, not only the summary.
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object (both summaries, the bar, pass or fail; every position with
    /// --verbose) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run the CUDA step without graph capture.
    #[arg(long)]
    pub no_graph: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub step: StepArgs,
    /// The device to plan for: `h200` (recorded facts and kernel resources: no GPU needed) or
    /// `live` (the GPU of this machine).
    #[arg(long, default_value = "h200")]
    pub device_facts: String,
    /// Also print every launch's parameters (`name=value`, pointers as `region+offset`).
    #[arg(long)]
    pub verbose: bool,
}

/// `braid serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Address to listen on; the default answers only this machine (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait while one runs; more get 429 at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, default_value_t = crate::serve::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// The model name clients send in `model` (default: `tiny`, or the checkpoint directory's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Run the CUDA step without graph capture (eager launches).
    #[arg(long)]
    pub no_graph: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// A system message that starts the conversation (kept by /reset).
    #[arg(long)]
    pub system: Option<String>,
    /// Ask the template to skip the thinking block (Qwen3's `enable_thinking=false`).
    #[arg(long)]
    pub no_think: bool,
    /// Most tokens of one answer (fewer when the context is nearly full).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample from the k most likely tokens only; 0 disables.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with probability >= p; 1 disables.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampler seed, for reproducible sampling (each turn uses seed + turn number).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// After each answer, print its token counts (prompt, cached, generated) and speed to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Run the CUDA step without graph capture (eager launches).
    #[arg(long)]
    pub no_graph: bool,
}

/// `braid bench-chain`.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// A checkpoint directory (only its config.json is read) or `tiny`.
    #[arg(long, default_value = "tiny", value_name = "DIR|tiny")]
    pub model: String,
    /// Layers of the chain (default: all of the model's).
    #[arg(long, value_parser = parse_positive)]
    pub layers: Option<usize>,
    /// Steps timed per mode (after 10 untimed).
    #[arg(long, default_value_t = 200, value_parser = parse_positive)]
    pub steps: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A whole number >= 0 (`--top-k`, `--positions`).
pub fn parse_count(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("must be a whole number >= 0, got {s}"));
    }
    t.parse::<usize>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => {
            format!("{s} is too large (at most {})", usize::MAX)
        }
        _ => format!("expected a whole number >= 0, got {s:?}"),
    })
}

/// A whole number >= 1 (`--max-tokens`, `--max-context`, `--repeat`, `--steps`).
pub fn parse_positive(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if t.starts_with('-') || t.parse::<usize>() == Ok(0) {
        return Err(format!("must be a whole number >= 1, got {s}"));
    }
    parse_count(s).map_err(|e| e.replace(">= 0", ">= 1"))
}

/// A comma-separated list of whole numbers >= 1 (`bench --prompt-len 128,512`).
pub fn parse_list(s: &str) -> Result<usize, String> {
    // clap splits on commas (value_delimiter) before calling this for each item.
    parse_positive(s)
}

/// `--temperature`: a finite number >= 0.
pub fn parse_temperature(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number >= 0, got {s:?}"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("must be a finite number >= 0, got {s}"));
    }
    Ok(v)
}

/// `--top-p`: a number in (0, 1].
pub fn parse_top_p(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number in (0, 1], got {s:?}"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("must be in (0, 1], got {s}"));
    }
    Ok(v)
}

/// `--seed`: an integer in 0..=2^64-1.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "must be an integer in 0..={} (seeds are unsigned), got {s}",
            u64::MAX
        ));
    }
    t.parse::<u64>()
        .map_err(|_| format!("expected an integer in 0..={}, got {s:?}", u64::MAX))
}

/// The most passes one `--passes` list may name.
pub const MAX_PASSES: usize = 64;

/// `--passes`: a spec [`braid_passes::PassManager::from_spec`] accepts, of at most [`MAX_PASSES`]
/// passes (a list of thousands of `fuse` would run for hours).
pub fn parse_passes(s: &str) -> Result<String, String> {
    let pm = braid_passes::PassManager::from_spec(s).map_err(|e| e.to_string())?;
    let n = pm.names().len();
    if n > MAX_PASSES {
        return Err(format!("{n} passes; at most {MAX_PASSES} in one list"));
    }
    Ok(s.to_string())
}

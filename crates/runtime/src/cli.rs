//! Command-line interface of the `braid` runner (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// braid: a graph-capture runtime for batch-1 LLM decoding (Qwen3).
///
/// The decode step of the model is lowered to an op-graph IR, fused by egg rewrite passes, and run by
/// the reference interpreter (CPU) or the CUDA backend, which records the step into a CUDA graph and
/// replays it once per token. With no --model, the built-in tiny Qwen3-architecture model is used
/// (random weights, real Qwen3 tokenizer): its text is meaningless, but every stage runs anywhere.
#[derive(Debug, Parser)]
#[command(name = "braid", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `braid_passes=debug`; logs go to stderr.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
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
    /// Per-op time breakdown of one decode step, or with --prefill T of a prefill step (CUDA
    /// events around each launch).
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
}

/// Where the decode step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU.
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

/// Model selection shared by the subcommands.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face Qwen3 checkpoint directory (config.json, *.safetensors, tokenizer.json), or
    /// `tiny` for the built-in tiny model.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Fusion passes: `none`, `default`, or a comma-separated list of pass names.
    #[arg(long, default_value = "default")]
    pub passes: String,
    /// KV-cache rows (tokens): the longest prompt + generation a run may use.
    #[arg(long, default_value_t = 1024)]
    pub max_context: usize,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prefill: PrefillArgs,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// The prompt text.
    #[arg(long, default_value = "Hello")]
    pub prompt: String,
    /// Format the prompt with the model's chat template (a single user turn).
    #[arg(long)]
    pub chat: bool,
    /// With --chat: ask the template to skip the thinking block (Qwen3's `enable_thinking=false`).
    #[arg(long, requires = "chat")]
    pub no_think: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
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
    /// Sampler seed, for reproducible sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print prefill/decode timings to stderr at the end.
    #[arg(long)]
    pub stats: bool,
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
    /// `launches <kernel-launching nodes>`, instead of the graph.
    #[arg(long)]
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
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(1..))]
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
    ) -> crate::qwen3::LowerOptions {
        let tokens = self.prefill.map_or(1, |t| t as usize);
        crate::qwen3::LowerOptions::decode(max_context, kv_dtype)
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
    #[arg(long, default_value = "default")]
    pub passes: String,
    #[command(flatten)]
    pub output: OutputArgs,
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
    /// Prompt tokens fed before timing (random ids, fixed seed).
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Generated tokens timed.
    #[arg(long, default_value_t = 256)]
    pub gen: usize,
    /// Prompt lengths of the prefill section (time to first token, prefill tok/s, fractions of
    /// the compute and memory floors), comma-separated; `0` skips the section.
    #[arg(long, value_delimiter = ',', default_value = "128,512,2048,8192")]
    pub prefill_lens: Vec<usize>,
    /// Launch kernels one by one instead of replaying a captured CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode steps timed, at positions 0..steps (so the attention length grows to `steps`).
    #[arg(long, default_value_t = 128)]
    pub steps: usize,
    /// Profile the prefill step over T random prompt tokens (from an empty cache, `--steps`
    /// repetitions) instead of decode steps.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u64).range(2..))]
    pub prefill: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prefill: PrefillArgs,
    /// reference.safetensors written by scripts/make_checkpoint.py (default: <model>/reference.safetensors).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Where to run the decode step.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Check at most this many positions (default: all in the reference).
    #[arg(long)]
    pub positions: Option<usize>,
    /// Print every position, not only the summary.
    #[arg(long)]
    pub verbose: bool,
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

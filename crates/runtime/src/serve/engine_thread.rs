//! The engine thread: one `std::thread` owns the model, its backend and the [`Session`] (so the
//! KV cache of the previous request is kept for prefix reuse), and runs requests one at a time
//! from a bounded queue.
//!
//! ```text
//! handler ──submit(Job)──► bounded queue ──► engine thread: Session::generate
//!    ▲                     (full: 429)               │ Event::Text / Done / Failed
//!    └─────────── tokio mpsc (one per request) ◄─────┘
//! ```
//!
//! A request whose receiver is gone (the client disconnected, the SSE stream was dropped) is
//! stopped at its next token; one still waiting is dropped from the queue, so it neither runs nor
//! holds a place that a live request could have.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use braid_backend_cuda::ExecOptions;
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::metrics::{FinishLabels, Metrics};
use crate::engine::{GenerateOptions, GenerationStats, Session};
use crate::load::LoadedModel;
use crate::model::{ChatTemplate, Tokenizer};
use crate::pipeline::{
    open_backend, resolve_max_context, BackendRequest, ContextRequest, Device, DEFAULT_MAX_CONTEXT,
};

/// What the engine thread loads and how.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `tiny` or a checkpoint directory.
    /// `--model`.
    pub model: String,
    /// The name clients use in `model` (default: `tiny`, or the directory's last component).
    pub served_name: Option<String>,
    /// Where the decode step runs.
    pub device: Device,
    /// Pass pipeline spec.
    pub passes: String,
    /// KV-cache rows (tokens) asked for; resolved against the model's config once it is loaded.
    pub max_context: ContextRequest,
    /// Requests that may wait for the engine (the running one not counted); at least 1.
    pub max_queue: usize,
    /// CUDA executor options.
    pub exec: ExecOptions,
}

/// What the handlers need of the loaded model: the tokenizer and template run on their side, so
/// a bad request is refused before it waits in the queue.
#[derive(Debug)]
pub struct ModelInfo {
    /// The name clients use in `model`.
    pub id: String,
    /// The model's tokenizer (shared with the engine thread).
    pub tokenizer: Tokenizer,
    /// The chat template, when the model has one (`/v1/chat/completions` needs it).
    pub chat: Option<ChatTemplate>,
    /// KV-cache rows: prompt + completion tokens must fit.
    pub max_context: usize,
    /// Rows of the embedding table: valid token ids are below it.
    pub vocab_size: usize,
    /// Tokens that end a generation (EOS, `<|im_end|>`).
    pub stop_tokens: Vec<u32>,
    /// When loading finished, in seconds since the Unix epoch (`created` of `/v1/models`).
    pub created: u64,
    /// Backend name (`cpu`, `cuda`).
    pub backend: &'static str,
}

/// One request for the engine.
pub struct Job {
    /// The prompt's token ids (checked: non-empty, fits the context with `opts.max_tokens`).
    pub prompt: Vec<u32>,
    /// How to generate.
    pub opts: GenerateOptions,
    /// Where the engine sends the request's events; dropping the receiver cancels it.
    pub events: mpsc::UnboundedSender<Event>,
    /// When the request arrived (for time to first token and queue wait).
    pub received: Instant,
}

/// What the engine sends back for one request, in order: any number of `Text`, then one `Done`
/// or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Generated text: never splits a UTF-8 character, never holds a stop string.
    Text(String),
    /// The generation ended.
    Done(GenerationStats),
    /// The generation failed (a backend error); the message says why.
    Failed(String),
}

/// Answers once loading is over: `Ok`, or `Err` with the reason it failed.
pub type LoadDone = oneshot::Receiver<Result<(), String>>;

/// The state of the model load: `None` while loading.
type LoadState = OnceLock<Result<Arc<ModelInfo>, String>>;

/// The bounded queue of jobs waiting for the engine.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// Signalled when a job is pushed.
    pushed: Condvar,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Drops the jobs whose client has gone (counted as cancelled generations).
    fn purge(&self, jobs: &mut VecDeque<Job>) {
        let before = jobs.len();
        jobs.retain(|j| !j.events.is_closed());
        let gone = (before - jobs.len()) as u64;
        if gone > 0 {
            self.metrics
                .generations
                .get_or_create(&FinishLabels {
                    reason: "cancelled".into(),
                })
                .inc_by(gone);
        }
        self.metrics.queue_depth.set(jobs.len() as i64);
    }

    fn push(&self, job: Job) -> Result<(), ApiError> {
        // A panic elsewhere while holding the lock leaves the queue itself consistent.
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        self.purge(&mut jobs);
        if jobs.len() >= self.capacity {
            return Err(ApiError::queue_full(self.capacity));
        }
        jobs.push_back(job);
        self.metrics.queue_depth.set(jobs.len() as i64);
        self.pushed.notify_one();
        Ok(())
    }

    /// The oldest job whose client is still there; blocks while there is none.
    fn pop(&self) -> Job {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            self.purge(&mut jobs);
            if let Some(job) = jobs.pop_front() {
                self.metrics.queue_depth.set(jobs.len() as i64);
                return job;
            }
            jobs = self
                .pushed
                .wait(jobs)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The handlers' side of the engine thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    queue: Arc<Queue>,
    state: Arc<LoadState>,
}

impl Engine {
    /// Spawns the engine thread, which loads the model, opens the backend and then serves jobs.
    /// The returned receiver answers once loading is over (`Err` with the reason when it failed).
    ///
    /// Errors: the thread cannot be spawned.
    pub fn start(config: EngineConfig, metrics: Arc<Metrics>) -> Result<(Engine, LoadDone)> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(VecDeque::new()),
            pushed: Condvar::new(),
            capacity: config.max_queue.max(1),
            metrics: metrics.clone(),
        });
        let state = Arc::new(LoadState::new());
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let engine = Engine {
            queue: queue.clone(),
            state: state.clone(),
        };
        std::thread::Builder::new()
            .name("braid-engine".into())
            .spawn(move || engine_main(config, queue, state, metrics, loaded_tx))
            .context("spawning the engine thread")?;
        Ok((engine, loaded_rx))
    }

    /// The loaded model, or the 503 to answer while it loads (or after it failed to).
    pub fn model(&self) -> Result<Arc<ModelInfo>, ApiError> {
        match self.state.get() {
            Some(Ok(info)) => Ok(info.clone()),
            Some(Err(e)) => Err(ApiError::unavailable(format!(
                "the model failed to load: {e}"
            ))),
            None => Err(ApiError::unavailable(
                "the model is still loading; retry when GET /health answers 200",
            )),
        }
    }

    /// Whether the model is loaded: `None` while loading, `Some(Err)` when loading failed.
    pub fn loaded(&self) -> Option<Result<(), String>> {
        self.state
            .get()
            .map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
    }

    /// Puts a job in the queue without waiting (jobs whose client has gone are dropped first).
    ///
    /// Errors: 429 when `max_queue` live jobs already wait.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.queue.push(job)
    }
}

fn engine_main(
    config: EngineConfig,
    queue: Arc<Queue>,
    state: Arc<LoadState>,
    metrics: Arc<Metrics>,
    loaded: oneshot::Sender<Result<(), String>>,
) {
    let model = match LoadedModel::load(&config.model) {
        Ok(m) => m,
        Err(e) => return fail(&state, loaded, format!("{e:#}")),
    };
    let max_context =
        match resolve_max_context(&model.config, config.max_context, DEFAULT_MAX_CONTEXT) {
            Ok(n) => n,
            Err(e) => return fail(&state, loaded, format!("{e:#}")),
        };
    let request = BackendRequest {
        device: config.device,
        passes: &config.passes,
        max_context,
        exec: config.exec,
        prefill: Default::default(),
    };
    let (info, backend) = match model_info(&model, &config, max_context)
        .and_then(|info| Ok((info, open_backend(&model, &request)?)))
    {
        Ok(x) => x,
        Err(e) => return fail(&state, loaded, format!("{e:#}")),
    };
    let tokenizer = info.tokenizer.clone();
    let mut info = info;
    info.backend = backend.name();
    let _ = state.set(Ok(Arc::new(info)));
    let _ = loaded.send(Ok(()));
    let mut session = Session::new(backend);
    // The thread lives as long as the process. A panic in one generation (a bug) fails that
    // request and starts the next from an empty cache instead of ending the thread.
    loop {
        let job = queue.pop();
        let events = job.events.clone();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_job(&mut session, &tokenizer, job, &metrics)
        }));
        if let Err(panic) = run {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!("the engine panicked during a generation: {msg}");
            let _ = events.send(Event::Failed(format!("the engine panicked: {msg}")));
            if let Err(e) = session.reset() {
                tracing::error!("resetting the backend after a panic failed: {e}");
            }
        }
    }
}

fn fail(state: &LoadState, loaded: oneshot::Sender<Result<(), String>>, msg: String) {
    let _ = state.set(Err(msg.clone()));
    let _ = loaded.send(Err(msg));
}

/// The handlers' view of a loaded model.
fn model_info(model: &LoadedModel, config: &EngineConfig, max_context: usize) -> Result<ModelInfo> {
    let id = config.served_name.clone().unwrap_or_else(|| {
        std::path::Path::new(&model.source)
            .file_name()
            .map_or_else(|| model.source.clone(), |n| n.to_string_lossy().into())
    });
    Ok(ModelInfo {
        id,
        tokenizer: model.tokenizer()?.clone(),
        chat: model.chat_template().ok().cloned(),
        max_context,
        vocab_size: model.config.vocab_size,
        stop_tokens: model.stop_tokens(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        backend: "",
    })
}

/// Runs one job; every outcome is sent to its receiver (if it is still there) and counted.
fn run_job(session: &mut Session<'_>, tokenizer: &Tokenizer, job: Job, metrics: &Metrics) {
    let Job {
        prompt,
        opts,
        events,
        received,
    } = job;
    metrics.queue_wait.observe(received.elapsed().as_secs_f64());
    let mut first = true;
    let mut decoder = tokenizer.stream(true);
    let result = session.generate(&prompt, &opts, &mut decoder, &mut |t| {
        if std::mem::take(&mut first) {
            metrics.ttft.observe(received.elapsed().as_secs_f64());
        }
        let gone = if t.text.is_empty() {
            events.is_closed()
        } else {
            events.send(Event::Text(t.text.to_string())).is_err()
        };
        Ok(if gone {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    });
    match result {
        Ok(g) => {
            metrics.record_generation(&g.stats);
            if !g.tail.is_empty() {
                let _ = events.send(Event::Text(g.tail));
            }
            let _ = events.send(Event::Done(g.stats));
        }
        Err(e) => {
            tracing::error!("generation failed: {e}");
            let _ = events.send(Event::Failed(e.to_string()));
        }
    }
}

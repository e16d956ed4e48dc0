//! The HTTP routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`,
//! `POST /v1/chat/completions`, `POST /v1/completions`, `GET /metrics`.
//!
//! A handler checks the request completely (JSON, types, ranges, model name, template, context
//! length) before it queues a job, so a bad request costs no engine time and gets a 4xx at once.
//! Streaming responses are server-sent events fed by the engine's per-request channel; when the
//! client goes away the stream is dropped, the channel closes, and the engine stops at its next
//! token.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::mpsc;

use super::api::{
    from_json, parse_json, ChatChoice, ChatChunk, ChatCompletion, ChatCompletionRequest,
    ChunkChoice, Completion, CompletionChoice, CompletionRequest, Delta, MessageOut, ModelCard,
    ModelList, PromptIn, Sampling, SamplingFields, Usage,
};
use super::engine_thread::{Engine, Event, Job, ModelInfo};
use super::error::ApiError;
use super::metrics::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::engine::{GenerateOptions, GenerationStats};
use crate::sampling::SamplingParams;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The engine thread's handle.
    pub engine: Engine,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// The router of the API over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts every response by route and status (`braid_requests_total`).
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .metrics
        .record_request(&endpoint, response.status().as_u16());
    response
}

/// `GET /health`: 200 `{"status": "ok"}` once the model is loaded, 503 while it loads (or when
/// loading failed, with the reason).
async fn health(State(state): State<AppState>) -> Response {
    match state.engine.loaded() {
        Some(Ok(())) => Json(json!({"status": "ok"})).into_response(),
        Some(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "error": e})),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("encoding the metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

fn card(info: &ModelInfo) -> ModelCard {
    ModelCard {
        id: info.id.clone(),
        object: "model",
        created: info.created,
        owned_by: "braid",
        max_model_len: info.max_context,
    }
}

/// `GET /v1/models`: the one served model.
async fn models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let info = state.engine.model()?;
    Ok(Json(ModelList {
        object: "list",
        data: vec![card(&info)],
    }))
}

/// `GET /v1/models/{id}`.
async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let info = state.engine.model()?;
    check_model(&id, &info)?;
    Ok(Json(card(&info)))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(
        format!(
            "no route {method} {}; this server answers GET /health, GET /metrics, GET \
             /v1/models, POST /v1/chat/completions, POST /v1/completions",
            uri.path()
        ),
        None,
    )
    .with_status(StatusCode::NOT_FOUND)
    .with_code("unknown_url")
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(
        format!(
            "{} does not answer {method}; see GET /health for the routes",
            uri.path()
        ),
        None,
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
    .with_code("method_not_allowed")
}

fn check_model(asked: &str, info: &ModelInfo) -> Result<(), ApiError> {
    if asked == info.id {
        Ok(())
    } else {
        Err(ApiError::unknown_model(asked, &info.id))
    }
}

/// The body bytes, or the error for an unreadable or oversized body. The body is read as JSON
/// whatever its `Content-Type` says (as `curl -d` sends a form type).
fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::invalid(
                format!(
                    "the request body is larger than the limit of {} bytes (--max-body-bytes)",
                    state.max_body_bytes
                ),
                None,
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .with_code("request_too_large")
        } else {
            ApiError::invalid(
                format!("could not read the request body: {}", r.body_text()),
                None,
            )
            .with_status(r.status())
        }
    })
}

/// Checks the prompt against the context and builds the engine's options.
///
/// Errors (400 `context_length_exceeded`): a prompt longer than the context, or `max_tokens` more
/// than the context leaves after the prompt. Without `max_tokens`, the generation may fill the
/// context.
fn generate_options(
    prompt: &[u32],
    s: &Sampling,
    info: &ModelInfo,
) -> Result<GenerateOptions, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            "the prompt is empty after tokenization; expected at least one token",
            Some("prompt"),
        ));
    }
    let ctx = info.max_context;
    // The first generated token comes from the last prompt step and the last one is never fed
    // back, so a prompt of p tokens leaves room for ctx - p + 1 tokens.
    let room = (ctx + 1).checked_sub(prompt.len()).filter(|&r| r > 0);
    let Some(room) = room else {
        return Err(ApiError::invalid(
            format!(
                "the prompt is {} tokens, but the context holds {ctx} (the server's \
                 --max-context); shorten the prompt",
                prompt.len()
            ),
            Some("messages"),
        )
        .with_code("context_length_exceeded"));
    };
    let max_tokens = match s.max_tokens {
        None => room,
        Some(m) if m > room => {
            return Err(ApiError::invalid(
                format!(
                    "`max_tokens` is {m}, but the prompt ({} tokens) leaves room for at most \
                     {room} in the {ctx}-token context; lower max_tokens or shorten the prompt",
                    prompt.len()
                ),
                Some("max_tokens"),
            )
            .with_code("context_length_exceeded"))
        }
        Some(m) => m,
    };
    Ok(GenerateOptions {
        max_tokens,
        sampling: SamplingParams {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            // Without a seed each request draws its own, so identical requests may differ.
            seed: s.seed.unwrap_or_else(rand::random),
        },
        stop_tokens: info.stop_tokens.clone(),
        stop_strings: s.stop.clone(),
    })
}

/// Queues `prompt` for the engine; the receiver gets its events.
fn submit(
    state: &AppState,
    prompt: Vec<u32>,
    opts: GenerateOptions,
    received: Instant,
) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    state.engine.submit(Job {
        prompt,
        opts,
        events: tx,
        received,
    })?;
    Ok(rx)
}

/// Waits for the whole generation.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<(String, GenerationStats), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done(stats) => return Ok((text, stats)),
            Event::Failed(msg) => {
                return Err(ApiError::internal(format!("the generation failed: {msg}")))
            }
        }
    }
    Err(ApiError::internal(
        "the engine stopped before the generation finished",
    ))
}

fn usage(stats: &GenerationStats) -> Usage {
    Usage::new(
        stats.prompt_tokens,
        stats.cached_tokens,
        stats.generated_tokens,
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Identity of one response, shared by its chunks.
#[derive(Clone)]
struct Meta {
    id: String,
    created: u64,
    model: String,
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat_inner(state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(
    state: AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let bytes = body_bytes(&state, body)?;
    let info = state.engine.model()?;
    let value = parse_json(&bytes)?;
    let req: ChatCompletionRequest = from_json(&value)?;
    let sampling = from_json::<SamplingFields>(&value)?.check()?;
    check_model(&req.model, &info)?;
    let messages = req.chat_messages()?;
    let enable_thinking = req.chat_template_kwargs.and_then(|k| k.enable_thinking);
    if info.chat.is_none() {
        return Err(ApiError::invalid(
            format!(
                "the model `{}` has no chat template (tokenizer_config.json); use \
                 /v1/completions",
                info.id
            ),
            Some("messages"),
        ));
    }
    let render_info = info.clone();
    let prompt = tokio::task::spawn_blocking(move || {
        let template = render_info
            .chat
            .as_ref()
            .ok_or_else(|| "no chat template".to_string())?;
        let text = template
            .render(&messages, true, enable_thinking)
            .map_err(|e| format!("the chat template rejected the messages: {e}"))?;
        render_info
            .tokenizer
            .encode(&text, false)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(format!("the prompt task failed: {e}")))?
    .map_err(|e| ApiError::invalid(e, Some("messages")))?;
    let opts = generate_options(&prompt, &sampling, &info)?;
    let rx = submit(&state, prompt, opts, received)?;
    let meta = Meta {
        id: new_id("chatcmpl"),
        created: now_secs(),
        model: info.id.clone(),
    };
    if sampling.stream {
        return Ok(chat_stream(rx, meta, sampling.include_usage));
    }
    let (text, stats) = collect(rx).await?;
    Ok(Json(ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: vec![ChatChoice {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: text,
            },
            logprobs: None,
            finish_reason: stats.stop_reason.as_str(),
        }],
        usage: usage(&stats),
    })
    .into_response())
}

fn chat_chunk(meta: &Meta, delta: Delta, finish: Option<&'static str>, usage: bool) -> ChatChunk {
    ChatChunk {
        id: meta.id.clone(),
        object: "chat.completion.chunk",
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }],
        usage: usage.then_some(None),
    }
}

/// The SSE stream of a chat completion: a role chunk, one chunk per text piece, a chunk with
/// `finish_reason`, a usage chunk when asked, then `data: [DONE]`.
fn chat_stream(
    mut rx: mpsc::UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
) -> Response {
    let stream = async_stream::stream! {
        let role = Delta { role: Some("assistant"), content: Some(String::new()) };
        yield SseEvent::default().json_data(chat_chunk(&meta, role, None, include_usage));
        let mut done = false;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(t) => {
                    let delta = Delta { role: None, content: Some(t) };
                    yield SseEvent::default().json_data(chat_chunk(&meta, delta, None, include_usage));
                }
                Event::Done(stats) => {
                    let finish = Some(stats.stop_reason.as_str());
                    yield SseEvent::default().json_data(chat_chunk(&meta, Delta::default(), finish, include_usage));
                    if include_usage {
                        let mut last = chat_chunk(&meta, Delta::default(), None, true);
                        last.choices.clear();
                        last.usage = Some(Some(usage(&stats)));
                        yield SseEvent::default().json_data(last);
                    }
                    done = true;
                    break;
                }
                Event::Failed(msg) => {
                    yield SseEvent::default().json_data(ApiError::internal(format!("the generation failed: {msg}")).body());
                    done = true;
                    break;
                }
            }
        }
        if !done {
            yield SseEvent::default().json_data(ApiError::internal("the engine stopped before the generation finished").body());
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /v1/completions`.
async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    completions_inner(state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(
    state: AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let bytes = body_bytes(&state, body)?;
    let info = state.engine.model()?;
    let value = parse_json(&bytes)?;
    let req: CompletionRequest = from_json(&value)?;
    let sampling = from_json::<SamplingFields>(&value)?.check()?;
    check_model(&req.model, &info)?;
    let prompt = match req.prompt(info.vocab_size)? {
        PromptIn::Tokens(ids) => ids,
        PromptIn::Text(text) => {
            let tok_info = info.clone();
            // Plain text gets the tokenizer's special tokens (Llama 3's BOS; Qwen's adds none),
            // as `braid generate` and transformers' `tokenizer(text)`; chat text above does not.
            tokio::task::spawn_blocking(move || tok_info.tokenizer.encode(&text, true))
                .await
                .map_err(|e| ApiError::internal(format!("the prompt task failed: {e}")))?
                .map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?
        }
    };
    let opts = generate_options(&prompt, &sampling, &info).map_err(|mut e| {
        if e.param.as_deref() == Some("messages") {
            e.param = Some("prompt".into());
        }
        e
    })?;
    let rx = submit(&state, prompt, opts, received)?;
    let meta = Meta {
        id: new_id("cmpl"),
        created: now_secs(),
        model: info.id.clone(),
    };
    if sampling.stream {
        return Ok(completion_stream(rx, meta, sampling.include_usage));
    }
    let (text, stats) = collect(rx).await?;
    let mut out = completion(&meta, text, Some(stats.stop_reason.as_str()), false);
    out.usage = Some(Some(usage(&stats)));
    Ok(Json(out).into_response())
}

fn completion(meta: &Meta, text: String, finish: Option<&'static str>, usage: bool) -> Completion {
    Completion {
        id: meta.id.clone(),
        object: "text_completion",
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason: finish,
        }],
        usage: usage.then_some(None),
    }
}

/// The SSE stream of a completion: one chunk per text piece, a chunk with `finish_reason`, a
/// usage chunk when asked, then `data: [DONE]`.
fn completion_stream(
    mut rx: mpsc::UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
) -> Response {
    let stream = async_stream::stream! {
        let mut done = false;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(t) => {
                    yield SseEvent::default().json_data(completion(&meta, t, None, include_usage));
                }
                Event::Done(stats) => {
                    let finish = Some(stats.stop_reason.as_str());
                    yield SseEvent::default().json_data(completion(&meta, String::new(), finish, include_usage));
                    if include_usage {
                        let mut last = completion(&meta, String::new(), None, true);
                        last.choices.clear();
                        last.usage = Some(Some(usage(&stats)));
                        yield SseEvent::default().json_data(last);
                    }
                    done = true;
                    break;
                }
                Event::Failed(msg) => {
                    yield SseEvent::default().json_data(ApiError::internal(format!("the generation failed: {msg}")).body());
                    done = true;
                    break;
                }
            }
        }
        if !done {
            yield SseEvent::default().json_data(ApiError::internal("the engine stopped before the generation finished").body());
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

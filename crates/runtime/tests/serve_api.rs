//! `braid serve`'s router driven in-process (`tower::ServiceExt::oneshot`) with the tiny model on
//! the CPU: bad input gets an OpenAI-style 4xx and never takes the server down; streaming,
//! stop strings, prefix reuse, the bounded queue and client disconnects work.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use braid_backend_cuda::ExecOptions;
use braid_runtime::pipeline::{ContextRequest, Device};
use braid_runtime::serve::app;
use braid_runtime::serve::engine_thread::{Engine, EngineConfig};
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use tower::ServiceExt;

/// Context of the shared app: small, so an over-long prompt is easy to write.
const CONTEXT: usize = 128;
/// Body limit of the shared app.
const MAX_BODY: usize = 16 * 1024;

fn config(max_context: usize, max_queue: usize) -> EngineConfig {
    EngineConfig {
        model: "tiny".into(),
        served_name: None,
        device: Device::Cpu,
        passes: "default".into(),
        max_context: ContextRequest {
            rows: Some(max_context),
            allow_long: false,
        },
        max_queue,
        exec: ExecOptions::default(),
    }
}

fn wait_loaded(engine: &Engine) {
    let start = Instant::now();
    while engine.loaded().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "model load timed out"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine.loaded(), Some(Ok(())));
}

/// One app (engine thread, tiny model) shared by the tests that do not care about the cache or
/// the queue.
fn shared() -> Router {
    static APP: OnceLock<Router> = OnceLock::new();
    APP.get_or_init(|| {
        let (router, engine, _) = app(config(CONTEXT, 64), MAX_BODY).expect("app starts");
        wait_loaded(&engine);
        router
    })
    .clone()
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: impl Into<Body>,
) -> axum::response::Response {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request builds");
    app.clone().oneshot(req).await.expect("the router answers")
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let resp = send(app, method, path, body).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body reads");
    (
        status,
        String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    )
}

async fn post_json(app: &Router, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, text) = call(app, "POST", path, body.to_string()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// A bad request: (case, path, body, status, param, words in the message).
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, Option<&'a str>, &'a str);

#[tokio::test]
async fn bad_input_gets_an_openai_error_and_the_server_stays_up() {
    let app = shared();
    let chat = "/v1/chat/completions";
    let long_prompt = "hello ".repeat(CONTEXT * 2);
    let oversized = format!(
        r#"{{"model": "tiny", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(MAX_BODY)
    );
    let mut not_utf8 = br#"{"model": "tiny", "messages": [{"role": "user", "content": ""#.to_vec();
    not_utf8.extend([0xff, 0xfe, b'"', b'}', b']', b'}']);
    let cases: Vec<Case> = vec![
        ("malformed JSON", chat, br#"{"model": "tiny", "messages": ["#.to_vec(), 400, None, "not valid JSON"),
        ("trailing characters", chat, br#"{"model": "tiny"} x"#.to_vec(), 400, None, "not valid JSON"),
        ("not an object", chat, b"[1, 2]".to_vec(), 400, None, "expected a JSON object"),
        ("empty body", chat, Vec::new(), 400, None, "empty"),
        ("non-UTF-8 bytes", chat, not_utf8, 400, None, "UTF-8"),
        ("oversized body", chat, oversized.into_bytes(), 413, None, "limit"),
        ("missing model", chat, json!({"messages": user("hi")}).to_string().into(), 400, None, "model"),
        ("unknown model", chat, json!({"model": "gpt-9", "messages": user("hi")}).to_string().into(), 404, Some("model"), "gpt-9"),
        ("messages not a list", chat, json!({"model": "tiny", "messages": "hi"}).to_string().into(), 400, Some("messages"), "invalid type"),
        ("empty messages", chat, json!({"model": "tiny", "messages": []}).to_string().into(), 400, Some("messages"), "empty"),
        ("message without role", chat, json!({"model": "tiny", "messages": [{"content": "hi"}]}).to_string().into(), 400, Some("messages[0]"), "role"),
        ("unknown role", chat, json!({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}).to_string().into(), 400, Some("messages[0].role"), "wizard"),
        ("content of the wrong type", chat, json!({"model": "tiny", "messages": [{"role": "user", "content": 42}]}).to_string().into(), 400, Some("messages[0].content"), "a number"),
        ("null user content", chat, json!({"model": "tiny", "messages": [{"role": "user", "content": null}]}).to_string().into(), 400, Some("messages[0].content"), "null"),
        ("image content part", chat, json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string().into(), 400, Some("messages[0].content"), "image_url"),
        ("prompt longer than the context", chat, json!({"model": "tiny", "messages": user(&long_prompt)}).to_string().into(), 400, Some("messages"), "context holds 128"),
        ("max_tokens 0", chat, json!({"model": "tiny", "messages": user("hi"), "max_tokens": 0}).to_string().into(), 400, Some("max_tokens"), "at least 1"),
        ("max_tokens huge", chat, json!({"model": "tiny", "messages": user("hi"), "max_tokens": 1_000_000_000_000u64}).to_string().into(), 400, Some("max_tokens"), "leaves room"),
        ("max_tokens negative", chat, json!({"model": "tiny", "messages": user("hi"), "max_tokens": -5}).to_string().into(), 400, Some("max_tokens"), "invalid value"),
        ("max_completion_tokens 0", chat, json!({"model": "tiny", "messages": user("hi"), "max_completion_tokens": 0}).to_string().into(), 400, Some("max_completion_tokens"), "at least 1"),
        ("temperature a string", chat, json!({"model": "tiny", "messages": user("hi"), "temperature": "hot"}).to_string().into(), 400, Some("temperature"), "invalid type"),
        ("temperature above 2", chat, json!({"model": "tiny", "messages": user("hi"), "temperature": 2.5}).to_string().into(), 400, Some("temperature"), "between 0 and 2"),
        ("temperature negative", chat, json!({"model": "tiny", "messages": user("hi"), "temperature": -0.1}).to_string().into(), 400, Some("temperature"), "between 0 and 2"),
        ("top_p 0", chat, json!({"model": "tiny", "messages": user("hi"), "top_p": 0}).to_string().into(), 400, Some("top_p"), "greater than 0"),
        ("top_p above 1", chat, json!({"model": "tiny", "messages": user("hi"), "top_p": 1.5}).to_string().into(), 400, Some("top_p"), "at most 1"),
        ("top_k below -1", chat, json!({"model": "tiny", "messages": user("hi"), "top_k": -2}).to_string().into(), 400, Some("top_k"), "positive count"),
        ("n 2", chat, json!({"model": "tiny", "messages": user("hi"), "n": 2}).to_string().into(), 400, Some("n"), "must be 1"),
        ("five stop strings", chat, json!({"model": "tiny", "messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}).to_string().into(), 400, Some("stop"), "at most 4"),
        ("stop a number", chat, json!({"model": "tiny", "messages": user("hi"), "stop": 3}).to_string().into(), 400, Some("stop"), "a number"),
        ("empty stop string", chat, json!({"model": "tiny", "messages": user("hi"), "stop": ""}).to_string().into(), 400, Some("stop"), "empty string"),
        ("seed a string", chat, json!({"model": "tiny", "messages": user("hi"), "seed": "abc"}).to_string().into(), 400, Some("seed"), "invalid type"),
        ("stream a string", chat, json!({"model": "tiny", "messages": user("hi"), "stream": "yes"}).to_string().into(), 400, Some("stream"), "invalid type"),
        ("stream_options without stream", chat, json!({"model": "tiny", "messages": user("hi"), "stream_options": {"include_usage": true}}).to_string().into(), 400, Some("stream_options"), "only allowed"),
        ("unknown chat_template_kwargs key", chat, json!({"model": "tiny", "messages": user("hi"), "chat_template_kwargs": {"tools_please": true}}).to_string().into(), 400, Some("chat_template_kwargs.tools_please"), "tools_please"),
        ("enable_thinking not a boolean", chat, json!({"model": "tiny", "messages": user("hi"), "chat_template_kwargs": {"enable_thinking": "no"}}).to_string().into(), 400, Some("chat_template_kwargs.enable_thinking"), "invalid type"),
        ("logprobs", chat, json!({"model": "tiny", "messages": user("hi"), "logprobs": true}).to_string().into(), 400, Some("logprobs"), "not supported"),
        ("tools", chat, json!({"model": "tiny", "messages": user("hi"), "tools": [{"type": "function"}]}).to_string().into(), 400, Some("tools"), "not supported"),
        ("completion: empty prompt", "/v1/completions", json!({"model": "tiny", "prompt": ""}).to_string().into(), 400, Some("prompt"), "empty string"),
        ("completion: missing prompt", "/v1/completions", json!({"model": "tiny"}).to_string().into(), 400, Some("prompt"), "missing or null"),
        ("completion: several prompts", "/v1/completions", json!({"model": "tiny", "prompt": ["a", "b"]}).to_string().into(), 400, Some("prompt"), "several prompts"),
        ("completion: token id outside the vocabulary", "/v1/completions", json!({"model": "tiny", "prompt": [1, 2, 999999999]}).to_string().into(), 400, Some("prompt"), "token ids"),
        ("completion: prompt longer than the context", "/v1/completions", json!({"model": "tiny", "prompt": long_prompt}).to_string().into(), 400, Some("prompt"), "context holds 128"),
        ("completion: unknown model", "/v1/completions", json!({"model": "nope", "prompt": "hi"}).to_string().into(), 404, Some("model"), "nope"),
        ("unknown route", "/v1/embeddings", json!({}).to_string().into(), 404, None, "no route"),
    ];
    assert!(cases.len() >= 20);
    for (case, path, body, status, param, words) in cases {
        let (got, text) = call(&app, "POST", path, body).await;
        assert_eq!(got.as_u16(), status, "{case}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: {e}: {text}"));
        let err = &v["error"];
        let message = err["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: {text}"));
        assert!(
            message.contains(words),
            "{case}: `{words}` not in {message}"
        );
        assert!(err["type"].is_string(), "{case}: {text}");
        assert!(
            err.get("param").is_some() && err.get("code").is_some(),
            "{case}: {text}"
        );
        assert_eq!(err["param"].as_str(), param, "{case}: {text}");
    }
    // A wrong method and a model card of another model.
    let (got, text) = call(&app, "GET", chat, Body::empty()).await;
    assert_eq!(got, StatusCode::METHOD_NOT_ALLOWED, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    let (got, text) = call(&app, "GET", "/v1/models/other", Body::empty()).await;
    assert_eq!(got, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("model_not_found"), "{text}");

    // Still healthy, and a good request still works.
    let (got, _) = call(&app, "GET", "/health", Body::empty()).await;
    assert_eq!(got, StatusCode::OK);
    let (got, v) = post_json(
        &app,
        chat,
        &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 2}),
    )
    .await;
    assert_eq!(got, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn models_lists_the_served_model() {
    let app = shared();
    let (status, text) = call(&app, "GET", "/v1/models", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["object"], "model");
    let (status, text) = call(&app, "GET", "/v1/models/tiny", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn a_stream_carries_the_same_text_as_a_full_response() {
    let app = shared();
    let body = json!({"model": "tiny", "messages": user("Tell me a story"), "max_tokens": 8, "temperature": 0});
    let (status, full) = post_json(&app, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert_eq!(full["usage"]["completion_tokens"], 8);
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = send(&app, "POST", "/v1/chat/completions", streamed.to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let data = sse_data(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 8);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    // Every chunk before the usage one has `"usage": null`.
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
}

#[tokio::test]
async fn completions_answer_with_text_and_usage() {
    let app = shared();
    let body =
        json!({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0});
    let (status, v) = post_json(&app, "/v1/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, sse) = call(&app, "POST", "/v1/completions", streamed.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse_data(&sse);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let joined: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(joined, text);
    // Token ids work as a prompt too.
    let (status, v) = post_json(
        &app,
        "/v1/completions",
        &json!({"model": "tiny", "prompt": [9707, 11], "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn a_stop_string_ends_the_text_before_it() {
    let app = shared();
    let body =
        json!({"model": "tiny", "messages": user("Stop here"), "max_tokens": 10, "temperature": 0});
    let (_, v) = post_json(&app, "/v1/chat/completions", &body).await;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "{text:?}");
    let stop: String = chars[3..5].iter().collect();
    let expected = &text[..text.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut with_stop = body.clone();
        with_stop["stop"] = json!([stop]);
        with_stop["stream"] = json!(stream);
        let (status, out) = call(&app, "POST", "/v1/chat/completions", with_stop.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        let (got, finish) = if stream {
            let chunks: Vec<Value> = sse_data(&out)
                .iter()
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let got: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            (
                got,
                chunks.last().unwrap()["choices"][0]["finish_reason"].clone(),
            )
        } else {
            let v: Value = serde_json::from_str(&out).unwrap();
            (
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["choices"][0]["finish_reason"].clone(),
            )
        };
        assert_eq!(
            got, expected,
            "stream {stream}, stop {stop:?}, full {text:?}"
        );
        assert_eq!(finish, "stop");
    }
}

#[tokio::test]
async fn health_queue_prefix_reuse_and_disconnects_on_a_private_server() {
    // One waiting request at most; its own engine, so the cache and queue are this test's.
    let (app, engine, _) = app(config(256, 1), MAX_BODY).expect("app starts");
    let (status, text) = call(&app, "GET", "/health", Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("loading"), "{text}");
    let (status, text) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        json!({"model": "tiny", "messages": user("hi")}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("loading"), "{text}");
    tokio::task::spawn_blocking(move || wait_loaded(&engine))
        .await
        .unwrap();
    let (status, _) = call(&app, "GET", "/health", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);

    // Prefix reuse: the same conversation again, then one turn longer.
    let first = json!({"model": "tiny", "messages": user("What is a cache?"), "max_tokens": 3, "temperature": 0});
    let (_, a) = post_json(&app, "/v1/chat/completions", &first).await;
    assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let (_, b) = post_json(&app, "/v1/chat/completions", &first).await;
    let prompt = b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt - 1
    );
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    let answer = b["choices"][0]["message"]["content"].as_str().unwrap();
    let second = json!({"model": "tiny", "max_tokens": 2, "messages": [
        {"role": "user", "content": "What is a cache?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And a prefix?"},
    ]});
    let (_, c) = post_json(&app, "/v1/chat/completions", &second).await;
    let cached = c["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= prompt - 1,
        "turn two reused {cached} of the first turn's {prompt} tokens"
    );

    // A long stream is running, one request waits, the next is refused at once.
    let long = json!({"model": "tiny", "messages": user("Go on and on"), "max_tokens": 200, "stream": true});
    let running = send(&app, "POST", "/v1/chat/completions", long.to_string()).await;
    let mut running = running.into_body().into_data_stream();
    let mut seen = String::new();
    while seen.matches("data: ").count() < 3 {
        let frame = running
            .next()
            .await
            .expect("the stream goes on")
            .expect("frame");
        seen.push_str(std::str::from_utf8(&frame).unwrap());
    }
    let waiting = send(&app, "POST", "/v1/chat/completions", long.to_string()).await;
    assert_eq!(waiting.status(), StatusCode::OK);
    let refused_at = Instant::now();
    let (status, v) = post_json(&app, "/v1/chat/completions", &long).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(refused_at.elapsed() < Duration::from_secs(2));
    assert_eq!(v["error"]["code"], "queue_full");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // Both clients leave: the running generation stops at its next token, the waiting one never
    // starts, and the next request runs at once.
    drop(running);
    drop(waiting);
    let (status, v) = post_json(
        &app,
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": user("next"), "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, metrics) = call(&app, "GET", "/metrics", Body::empty()).await;
    assert!(
        metrics.contains("braid_generations_total{reason=\"cancelled\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("braid_queue_depth 0"), "{metrics}");
    let generated: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("braid_generated_tokens_total "))
        .and_then(|n| n.parse().ok())
        .expect("generated tokens counter");
    assert!(
        generated < 3 + 3 + 2 + 200 + 2,
        "the cancelled stream ran to the end: {generated} tokens"
    );
    let cached_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("braid_prompt_tokens_cached_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("cached tokens counter");
    assert!(cached_total >= prompt - 1 + cached, "{metrics}");
}

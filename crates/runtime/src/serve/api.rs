//! The OpenAI API's request and response bodies (serde), and the checks that turn a request into
//! what the engine runs.
//!
//! Requests are parsed with `serde_path_to_error`, so a field of the wrong type is answered with
//! its path (`messages[0].content`) as the error's `param`. Fields this server does not use
//! (`user`, `presence_penalty`, ...) are accepted and ignored; fields whose meaning it cannot honour
//! (`n` > 1, `logprobs`, `tools`) are refused.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use crate::model::ChatMessage;

/// `stop` may hold at most this many strings (as OpenAI's API).
pub const MAX_STOP_STRINGS: usize = 4;
/// Largest accepted `temperature` (OpenAI's range is 0..=2).
pub const MAX_TEMPERATURE: f64 = 2.0;

/// Parses a request body as a JSON object.
///
/// Errors (400): bytes that are not UTF-8 (the offset of the first bad byte), an empty body, text
/// that is not JSON (serde's line and column), JSON that is not an object.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::invalid(
            format!(
                "the request body is not valid UTF-8 (bad byte at offset {}); expected a JSON \
                 object in UTF-8",
                e.valid_up_to()
            ),
            None,
        )
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; expected a JSON object",
            None,
        ));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            format!(
                "the request body is {}; expected a JSON object",
                json_kind(&value)
            ),
            None,
        ));
    }
    Ok(value)
}

/// Reads `T` out of a parsed body.
///
/// Errors (400): a missing field or a field of the wrong type, with its path (`messages[0].role`)
/// as `param`.
pub fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("invalid request body: {inner}"), None)
        } else {
            ApiError::invalid(format!("invalid `{path}`: {inner}"), Some(&path))
        }
    })
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and `"usage": null` in the others).
    pub include_usage: Option<bool>,
}

/// `chat_template_kwargs` (vLLM's extension): variables passed to the chat template.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatTemplateKwargs {
    /// Qwen3: `false` turns reasoning off (the template writes an empty `<think>` block).
    pub enable_thinking: Option<bool>,
}

/// The sampling fields shared by both endpoints (read from the same body as the request).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Most tokens to generate (at least 1); absent: what the context leaves after the prompt.
    pub max_tokens: Option<u64>,
    /// Newer name of `max_tokens` (chat); wins when both are given.
    pub max_completion_tokens: Option<u64>,
    /// Softmax temperature, 0..=2 (default 1); 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens with probability >= top_p, in (0, 1]
    /// (default 1: all).
    pub top_p: Option<f64>,
    /// Not in OpenAI's API (vLLM's extension): keep the `top_k` most likely tokens; 0 or -1
    /// disables.
    pub top_k: Option<i64>,
    /// Seed of the sampler (its bits, for a negative one); absent: a fresh one per request.
    pub seed: Option<i64>,
    /// A string or a list of up to 4 strings.
    pub stop: Option<Value>,
    /// Choices per request: only 1 is supported.
    pub n: Option<u64>,
    /// Answer with server-sent events.
    pub stream: Option<bool>,
    /// Streaming options (only with `stream`).
    pub stream_options: Option<StreamOptions>,
    /// Only absent, null or false is supported.
    pub logprobs: Option<Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Must be the served model's name.
    pub model: String,
    /// The conversation, rendered with the model's chat template.
    pub messages: Vec<MessageIn>,
    /// Variables for the chat template (vLLM's extension).
    pub chat_template_kwargs: Option<ChatTemplateKwargs>,
    /// Only absent, null or empty is supported.
    pub tools: Option<Value>,
}

/// One message of a chat request.
#[derive(Clone, Debug, Deserialize)]
pub struct MessageIn {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, a list of `{"type": "text", "text": ...}` parts, or null (assistant only).
    #[serde(default)]
    pub content: Value,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// Must be the served model's name.
    pub model: String,
    /// A string, a list of one string, or a list of token ids.
    #[serde(default)]
    pub prompt: Value,
    /// Only absent or false is supported.
    pub echo: Option<bool>,
    /// Only absent or empty is supported.
    pub suffix: Option<String>,
}

/// The checked sampling fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// `max_tokens` when given (checked against the context once the prompt is tokenized).
    pub max_tokens: Option<usize>,
    /// Softmax temperature, 0..=2; 0 is greedy.
    pub temperature: f32,
    /// Nucleus sampling threshold, (0, 1].
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// The request's seed, when it gave one.
    pub seed: Option<u64>,
    /// Stop strings (non-empty, at most 4).
    pub stop: Vec<String>,
    /// Answer with server-sent events.
    pub stream: bool,
    /// Streaming: send a last chunk with `usage`.
    pub include_usage: bool,
}

impl SamplingFields {
    /// Checks ranges and shapes.
    ///
    /// Errors (400, naming the field): `max_tokens` 0, `temperature` outside 0..=2, `top_p`
    /// outside (0, 1], `top_k` below -1, `n` other than 1, `logprobs`, `stream_options` without `stream`, `stop`
    /// that is not a string or a list of at most 4 non-empty strings.
    pub fn check(&self) -> Result<Sampling, ApiError> {
        let (max_tokens, max_param) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => (Some(m), "max_completion_tokens"),
            (None, m) => (m, "max_tokens"),
        };
        if max_tokens == Some(0) {
            return Err(ApiError::invalid(
                format!("`{max_param}` must be at least 1, got 0"),
                Some(max_param),
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
            return Err(ApiError::invalid(
                format!("`temperature` must be between 0 and {MAX_TEMPERATURE}, got {temperature}"),
                Some("temperature"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                format!("`top_p` must be greater than 0 and at most 1, got {top_p}"),
                Some("top_p"),
            ));
        }
        if let Some(k) = self.top_k.filter(|&k| k < -1) {
            return Err(ApiError::invalid(
                format!("`top_k` must be a positive count, or 0 or -1 to disable it; got {k}"),
                Some("top_k"),
            ));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(
                format!("`n` must be 1 (this server generates one choice per request), got {n}"),
                Some("n"),
            ));
        }
        if !matches!(
            self.logprobs,
            None | Some(Value::Null) | Some(Value::Bool(false))
        ) {
            return Err(ApiError::invalid(
                "`logprobs` is not supported by this server; leave it out or set it to false",
                Some("logprobs"),
            ));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "`stream_options` is only allowed when `stream` is true",
                Some("stream_options"),
            ));
        }
        Ok(Sampling {
            max_tokens: max_tokens.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k: self
                .top_k
                .filter(|&k| k > 0)
                .map_or(0, |k| usize::try_from(k).unwrap_or(usize::MAX)),
            seed: self.seed.map(|s| s as u64),
            stop: stop_strings(self.stop.as_ref())?,
            stream,
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

/// `stop`: null, a string, or a list of at most [`MAX_STOP_STRINGS`] non-empty strings.
fn stop_strings(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |what: String| {
        ApiError::invalid(
            format!(
                "`stop` must be a string or a list of at most {MAX_STOP_STRINGS} non-empty \
                 strings; got {what}"
            ),
            Some("stop"),
        )
    };
    let list = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_STRINGS {
                return Err(bad(format!("{} strings", items.len())));
            }
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!("a list holding {}", json_kind(other)))),
                })
                .collect::<Result<_, _>>()?
        }
        Some(other) => return Err(bad(json_kind(other).into())),
    };
    if list.iter().any(String::is_empty) {
        return Err(bad("an empty string".into()));
    }
    Ok(list)
}

/// The JSON type of `v`, for messages (`a number`, `an object`).
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl ChatCompletionRequest {
    /// The conversation as chat-template messages.
    ///
    /// Errors (400, naming the message): no messages, a role other than `system`, `developer`
    /// (treated as `system`), `user`, `assistant`, `tool`, content that is not a string or a
    /// list of text parts, missing content outside an assistant message; `tools`, which this
    /// server does not support.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if !matches!(&self.tools, None | Some(Value::Null))
            && self
                .tools
                .as_ref()
                .and_then(Value::as_array)
                .is_none_or(|t| !t.is_empty())
        {
            return Err(ApiError::invalid(
                "`tools` is not supported by this server; leave it out",
                Some("tools"),
            ));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` is empty; expected at least one message",
                Some("messages"),
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    "tool" => "tool",
                    other => {
                        return Err(ApiError::invalid(
                            format!(
                                "`messages[{i}].role` is `{other}`; expected one of system, \
                                 developer, user, assistant, tool"
                            ),
                            Some(&format!("messages[{i}].role")),
                        ))
                    }
                };
                let content = message_text(&m.content, role == "assistant").map_err(|what| {
                    ApiError::invalid(
                        format!(
                            "`messages[{i}].content` is {what}; expected a string or a list \
                                 of {{\"type\": \"text\", \"text\": ...}} parts"
                        ),
                        Some(&format!("messages[{i}].content")),
                    )
                })?;
                Ok(ChatMessage::new(role, content))
            })
            .collect()
    }
}

/// A message's text; `Err` describes what it was instead.
fn message_text(content: &Value, may_be_null: bool) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null if may_be_null => Ok(String::new()),
        Value::Null => Err("missing or null".into()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(other), _) if other != "text" => {
                        return Err(format!(
                            "a list whose part {j} has type `{other}` (only text is supported)"
                        ))
                    }
                    _ => return Err(format!("a list whose part {j} is not a text part")),
                }
            }
            Ok(text)
        }
        other => Err(json_kind(other).into()),
    }
}

/// What `prompt` of a completion request holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptIn {
    /// Text, to be tokenized.
    Text(String),
    /// Token ids, each below the vocabulary size.
    Tokens(Vec<u32>),
}

impl CompletionRequest {
    /// The prompt.
    ///
    /// Errors (400, `param` `prompt`): an empty prompt, a list of several prompts (one per request
    /// here), anything but a string, a list of one string, or a list of token ids below
    /// `vocab_size`; `echo` or `suffix`, which this server does not support.
    pub fn prompt(&self, vocab_size: usize) -> Result<PromptIn, ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::invalid(
                "`echo` is not supported by this server; leave it out or set it to false",
                Some("echo"),
            ));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "`suffix` is not supported by this server; leave it out",
                Some("suffix"),
            ));
        }
        let bad = |what: &str| {
            ApiError::invalid(
                format!(
                    "`prompt` is {what}; expected a non-empty string, a list of one string, or a \
                     list of token ids"
                ),
                Some("prompt"),
            )
        };
        let prompt = match &self.prompt {
            Value::String(s) => PromptIn::Text(s.clone()),
            Value::Array(items) => match items.as_slice() {
                [] => return Err(bad("an empty list")),
                [Value::String(s)] => PromptIn::Text(s.clone()),
                [Value::String(_), ..] => {
                    return Err(bad(
                        "a list of several prompts (send one request per prompt)",
                    ))
                }
                _ => {
                    let ids = items
                        .iter()
                        .map(|v| {
                            v.as_u64()
                                .filter(|&t| t < vocab_size as u64)
                                .map(|t| t as u32)
                        })
                        .collect::<Option<Vec<u32>>>()
                        .ok_or_else(|| {
                            bad(&format!(
                                "a list that is not all token ids in 0..{vocab_size}"
                            ))
                        })?;
                    PromptIn::Tokens(ids)
                }
            },
            Value::Null => return Err(bad("missing or null")),
            other => return Err(bad(json_kind(other))),
        };
        if prompt == PromptIn::Text(String::new()) {
            return Err(bad("an empty string"));
        }
        Ok(prompt)
    }
}

/// Token counts of a response. Here and in the response types below, fields are named and mean
/// what OpenAI's API says; only additions are documented.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV-cache rows were reused from the previous request.
    pub cached_tokens: usize,
}

impl Usage {
    /// Usage of a request with `prompt` tokens (`cached` of them reused) and `completion`
    /// generated tokens.
    pub fn new(prompt: usize, cached: usize, completion: usize) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
        }
    }
}

/// `chat.completion`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// One choice of a `chat.completion`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: MessageOut,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

/// The assistant message of a `chat.completion`.
#[derive(Clone, Debug, Serialize)]
pub struct MessageOut {
    pub role: &'static str,
    pub content: String,
}

/// `chat.completion.chunk`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (null until the last chunk) when `stream_options.include_usage` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice of a `chat.completion.chunk`.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

/// The delta of a chunk: the role in the first, text in the others, nothing in the last.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `text_completion` (also the object of each streamed completion chunk).
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// Always present in a full response; in a stream, as for [`ChatChunk::usage`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice of a `text_completion`.
#[derive(Clone, Debug, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// One model of `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Not in OpenAI's API (vLLM has it): KV-cache rows, the longest prompt + completion.
    pub max_model_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_names_the_field() {
        let body = parse_json(br#"{"temperature": "hot", "stop": null}"#).unwrap();
        let err = from_json::<SamplingFields>(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"), "{err}");
        let body = parse_json(br#"{"model": "tiny", "messages": [{"content": "x"}]}"#).unwrap();
        let err = from_json::<ChatCompletionRequest>(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0]"), "{err}");
        assert!(err.message.contains("role"), "{err}");
    }

    #[test]
    fn stop_accepts_a_string_or_a_short_list() {
        assert_eq!(stop_strings(Some(&serde_json::json!("a"))).unwrap(), ["a"]);
        assert_eq!(
            stop_strings(Some(&serde_json::json!(["a", "b"]))).unwrap(),
            ["a", "b"]
        );
        assert!(stop_strings(Some(&serde_json::json!(["a", "b", "c", "d", "e"]))).is_err());
        assert!(stop_strings(Some(&serde_json::json!([""]))).is_err());
        assert!(stop_strings(Some(&serde_json::json!(3))).is_err());
    }

    #[test]
    fn content_parts_are_joined() {
        let parts =
            serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(message_text(&parts, false).unwrap(), "ab");
        let image = serde_json::json!([{"type": "image_url", "image_url": {"url": "x"}}]);
        assert!(message_text(&image, false)
            .unwrap_err()
            .contains("image_url"));
    }
}

//! Chat prompts: the model's Jinja `chat_template` (from `tokenizer_config.json`) rendered with
//! minijinja, as transformers' `apply_chat_template` renders it.
//!
//! Like transformers' template environment: `trim_blocks` and `lstrip_blocks` are on, Python
//! string methods (`startswith`, `split`, `rstrip`, ...) work through minijinja-contrib's pycompat
//! callback, `namespace` is built in, `raise_exception(msg)` fails the render, and `tojson` and
//! `strftime_now(format)` are transformers' own ([`super::jinja`]: Llama 3.1+ templates date their
//! system turn with `strftime_now`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use super::error::LoadError;
use super::jinja::{self, Clock};

/// Qwen3-0.6B's `tokenizer_config.json`, embedded (chat template with `<think>` and tool calls).
const QWEN3_TOKENIZER_CONFIG: &str =
    include_str!("../../../../models/qwen3-0.6b/tokenizer_config.json");
/// The pseudo path naming the embedded config in errors.
const QWEN3_BUILTIN: &str = "<built-in qwen3-0.6b tokenizer_config.json>";
/// Name of the template inside the minijinja environment (no extension: no auto-escaping).
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// A compiled chat template and the special tokens it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: PathBuf,
    /// Special tokens passed to the template by name (`bos_token`, `eos_token`, `pad_token`,
    /// `unk_token`), as transformers does.
    special_tokens: BTreeMap<String, String>,
    /// The template text, for quoting it in errors.
    source: String,
}

impl ChatTemplate {
    /// Reads `chat_template` and the special tokens from a `tokenizer_config.json`. When the
    /// config has no `chat_template`, a `chat_template.jinja` next to it is used (newer
    /// transformers save it there).
    ///
    /// Errors: [`LoadError::Io`], [`LoadError::Json`], [`LoadError::MissingField`] (no template
    /// anywhere), [`LoadError::InvalidField`], [`LoadError::Template`] if it does not compile.
    pub fn from_tokenizer_config(path: &Path) -> Result<ChatTemplate, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::io(path, "a Hugging Face tokenizer_config.json", e))?;
        ChatTemplate::from_tokenizer_config_str(&text, path)
    }

    /// Like [`ChatTemplate::from_tokenizer_config`], from the file's text; `origin` names it.
    pub fn from_tokenizer_config_str(text: &str, origin: &Path) -> Result<ChatTemplate, LoadError> {
        let config: serde_json::Value =
            serde_json::from_str(text).map_err(|e| LoadError::json(origin, &e))?;
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(named)) => default_of_named(named, origin)?,
            None | Some(serde_json::Value::Null) => sibling_jinja(origin)?,
            Some(other) => {
                return Err(LoadError::InvalidField {
                    path: origin.into(),
                    field: "chat_template".into(),
                    found: other.to_string(),
                    expected: "a Jinja template string".into(),
                })
            }
        };
        let mut special_tokens = BTreeMap::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(token) = config.get(key).and_then(token_content) {
                special_tokens.insert(key.to_string(), token);
            }
        }
        ChatTemplate::new(source, special_tokens, origin)
    }

    /// Qwen3's template, from the `tokenizer_config.json` embedded in the binary.
    ///
    /// Errors: none in practice (the embedded file is known good).
    pub fn qwen3_builtin() -> Result<ChatTemplate, LoadError> {
        ChatTemplate::from_tokenizer_config_str(QWEN3_TOKENIZER_CONFIG, Path::new(QWEN3_BUILTIN))
    }

    /// Compiles a template source; `origin` names it in errors.
    ///
    /// Errors: [`LoadError::Template`] with minijinja's message and line.
    pub fn new(
        source: String,
        special_tokens: BTreeMap<String, String>,
        origin: &Path,
    ) -> Result<ChatTemplate, LoadError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: &str| {
            jinja::strftime_now(Clock::System, format)
        });
        env.add_filter("tojson", jinja::tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| template_error(origin, &e, &source))?;
        Ok(ChatTemplate {
            env,
            origin: origin.into(),
            special_tokens,
            source,
        })
    }

    /// The same template with `strftime_now` reading `clock` (a fixed instant makes renders of
    /// date-stamped templates such as Llama 3's reproducible).
    pub fn with_clock(mut self, clock: Clock) -> ChatTemplate {
        self.env.add_function("strftime_now", move |format: &str| {
            jinja::strftime_now(clock, format)
        });
        self
    }

    /// Where the template came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The special token passed to the template as `name` (e.g. `eos_token` → `<|im_end|>`).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.get(name).map(String::as_str)
    }

    /// The prompt text for `messages`. `add_generation_prompt` appends the assistant header
    /// (`<|im_start|>assistant\n` for Qwen3); `enable_thinking` is passed to the template only when
    /// given (Qwen3: `Some(false)` appends an empty `<think>\n\n</think>\n\n` block, which turns
    /// reasoning off).
    ///
    /// Errors: [`LoadError::Template`] naming the template's file, with minijinja's message and
    /// the template line (or the `raise_exception` message).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String, LoadError> {
        let mut ctx: BTreeMap<&str, Value> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
            .collect();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        // transformers' render_jinja_template passes these even when there are none.
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        if let Some(t) = enable_thinking {
            ctx.insert("enable_thinking", Value::from(t));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&self.origin, &e, &self.source))?;
        template
            .render(ctx)
            .map_err(|e| template_error(&self.origin, &e, &self.source))
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

/// `raise_exception(msg)`: templates call it to reject a conversation (e.g. roles out of order).
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// A [`LoadError::Template`] from a minijinja error; `source` (the template text) lets the message
/// quote the expression at fault, e.g. the undefined `foo.bar` of `{{ foo.bar }}`.
fn template_error(origin: &Path, e: &Error, source: &str) -> LoadError {
    // minijinja's Display ends in "(in chat_template:L)"; say the line in the template's terms.
    let mut msg = match e.line() {
        Some(line) => format!("line {line}: {}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(detail) = e.detail() {
        msg = format!("{msg}: {detail}");
    }
    let expr = e
        .range()
        .and_then(|r| source.get(r))
        .map(str::trim)
        .filter(|x| !x.is_empty() && x.len() <= 200);
    if let Some(expr) = expr {
        if e.kind() == ErrorKind::UndefinedError {
            msg = format!("{msg}: `{expr}` (a variable or attribute the template is not given)");
        } else {
            msg = format!("{msg} in `{expr}`");
        }
    }
    LoadError::Template {
        path: origin.into(),
        msg,
    }
}

/// A special token's text: a string, or an object with `content` (transformers' `AddedToken`).
fn token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The `default` entry of a list of named templates (`[{"name": ..., "template": ...}]`).
fn default_of_named(named: &[serde_json::Value], origin: &Path) -> Result<String, LoadError> {
    named
        .iter()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
        .and_then(|t| t.get("template")?.as_str().map(str::to_string))
        .ok_or_else(|| LoadError::InvalidField {
            path: origin.into(),
            field: "chat_template".into(),
            found: "a list of named templates without a `default` one".into(),
            expected:
                "a template string, or a list holding {\"name\": \"default\", \"template\": ...}"
                    .into(),
        })
}

/// The `chat_template.jinja` next to `origin`, for configs without a `chat_template` field.
fn sibling_jinja(origin: &Path) -> Result<String, LoadError> {
    let jinja = origin
        .parent()
        .map(|d| d.join("chat_template.jinja"))
        .filter(|p| p.is_file());
    match jinja {
        Some(p) => {
            std::fs::read_to_string(&p).map_err(|e| LoadError::io(&p, "a Jinja chat template", e))
        }
        None => Err(LoadError::MissingField {
            path: origin.into(),
            field: "chat_template".into(),
            expected: "a Jinja template string (or a chat_template.jinja file next to it)".into(),
        }),
    }
}

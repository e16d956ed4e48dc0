//! Errors of model loading: config, checkpoint, tokenizer, chat template.
//!
//! Every message names the file (and the field or tensor where there is one) and says what was
//! expected, so a user can fix the file without reading this code.

use std::path::PathBuf;

use thiserror::Error;

/// An error loading or validating model files. `path` is the file the problem is in (built-in
/// assets use a `<built-in ...>` pseudo path).
#[derive(Debug, Error)]
pub enum LoadError {
    /// A file or directory could not be read (missing, permissions, I/O failure). The OS error is
    /// part of the message and deliberately not an error `source`, so a report that prints the
    /// chain does not print it twice.
    #[error("cannot read {}: {cause} (expected {expected})", path.display())]
    Io {
        path: PathBuf,
        /// What the file should have been, e.g. "a Hugging Face config.json".
        expected: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A checkpoint directory holds none of the files a checkpoint is made of.
    #[error("{}: no checkpoint found (expected {expected})", path.display())]
    NoCheckpoint { path: PathBuf, expected: String },
    /// A JSON file does not parse, or a field has the wrong JSON type. `line`/`column` are 1-based
    /// and come from serde_json.
    #[error("{}:{line}:{column}: malformed JSON: {msg}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    /// A required field is absent.
    #[error("{}: missing field `{field}` (expected {expected})", path.display())]
    MissingField {
        path: PathBuf,
        field: String,
        expected: String,
    },
    /// A field is present but its value is not acceptable.
    #[error("{}: field `{field}` = {found}: expected {expected}", path.display())]
    InvalidField {
        path: PathBuf,
        field: String,
        found: String,
        expected: String,
    },
    /// The file asks for a feature braid does not implement (rope scaling, attention bias, ...).
    #[error("{}: field `{field}` = {found}: unsupported ({why})", path.display())]
    Unsupported {
        path: PathBuf,
        field: String,
        found: String,
        why: String,
    },
    /// A safetensors file is truncated or corrupt; `msg` is the safetensors crate's own error text.
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },
    /// A sharded checkpoint's `model.safetensors.index.json` disagrees with its shards.
    #[error("{}: {msg}", path.display())]
    Index { path: PathBuf, msg: String },
    /// A tensor is absent. `expected` is the shape the model needs (empty when the caller only
    /// asked for the name).
    #[error(
        "{}: tensor `{tensor}` is missing{}",
        path.display(),
        if expected.is_empty() { String::new() } else { format!(" (the model needs it, expected shape {expected:?})") }
    )]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error(
        "{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}",
        path.display()
    )]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor's element type is not usable (only BF16, F16 and F32 weights are supported).
    #[error(
        "{}: tensor `{tensor}` has dtype {found}, expected {expected}",
        path.display()
    )]
    TensorDtype {
        path: PathBuf,
        tensor: String,
        found: String,
        expected: String,
    },
    /// A tensor's values are unusable (a NaN or an infinity in a weight).
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// `tokenizer.json` could not be loaded, or encoding/decoding failed.
    #[error("{}: tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    /// The chat template does not compile or fails to render.
    #[error("{}: chat template: {msg}", path.display())]
    Template { path: PathBuf, msg: String },
}

impl LoadError {
    /// A [`LoadError::Json`] for `path` from a serde_json error (keeps its line and column).
    pub fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> LoadError {
        let (line, column) = (err.line(), err.column());
        let text = err.to_string();
        // serde_json appends " at line L column C"; the message already starts with `path:L:C`.
        let suffix = format!(" at line {line} column {column}");
        let msg = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
        LoadError::Json {
            path: path.into(),
            line,
            column,
            msg,
        }
    }

    /// A [`LoadError::Io`] for `path`, saying what the file was expected to be.
    pub fn io(path: impl Into<PathBuf>, expected: &str, source: std::io::Error) -> LoadError {
        LoadError::Io {
            path: path.into(),
            expected: expected.to_string(),
            cause: source,
        }
    }
}

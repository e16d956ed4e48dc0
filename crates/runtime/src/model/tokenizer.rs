//! Text <-> token ids, through Hugging Face `tokenizers` reading a `tokenizer.json`, plus a
//! streaming decoder that emits text as tokens arrive without ever splitting a UTF-8 character.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::LoadError;

/// Qwen3-0.6B's `tokenizer.json` (byte-level BPE, 151643 tokens + 26 added tokens), embedded.
const QWEN3_TOKENIZER_JSON: &[u8] = include_bytes!("../../../../models/qwen3-0.6b/tokenizer.json");
/// The pseudo path naming the embedded tokenizer in errors.
const QWEN3_BUILTIN: &str = "<built-in qwen3-0.6b tokenizer.json>";

/// A loaded tokenizer. Cheap to clone (the vocabulary is shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    origin: PathBuf,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// Errors: [`LoadError::Io`] if unreadable, [`LoadError::Tokenizer`] if it does not parse.
    pub fn from_file(path: &Path) -> Result<Tokenizer, LoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::io(path, "a Hugging Face tokenizer.json", e))?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// Parses `tokenizer.json` bytes; `origin` names them in errors.
    ///
    /// Errors: [`LoadError::Tokenizer`] with the `tokenizers` crate's message.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Tokenizer, LoadError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| LoadError::Tokenizer {
            path: origin.into(),
            msg: format!("not a valid tokenizer.json: {e}"),
        })?;
        Ok(Tokenizer {
            inner: Arc::new(inner),
            origin: origin.into(),
        })
    }

    /// The real Qwen3 tokenizer embedded in the binary (`models/qwen3-0.6b/tokenizer.json`).
    ///
    /// Errors: none in practice (the embedded file is known good); a [`LoadError::Tokenizer`] if
    /// the `tokenizers` crate ever stops reading it.
    pub fn qwen3_builtin() -> Result<Tokenizer, LoadError> {
        Tokenizer::from_bytes(QWEN3_TOKENIZER_JSON, Path::new(QWEN3_BUILTIN))
    }

    /// Where the tokenizer came from (a file, or a `<built-in ...>` pseudo path).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become their ids;
    /// `add_special_tokens` runs the post-processor (Qwen3's adds nothing: no BOS).
    ///
    /// Errors: [`LoadError::Tokenizer`] naming the tokenizer file.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, LoadError> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| self.error(format!("cannot encode {:?}: {e}", abbreviate(text))))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`. `skip_special_tokens` drops special tokens (`<|im_end|>`) from the text.
    /// Invalid UTF-8 (a character cut between tokens) decodes to U+FFFD.
    ///
    /// Ids outside the vocabulary decode to nothing (the `tokenizers` crate skips them).
    ///
    /// Errors: [`LoadError::Tokenizer`] with the `tokenizers` crate's message.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, LoadError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(format!("cannot decode ids {ids:?}: {e}")))
    }

    /// The id of a token spelled exactly `token` (vocabulary or added token), e.g.
    /// `token_id("<|im_end|>") == Some(151645)`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The spelling of token `id` (byte-level BPE form, e.g. `Ġhello`), if it exists.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids including added tokens (Qwen3: 151669; the model's vocab_size is larger).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder sharing this tokenizer.
    pub fn stream(&self, skip_special_tokens: bool) -> StreamDecoder {
        StreamDecoder {
            tokenizer: self.clone(),
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    fn error(&self, msg: String) -> LoadError {
        LoadError::Tokenizer {
            path: self.origin.clone(),
            msg,
        }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// Turns generated ids into text pieces as they arrive.
///
/// Byte-level BPE may spread one UTF-8 character over several tokens, and decoding a token alone
/// can differ from decoding it in context (leading spaces). So each step decodes the ids since the
/// last emitted boundary twice, without and with the undecoded tail, and emits the difference
/// only when the result does not end in U+FFFD (an incomplete character); the concatenation of all
/// pieces plus [`StreamDecoder::finish`] equals `decode(all ids)`.
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the context window decoded before the new text.
    prefix_offset: usize,
    /// End of the ids already emitted as text.
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one id; returns the text it completes (`None` while a character is still incomplete
    /// or the token decodes to nothing, e.g. a skipped special token).
    ///
    /// Errors: [`LoadError::Tokenizer`] if the `tokenizers` decoder fails.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, LoadError> {
        self.ids.push(id);
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            // `prefix` is a prefix of `full` for byte-level BPE; fall back to the whole text if a
            // decoder ever breaks that, rather than slicing inside a character.
            let piece = full
                .strip_prefix(prefix.as_str())
                .unwrap_or(&full)
                .to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// The text of ids not yet emitted (an incomplete character shows as U+FFFD), or `None`.
    ///
    /// Errors: [`LoadError::Tokenizer`].
    pub fn finish(&mut self) -> Result<Option<String>, LoadError> {
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let full = self.decode(self.prefix_offset, self.ids.len())?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full
            .strip_prefix(prefix.as_str())
            .filter(|rest| !rest.is_empty())
            .map(str::to_string))
    }

    /// All ids stepped so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn decode(&self, from: usize, to: usize) -> Result<String, LoadError> {
        self.tokenizer
            .decode(&self.ids[from..to], self.skip_special_tokens)
    }
}

/// At most the first 40 characters of `text`, for error messages.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

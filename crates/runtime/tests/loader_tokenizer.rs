//! The Qwen3 tokenizer: known encodings, round trips, special tokens, streaming decode that never
//! splits a UTF-8 character, and errors naming the file.

use std::path::{Path, PathBuf};

use braid_runtime::model::{LoadError, Tokenizer};

fn tokenizer_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/qwen3-0.6b/tokenizer.json")
}

fn builtin() -> Tokenizer {
    Tokenizer::qwen3_builtin().expect("embedded tokenizer loads")
}

/// Mixed scripts, emoji (4-byte UTF-8, often several byte-level tokens), spaces and newlines.
const TEXT: &str =
    "Hello, world! 你好，世界。 Привет 🦀🚀🪐🫠 naïve café 𓀀\n\tcode: fn main() {}  ";

#[test]
fn known_encoding_of_special_tokens() {
    let tok = builtin();
    let ids = tok
        .encode("<|im_start|>hello<|im_end|>", false)
        .expect("encodes");
    assert_eq!(ids, vec![151_644, 14_990, 151_645]);
    // Qwen3's post-processor adds no BOS.
    assert_eq!(
        tok.encode("<|im_start|>hello<|im_end|>", true)
            .expect("encodes"),
        ids
    );
    assert_eq!(tok.token_id("<|im_end|>"), Some(151_645));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(151_643));
    assert_eq!(tok.token_id("<think>"), Some(151_667));
    assert_eq!(tok.token_id("</think>"), Some(151_668));
    assert_eq!(tok.token_id("hello"), Some(14_990));
    assert_eq!(tok.token_id("<|no such token|>"), None);
    assert_eq!(tok.token(14_990).as_deref(), Some("hello"));
    // 151643 BPE tokens + 26 added tokens.
    assert_eq!(tok.vocab_size(), 151_669);
}

#[test]
fn decode_round_trips_and_skips_special_tokens() {
    let tok = builtin();
    let ids = tok.encode(TEXT, false).expect("encodes");
    assert!(ids.len() > 10);
    assert_eq!(tok.decode(&ids, false).expect("decodes"), TEXT);

    let chat = tok
        .encode("<|im_start|>hello<|im_end|>", false)
        .expect("encodes");
    assert_eq!(
        tok.decode(&chat, false).expect("decodes"),
        "<|im_start|>hello<|im_end|>"
    );
    assert_eq!(tok.decode(&chat, true).expect("decodes"), "hello");
}

#[test]
fn file_and_builtin_tokenizers_agree() {
    let from_file = Tokenizer::from_file(&tokenizer_path()).expect("file loads");
    let tok = builtin();
    assert_eq!(
        from_file.encode(TEXT, false).expect("encodes"),
        tok.encode(TEXT, false).expect("encodes")
    );
    assert!(tok.origin().display().to_string().contains("built-in"));
    assert_eq!(from_file.origin(), tokenizer_path().as_path());
}

#[test]
fn streaming_decode_never_splits_a_character() {
    let tok = builtin();
    let ids = tok.encode(TEXT, false).expect("encodes");
    // The ringed planet 🪐 is several byte-level tokens, none of them valid UTF-8 alone: the stream
    // must hold them back.
    let planet = tok.encode("🪐", false).expect("encodes");
    assert!(
        planet.len() > 1,
        "expected 🪐 to span several tokens: {planet:?}"
    );

    let mut stream = tok.stream(false);
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        match stream.step(id).expect("step") {
            Some(piece) => {
                assert!(!piece.contains('\u{FFFD}'), "split character in {piece:?}");
                out.push_str(&piece);
            }
            None => held_back += 1,
        }
    }
    if let Some(rest) = stream.finish().expect("finish") {
        out.push_str(&rest);
    }
    assert_eq!(out, TEXT);
    assert!(held_back > 0, "multi-token characters should be held back");
    assert_eq!(stream.ids(), ids.as_slice());

    // The planet alone: nothing until its last byte, then the whole character.
    let mut stream = tok.stream(false);
    let pieces: Vec<Option<String>> = planet
        .iter()
        .map(|&id| stream.step(id).expect("step"))
        .collect();
    let (last, before) = pieces.split_last().expect("non-empty");
    assert!(before.iter().all(Option::is_none), "{pieces:?}");
    assert_eq!(last.as_deref(), Some("🪐"));
}

#[test]
fn streaming_decode_keeps_leading_spaces_and_skips_specials() {
    let tok = builtin();
    let text = "<|im_start|>assistant\nThe answer is 42.<|im_end|>";
    let ids = tok.encode(text, false).expect("encodes");
    let mut stream = tok.stream(true);
    let mut out = String::new();
    for &id in &ids {
        if let Some(p) = stream.step(id).expect("step") {
            out.push_str(&p);
        }
    }
    assert_eq!(out, "assistant\nThe answer is 42.");
    assert_eq!(stream.finish().expect("finish"), None);
}

#[test]
fn stream_finish_flushes_an_incomplete_character() {
    let tok = builtin();
    let planet = tok.encode("🪐", false).expect("encodes");
    let mut stream = tok.stream(false);
    assert_eq!(stream.step(planet[0]).expect("step"), None);
    let rest = stream
        .finish()
        .expect("finish")
        .expect("something is pending");
    assert!(rest.contains('\u{FFFD}'), "{rest:?}");
}

#[test]
fn missing_and_invalid_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("tokenizer.json");
    let err = Tokenizer::from_file(&missing).expect_err("missing");
    assert!(matches!(err, LoadError::Io { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");

    std::fs::write(&missing, r#"{"model": {"type": "nonsense"}}"#).expect("write");
    let err = Tokenizer::from_file(&missing).expect_err("invalid");
    assert!(matches!(err, LoadError::Tokenizer { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("not a valid tokenizer.json"), "{msg}");
}

#[test]
fn streaming_matches_full_decode_on_random_ids() {
    use rand::{Rng, SeedableRng};
    let tok = builtin();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..20 {
        // Random BPE ids, including byte tokens that are not valid UTF-8 on their own.
        let ids: Vec<u32> = (0..40).map(|_| rng.random_range(0..151_643)).collect();
        let mut stream = tok.stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(p) = stream.step(id).expect("step") {
                out.push_str(&p);
            }
        }
        if let Some(rest) = stream.finish().expect("finish") {
            out.push_str(&rest);
        }
        assert_eq!(out, tok.decode(&ids, false).expect("decodes"), "{ids:?}");
    }
}

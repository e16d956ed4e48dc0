//! braid's tokenizer agrees with Hugging Face's Python tokenizer on varied strings (CJK, emoji, code,
//! runs of spaces and newlines, special tokens). Fixture: `scripts/make_tokenizer_fixture.py`.

use braid_runtime::model::Tokenizer;
use braid_tests::fixture;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn encodes_like_the_python_tokenizer_and_decodes_back() {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 15);
    let tok = Tokenizer::qwen3_builtin().unwrap();
    for c in &cases {
        assert_eq!(
            tok.encode(&c.text, false).unwrap(),
            c.ids,
            "encoding {:?}",
            c.text
        );
        assert_eq!(
            tok.decode(&c.ids, false).unwrap(),
            c.text,
            "decoding {:?}",
            c.text
        );
    }
}

#[test]
fn streaming_decode_equals_whole_decode() {
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    let tok = Tokenizer::qwen3_builtin().unwrap();
    for c in &cases {
        let mut stream = tok.stream(false);
        let mut text = String::new();
        for &id in &c.ids {
            if let Some(piece) = stream.step(id).unwrap() {
                text.push_str(&piece);
            }
        }
        text.push_str(&stream.finish().unwrap().unwrap_or_default());
        assert_eq!(text, c.text, "streaming {:?}", c.text);
    }
}

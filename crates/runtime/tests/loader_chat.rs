//! Qwen3's chat template rendered by minijinja. Expected strings were produced by Python jinja2
//! 3.1 configured as transformers' `apply_chat_template` configures it (sandboxed, `trim_blocks`,
//! `lstrip_blocks`, `tojson` without ASCII escaping), from the same `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use braid_runtime::model::{ChatMessage, ChatTemplate, LoadError, Tokenizer};
use serde_json::json;

fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/qwen3-0.6b/tokenizer_config.json")
}

fn builtin() -> ChatTemplate {
    ChatTemplate::qwen3_builtin().expect("embedded template compiles")
}

#[test]
fn single_user_message() {
    let t = builtin();
    let msgs = [ChatMessage::user("Hello")];
    let plain = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(t.render(&msgs, true, None).expect("renders"), plain);
    // enable_thinking=true changes nothing; false appends an empty think block.
    assert_eq!(t.render(&msgs, true, Some(true)).expect("renders"), plain);
    assert_eq!(
        t.render(&msgs, true, Some(false)).expect("renders"),
        format!("{plain}<think>\n\n</think>\n\n")
    );
    // Without the generation prompt, no assistant header (and no think block).
    assert_eq!(
        t.render(&msgs, false, Some(false)).expect("renders"),
        "<|im_start|>user\nHello<|im_end|>\n"
    );
}

#[test]
fn system_prompt() {
    let msgs = [
        ChatMessage::system("You are X."),
        ChatMessage::user("Hello"),
    ];
    assert_eq!(
        builtin().render(&msgs, true, None).expect("renders"),
        "<|im_start|>system\nYou are X.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn earlier_assistant_turns_drop_their_reasoning() {
    // Exercises Python string methods (split, rstrip, lstrip, strip, startswith) via pycompat.
    let msgs = [
        ChatMessage::user("Hi"),
        ChatMessage::assistant("<think>\nreasoning\n</think>\n\nHello!"),
        ChatMessage::user("Bye"),
    ];
    assert_eq!(
        builtin().render(&msgs, true, None).expect("renders"),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn last_assistant_turn_keeps_its_reasoning() {
    let msgs = [
        ChatMessage::user("Hi"),
        ChatMessage::assistant("<think>\nhmm\n</think>\n\nHello!"),
    ];
    assert_eq!(
        builtin().render(&msgs, false, None).expect("renders"),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello!<|im_end|>\n"
    );
}

#[test]
fn consecutive_tool_messages_share_one_user_turn() {
    let msgs = [
        ChatMessage::user("Hi"),
        ChatMessage::new("tool", "42"),
        ChatMessage::new("tool", "43"),
    ];
    assert_eq!(
        builtin().render(&msgs, true, None).expect("renders"),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response>\n\
         <tool_response>\n43\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn file_and_builtin_agree_and_special_tokens_are_read() {
    let from_file = ChatTemplate::from_tokenizer_config(&config_path()).expect("file loads");
    let msgs = [ChatMessage::system("S"), ChatMessage::user("U")];
    assert_eq!(
        from_file.render(&msgs, true, Some(false)).expect("renders"),
        builtin().render(&msgs, true, Some(false)).expect("renders")
    );
    assert_eq!(from_file.special_token("eos_token"), Some("<|im_end|>"));
    assert_eq!(from_file.special_token("pad_token"), Some("<|endoftext|>"));
    // Qwen3 has `"bos_token": null`.
    assert_eq!(from_file.special_token("bos_token"), None);
}

#[test]
fn rendered_prompt_tokenizes_to_chat_ids() {
    let text = builtin()
        .render(&[ChatMessage::user("hello")], true, None)
        .expect("renders");
    let ids = Tokenizer::qwen3_builtin()
        .expect("tokenizer")
        .encode(&text, false)
        .expect("encodes");
    // <|im_start|> user \n hello <|im_end|> \n <|im_start|> assistant \n
    assert_eq!(ids.first(), Some(&151_644));
    assert!(ids.contains(&14_990), "{ids:?}");
    assert_eq!(ids.iter().filter(|&&i| i == 151_644).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == 151_645).count(), 1);
}

/// Writes a tokenizer_config.json with `value` and returns (dir, path).
fn write_config(value: &serde_json::Value) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokenizer_config.json");
    std::fs::write(&path, value.to_string()).expect("write");
    (dir, path)
}

#[test]
fn object_special_tokens_named_templates_and_raise_exception() {
    let template = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content | tojson }}{% endfor %}";
    let (_dir, path) = write_config(&json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "unused"},
            {"name": "default", "template": template},
        ],
    }));
    let t = ChatTemplate::from_tokenizer_config(&path).expect("loads");
    assert_eq!(t.special_token("bos_token"), Some("<s>"));
    assert_eq!(
        t.render(&[ChatMessage::user("a \"b\"")], false, None)
            .expect("renders"),
        "<s>[USER] \"a \\\"b\\\"\""
    );
    let err = t
        .render(&[ChatMessage::assistant("x")], false, None)
        .expect_err("raise_exception fails the render");
    assert!(matches!(err, LoadError::Template { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("first message must be from the user"), "{msg}");
}

#[test]
fn chat_template_jinja_next_to_the_config_is_used() {
    let (dir, path) = write_config(&json!({"eos_token": "</s>"}));
    let err = ChatTemplate::from_tokenizer_config(&path).expect_err("no template anywhere");
    assert!(matches!(err, LoadError::MissingField { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("`chat_template`"),
        "{msg}"
    );

    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ messages[0].content }}{{ eos_token }}",
    )
    .expect("write");
    let t = ChatTemplate::from_tokenizer_config(&path).expect("sibling template loads");
    assert_eq!(
        t.render(&[ChatMessage::user("hi")], false, None)
            .expect("renders"),
        "hi</s>"
    );
}

#[test]
fn template_errors_name_the_file_and_line() {
    let (_dir, path) = write_config(&json!({"chat_template": "line one\n{% if %}\n"}));
    let err = ChatTemplate::from_tokenizer_config(&path).expect_err("syntax error");
    assert!(matches!(err, LoadError::Template { .. }));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");

    let (_dir, path) = write_config(&json!({"chat_template": 7}));
    let err = ChatTemplate::from_tokenizer_config(&path).expect_err("not a string");
    assert!(matches!(err, LoadError::InvalidField { .. }));

    let (_dir, path) = write_config(&json!({"chat_template": "x"}));
    std::fs::write(&path, "{ not json").expect("write");
    let err = ChatTemplate::from_tokenizer_config(&path).expect_err("malformed");
    assert!(matches!(err, LoadError::Json { .. }));
    assert!(err.to_string().contains(&path.display().to_string()));

    let missing = path.with_file_name("absent.json");
    let err = ChatTemplate::from_tokenizer_config(&missing).expect_err("missing");
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(err.to_string().contains("absent.json"));
}

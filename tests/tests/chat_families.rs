//! Chat templates of the Llama 3.2 and Qwen2.5 Instruct models rendered by minijinja exactly as
//! transformers renders them (`strftime_now` and transformers' `tojson` included), and prompts
//! tokenized as transformers tokenizes them: plain text with the tokenizer's BOS, chat-rendered
//! text without a second one. Fixture: `scripts/make_chat_fixture.py` (`tests/fixtures/chat/`).

use std::collections::BTreeMap;
use std::path::Path;

use braid_runtime::load::LoadedModel;
use braid_runtime::model::jinja::Clock;
use braid_runtime::model::{ChatMessage, ChatTemplate, Tokenizer};
use braid_tests::fixture;
use serde::Deserialize;

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: String,
}

#[derive(Deserialize)]
struct Snippet {
    source: String,
    rendered: String,
}

#[derive(Deserialize)]
struct Tokenized {
    plain_prompt: String,
    plain_ids: Vec<u32>,
    chat_messages: Vec<Message>,
    chat_text: String,
    chat_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Cases {
    fixed_unix: i64,
    cases: Vec<Case>,
    snippets: Vec<Snippet>,
    llama_tokenizer: Tokenized,
}

fn cases() -> Cases {
    let text = std::fs::read_to_string(fixture("chat/cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn messages(m: &[Message]) -> Vec<ChatMessage> {
    m.iter()
        .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
        .collect()
}

fn template(name: &str, clock: Clock) -> ChatTemplate {
    let path = fixture(&format!("chat/{name}/tokenizer_config.json"));
    ChatTemplate::from_tokenizer_config(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_clock(clock)
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let c = cases();
    assert!(c.cases.len() >= 7);
    for (i, case) in c.cases.iter().enumerate() {
        let t = template(&case.template, Clock::Fixed(c.fixed_unix));
        let got = t
            .render(&messages(&case.messages), case.add_generation_prompt, None)
            .unwrap_or_else(|e| panic!("case {i} ({}): {e}", case.template));
        assert_eq!(got, case.rendered, "case {i} ({})", case.template);
    }
}

#[test]
fn tojson_and_strftime_now_behave_as_transformers_helpers() {
    let c = cases();
    for s in &c.snippets {
        let t = ChatTemplate::new(s.source.clone(), BTreeMap::new(), Path::new("<snippet>"))
            .unwrap_or_else(|e| panic!("{}: {e}", s.source))
            .with_clock(Clock::Fixed(c.fixed_unix));
        let got = t
            .render(&[], false, None)
            .unwrap_or_else(|e| panic!("{}: {e}", s.source));
        assert_eq!(got, s.rendered, "{}", s.source);
    }
}

#[test]
fn llama_template_dates_its_system_turn_from_the_clock() {
    let t = template("llama-3.2-instruct", Clock::System);
    let text = t
        .render(&[ChatMessage::user("Hello")], true, None)
        .expect("renders");
    let date = text
        .split("Today Date: ")
        .nth(1)
        .and_then(|rest| rest.split('\n').next())
        .expect("a date line");
    // `%d %b %Y`, e.g. `09 Mar 2025`, from strftime_now (the template's fallback is 26 Jul 2024).
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 3, "{date:?}");
    assert!(parts[0].len() == 2 && parts[0].bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(parts[1].len(), 3);
    assert!(parts[2].parse::<u32>().is_ok_and(|y| y >= 2025), "{date:?}");
}

#[test]
fn plain_prompts_get_one_bos_and_chat_text_none_added() {
    let c = cases().llama_tokenizer;
    let tok = Tokenizer::from_file(&fixture("chat/llama-3.2-instruct/tokenizer.json"))
        .expect("tokenizer");
    let bos = tok.token_id("<|begin_of_text|>").expect("bos");
    // transformers: tokenizer(text) runs the post-processor (TemplateProcessing adds the BOS).
    assert_eq!(tok.encode(&c.plain_prompt, true).unwrap(), c.plain_ids);
    assert_eq!(c.plain_ids[0], bos);
    // apply_chat_template(tokenize=True) encodes the rendered text without special tokens.
    let fixed = cases().fixed_unix;
    let text = template("llama-3.2-instruct", Clock::Fixed(fixed))
        .render(&messages(&c.chat_messages), true, None)
        .expect("renders");
    assert_eq!(text, c.chat_text);
    assert_eq!(tok.encode(&text, false).unwrap(), c.chat_ids);
    assert_eq!(c.chat_ids.iter().filter(|&&id| id == bos).count(), 1);

    // The same through the model directory, as `braid generate` reads a prompt.
    let dir = fixture("chat/llama-3.2-instruct");
    let model = LoadedModel::load(dir.to_str().unwrap()).expect("config-only model");
    let plain = model
        .prompt_tokens(&c.plain_prompt, false, false)
        .expect("plain");
    assert_eq!(plain, c.plain_ids);
    let chat = model
        .prompt_tokens(&c.chat_messages[0].content, true, false)
        .expect("chat");
    assert_eq!(chat[0], bos);
    assert_eq!(chat.iter().filter(|&&id| id == bos).count(), 1, "{chat:?}");
    // Everything after the (clock-dependent) date is the same.
    let tail = 15;
    assert_eq!(
        chat[chat.len() - tail..],
        c.chat_ids[c.chat_ids.len() - tail..]
    );
}

#[test]
fn llama_stop_tokens_come_from_the_config_and_the_tokenizer() {
    let dir = fixture("chat/llama-3.2-instruct");
    let model = LoadedModel::load(dir.to_str().unwrap()).expect("config-only model");
    let tok = model.tokenizer().expect("tokenizer");
    let id = |t: &str| tok.token_id(t).unwrap();
    let mut want = vec![id("<|end_of_text|>"), id("<|eom_id|>"), id("<|eot_id|>")];
    want.sort();
    assert_eq!(model.config.eos_token_ids.len(), 3);
    assert_eq!(model.stop_tokens(), want);
}

#[test]
fn qwen_prompts_get_no_bos() {
    // Qwen's tokenizer has no BOS in its post-processor: with or without special tokens the
    // plain prompt encodes the same.
    let model = LoadedModel::load("tiny").expect("tiny");
    let tok = model.tokenizer().expect("tokenizer");
    let plain = model.prompt_tokens("Hello", false, false).expect("plain");
    assert_eq!(plain, tok.encode("Hello", false).unwrap());
    assert_eq!(plain, vec![9707]);
}

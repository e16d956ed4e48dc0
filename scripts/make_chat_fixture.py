#!/usr/bin/env python3
"""Write tests/fixtures/chat/cases.json: chat templates rendered (and tokenized) by transformers itself.

For every case: the template directory under tests/fixtures/chat/ (its tokenizer_config.json holds the
template and the special tokens), the messages, add_generation_prompt, and the text transformers'
`render_jinja_template` (what `apply_chat_template(..., tokenize=False)` calls) returns, with the special
tokens of the config passed as apply_chat_template passes them and `strftime_now` reading a fixed instant
(FIXED_UNIX, UTC) instead of the clock. braid's minijinja rendering must give the same text
(tests/tests/chat_families.rs). Snippets exercise transformers' `tojson` the same way.

It also writes a tiny word-level tokenizer with Llama 3's special tokens and a TemplateProcessing
post-processor that prepends <|begin_of_text|> (as Llama 3's tokenizer.json does) into
tests/fixtures/chat/llama-3.2-instruct/tokenizer.json, with a config.json naming Llama-3.2-Instruct's stop
ids, and records transformers' ids for a plain prompt (add_special_tokens=True: one BOS) and a chat prompt
(apply_chat_template tokenizes without special tokens: the template's BOS only).

Usage (any machine with transformers >= 5.17 and jinja2):
  python3 scripts/make_chat_fixture.py
"""
import argparse
import datetime as dt
import json
import os

import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from transformers.utils import chat_template_utils

HERE = os.path.dirname(os.path.abspath(__file__))
CHAT = os.path.join(HERE, "..", "tests", "fixtures", "chat")
# 2025-03-09T12:00:00Z: a date unlike the Llama template's fallback ("26 Jul 2024"), with a padded day.
FIXED_UNIX = 1741521600

CASES = [
    ("llama-3.2-instruct", [{"role": "user", "content": "Hello"}], True),
    ("llama-3.2-instruct", [{"role": "user", "content": "Hello"}], False),
    ("llama-3.2-instruct", [
        {"role": "system", "content": "  You are a pirate.\n"},
        {"role": "user", "content": "Hi there "},
        {"role": "assistant", "content": "Arr!"},
        {"role": "user", "content": "Where is the treasure?"},
    ], True),
    # A tool result: its (string) content goes through tojson, quotes, `<` and non-ASCII included.
    ("llama-3.2-instruct", [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "tool", "content": "{\"temp\": 21, \"note\": \"<sunny> & dry\", \"city\": \"Tromsø\"}"},
    ], True),
    ("qwen2.5-instruct", [{"role": "user", "content": "Hello"}], True),
    ("qwen2.5-instruct", [
        {"role": "system", "content": "You are X."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ], True),
    ("qwen2.5-instruct", [
        {"role": "user", "content": "Look it up"},
        {"role": "tool", "content": "first"},
        {"role": "tool", "content": "second"},
    ], False),
]

DATA = ('{"b": [1, 2.5, none, true, 1e-06, 1e16], "a": {"s": "x<y>&\'\\"\\u00e9\\n", "e": {}, "l": []}, '
        '"z": "\\u263a"}')
SNIPPETS = [
    "{% set d = " + DATA + " %}{{ d | tojson }}",
    "{% set d = " + DATA + " %}{{ d | tojson(indent=2) }}",
    "{% set d = " + DATA + " %}{{ d | tojson(indent=4, sort_keys=true) }}",
    "{% set d = " + DATA + " %}{{ d | tojson(separators=(',', ':'), ensure_ascii=true) }}",
    "{{ strftime_now('%d %b %Y') }} | {{ strftime_now('%A %-d %B %y, %H:%M:%S %p, day %j') }}",
]


# Llama 3's special tokens keep their relative order (ids 0.. here, 128000.. in Llama 3).
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                 "<|eom_id|>", "<|eot_id|>"]
WORDS = ["[UNK]", "system", "user", "assistant", "Cutting", "Knowledge", "Date", ":", "December", "2023",
         "Today", "09", "Mar", "2025", "Hello", "world", "Hi", "there", "!", "How", "are", "you", "?"]
PLAIN_PROMPT = "Hello world! How are you?"
CHAT_PROMPT = [{"role": "user", "content": "Hi there! How are you?"}]


def write_llama_tokenizer(directory, chat_template):
    """The tiny Llama-3-like tokenizer, its config.json, and transformers' ids for two prompts."""
    vocab = {t: i for i, t in enumerate(LLAMA_SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA_SPECIAL])
    bos = LLAMA_SPECIAL[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])])
    path = os.path.join(directory, "tokenizer.json")
    tok.save(path)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": len(vocab), "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
              "bos_token_id": vocab[bos],
              "eos_token_id": [vocab["<|end_of_text|>"], vocab["<|eom_id|>"], vocab["<|eot_id|>"]]}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    hf = PreTrainedTokenizerFast(tokenizer_file=path, bos_token=bos, eos_token="<|eot_id|>")
    hf.chat_template = chat_template
    plain = hf(PLAIN_PROMPT)["input_ids"]
    chat = hf.apply_chat_template(CHAT_PROMPT, tokenize=True, add_generation_prompt=True)
    if hasattr(chat, "keys"):
        chat = chat["input_ids"]
    chat_text = hf.apply_chat_template(CHAT_PROMPT, tokenize=False, add_generation_prompt=True)
    assert list(chat).count(vocab[bos]) == 1, chat
    return {"plain_prompt": PLAIN_PROMPT, "plain_ids": list(plain), "chat_messages": CHAT_PROMPT,
            "chat_text": chat_text, "chat_ids": list(chat)}


class FixedDatetime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return dt.datetime.fromtimestamp(FIXED_UNIX, dt.timezone.utc).replace(tzinfo=None)


def special_tokens(config):
    """The special tokens apply_chat_template passes (bos/eos/unk/pad that are set)."""
    out = {}
    for key in ["bos_token", "eos_token", "unk_token", "pad_token"]:
        v = config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            out[key] = v
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(CHAT, "cases.json"))
    args = p.parse_args()
    # strftime_now is built when a template is compiled; compile after patching, with a cold cache.
    chat_template_utils.datetime = FixedDatetime
    for name in ["_compile_jinja_template", "_cached_compile_jinja_template"]:
        cached = getattr(chat_template_utils, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    cases = []
    for name, messages, add_generation_prompt in CASES:
        with open(os.path.join(CHAT, name, "tokenizer_config.json")) as f:
            config = json.load(f)
        rendered, _ = chat_template_utils.render_jinja_template(
            conversations=[messages], chat_template=config["chat_template"],
            add_generation_prompt=add_generation_prompt, **special_tokens(config))
        cases.append({"template": name, "messages": messages, "add_generation_prompt": add_generation_prompt,
                      "rendered": rendered[0]})
    snippets = []
    for source in SNIPPETS:
        compiled = chat_template_utils._compile_jinja_template(source)
        snippets.append({"source": source, "rendered": compiled.render()})
    llama_dir = os.path.join(CHAT, "llama-3.2-instruct")
    with open(os.path.join(llama_dir, "tokenizer_config.json")) as f:
        tokenized = write_llama_tokenizer(llama_dir, json.load(f)["chat_template"])
    out = {"transformers_version": transformers.__version__, "fixed_unix": FIXED_UNIX, "cases": cases,
           "snippets": snippets, "llama_tokenizer": tokenized}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {len(snippets)} snippets")


if __name__ == "__main__":
    main()

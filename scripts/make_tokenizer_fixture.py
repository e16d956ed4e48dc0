#!/usr/bin/env python3
"""Write tests/fixtures/tokenizer_cases.json: varied strings and their ids from the Python tokenizer.

The Rust tokenizer must agree with Hugging Face's Python tokenizer (the same `tokenizers` library that
transformers uses for Qwen3's fast tokenizer) on every case. Usage:
  python3 scripts/make_tokenizer_fixture.py [--tokenizer models/qwen3-0.6b/tokenizer.json]
"""
import argparse
import json
import os

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    "Hello",
    "Hello, world! How are you today?",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "多语言测试：你好，世界！",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.",
    "emoji: 🚀🔥👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "def main():\n    x = [i ** 2 for i in range(10)]\n    return {'sum': sum(x)}\n",
    "fn gemv(w: &[bf16], x: &[f32]) -> Vec<f32> { todo!() }",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<think>\n\n</think>\n\nThe answer is 42.",
    "numbers 1234567890 3.14159 -0.001 1e-6",
    "mixed Ünïcödé àccents and ß",
    "          ",
    "a" * 300,
    "URL https://example.com/path?q=1&r=2#frag and e-mail a.b@c.de",
    "",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default=os.path.join(HERE, "..", "models", "qwen3-0.6b", "tokenizer.json"))
    p.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "tokenizer_cases.json"))
    args = p.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in CASES]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()

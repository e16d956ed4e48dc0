#!/usr/bin/env python3
"""Make a random-weight decoder checkpoint (Qwen3, Qwen2/Qwen2.5 or Llama) and transformers' reference
logits for it.

Runs where torch and transformers are (the GPU machine; CPU works for small configs; transformers 5.17 and
5.24 both work). `--arch` picks the family and its default real-size config:
  qwen3  models/qwen3-0.6b/config.json     (Qwen3ForCausalLM)
  qwen2  models/qwen2.5-0.5b/config.json   (Qwen2ForCausalLM: q/k/v biases)
  llama  models/llama-3.2-1b/config.json   (LlamaForCausalLM: llama3 rope scaling, head_dim 64)
(`--config` takes any config.json of these families, e.g. models/smollm2-135m/config.json; the family then
follows its model_type.) Writes, into OUT:
  config.json, model.safetensors (bf16, Hugging Face layout), tokenizer files (when the vocabulary is the
  real one), and reference.safetensors with
    tokens       i32[T]     the teacher-forced input ids (a chat-template prompt, or random ids for a cut
                            vocabulary)
    logits_f32   f32[T, V]  transformers' float32 forward (the bf16 weights upcast): the oracle
    logits_bf16  f32[T, V]  transformers' bf16 forward on the same tokens: the bar braid is held to
    greedy       i32[G]     transformers' greedy continuation of the first `prompt_len` tokens (bf16)
  and metadata {arch, prompt_len, seed, transformers_version, torch_version}.

Random weights: matrices and embeddings std * N(0,1), norm weights 1 + norm_noise * N(0,1), biases
bias_std * N(0,1), all rounded to bf16 (the oracle computes with them upcast to f32).

The same command gives the same files (fixed seed). Examples (the committed fixtures):
  python3 scripts/make_checkpoint.py --out /tmp/qwen3-0.6b --positions 288
  python3 scripts/make_checkpoint.py --out tests/fixtures/tiny-qwen3 --layers 2 --hidden 128 \\
      --heads 4 --kv-heads 2 --head-dim 32 --intermediate 256 --vocab 512 --positions 16 --device cpu
  python3 scripts/make_checkpoint.py --arch llama --out tests/fixtures/tiny-llama --layers 2 --hidden 128 \\
      --heads 4 --kv-heads 1 --head-dim 32 --intermediate 256 --vocab 512 --positions 16 --device cpu \\
      --rope-scaling '{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32}'
  python3 scripts/make_checkpoint.py --arch qwen2 --out tests/fixtures/tiny-qwen2 --layers 2 --hidden 128 \\
      --heads 4 --kv-heads 2 --intermediate 256 --vocab 512 --positions 16 --untied --device cpu
"""
import argparse
import copy
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
# --arch: (config class, model class, default config directory); the key is the config's model_type.
ARCHS = {
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, os.path.join(MODELS, "qwen3-0.6b")),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, os.path.join(MODELS, "qwen2.5-0.5b")),
    "llama": (LlamaConfig, LlamaForCausalLM, os.path.join(MODELS, "llama-3.2-1b")),
}
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]
PROMPT = (
    "Explain, step by step and with examples, how a CUDA graph lowers the cost of launching many small "
    "kernels when a language model decodes one token at a time. Compare memory-bound and compute-bound "
    "work, say why batch-1 decoding reads every weight once per token, and estimate the tokens per second "
    "that the memory bandwidth of a modern GPU allows for a model of 0.6 billion parameters in bf16. "
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--arch", choices=sorted(ARCHS),
                   help="model family (default: the --config's model_type, else qwen3)")
    p.add_argument("--config", help="config.json to start from (default: the --arch's real-size config)")
    p.add_argument("--tokenizer-dir",
                   help="where tokenizer files are copied from (default: the config's directory)")
    for name in ["layers", "hidden", "heads", "kv-heads", "head-dim", "intermediate", "vocab", "max-position"]:
        p.add_argument(f"--{name}", type=int, help=f"override the config's {name}")
    p.add_argument("--untied", action="store_true", help="write a separate lm_head.weight")
    p.add_argument("--attention-bias", action="store_true",
                   help="set attention_bias (q/k/v/o biases in Qwen3 and Llama; Qwen2 always has q/k/v biases)")
    p.add_argument("--rope-scaling", type=json.loads, default=argparse.SUPPRESS,
                   help="replace the config's rope_scaling with this JSON object (or null)")
    p.add_argument("--positions", type=int, default=288, help="teacher-forced positions (T)")
    p.add_argument("--prompt-len", type=int, default=32, help="prefix length for the greedy continuation")
    p.add_argument("--greedy", type=int, default=32, help="greedy tokens to generate")
    p.add_argument("--std", type=float, default=0.02, help="std of the random matrices")
    p.add_argument("--norm-noise", type=float, default=0.1,
                   help="norm weights are 1 + norm_noise * N(0,1), so a mixed-up norm weight shows")
    p.add_argument("--bias-std", type=float, default=0.1,
                   help="biases are bias_std * N(0,1), large enough that a bias left out shows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if args.config is None:
        args.arch = args.arch or "qwen3"
        args.config = os.path.join(ARCHS[args.arch][2], "config.json")
    with open(args.config) as f:
        model_type = json.load(f).get("model_type")
    if model_type not in ARCHS:
        p.error(f"{args.config}: model_type {model_type!r} is none of {sorted(ARCHS)}")
    if args.arch is not None and args.arch != model_type:
        p.error(f"--arch {args.arch} but {args.config} has model_type {model_type!r}")
    args.arch = model_type
    if args.tokenizer_dir is None:
        args.tokenizer_dir = os.path.dirname(os.path.abspath(args.config))
    return args


def build_config(args):
    with open(args.config) as f:
        cfg = json.load(f)
    overrides = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
                 "kv-heads": "num_key_value_heads", "head-dim": "head_dim",
                 "intermediate": "intermediate_size", "vocab": "vocab_size",
                 "max-position": "max_position_embeddings"}
    for arg, key in overrides.items():
        v = getattr(args, arg.replace("-", "_"))
        if v is not None:
            cfg[key] = v
    if (args.hidden is not None or args.heads is not None) and args.head_dim is None and args.arch != "qwen3":
        # Qwen2 and Llama derive head_dim = hidden / heads; drop a published head_dim that no longer fits.
        cfg.pop("head_dim", None)
    if args.untied:
        cfg["tie_word_embeddings"] = False
    if args.attention_bias:
        cfg["attention_bias"] = True
    if hasattr(args, "rope_scaling"):
        cfg.pop("rope_parameters", None)
        cfg["rope_scaling"] = args.rope_scaling
    cfg.pop("transformers_version", None)
    return ARCHS[args.arch][0](**cfg)


def make_tokens(args, config):
    """Chat-template prompt ids when the vocabulary is the real one, else seeded random ids."""
    tok_path = os.path.join(args.tokenizer_dir, "tokenizer.json")
    if config.vocab_size >= 151669 and os.path.exists(tok_path):
        tok = transformers.AutoTokenizer.from_pretrained(args.tokenizer_dir)
        text = PROMPT * 8
        ids = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                      add_generation_prompt=True)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = list(ids)
        while len(ids) < args.positions:
            ids += ids
        return torch.tensor(ids[: args.positions], dtype=torch.long), True
    g = torch.Generator().manual_seed(args.seed + 1)
    return torch.randint(0, config.vocab_size, (args.positions,), generator=g), False


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    config = build_config(args)
    os.makedirs(args.out, exist_ok=True)
    with torch.device(args.device):
        model = ARCHS[args.arch][1](config)
    with torch.no_grad():
        g = torch.Generator(device=args.device).manual_seed(args.seed)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):  # q/k/v (Qwen2) or attention_bias projections
                p.copy_(args.bias_std * torch.randn(p.shape, generator=g, device=args.device))
            elif p.dim() == 1:  # rms_norm weights
                p.copy_(1.0 + args.norm_noise * torch.randn(p.shape, generator=g, device=args.device))
            else:
                p.copy_(args.std * torch.randn(p.shape, generator=g, device=args.device))
        # The weights are bf16 values; the oracle computes with them upcast to f32.
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.eval()
    # `.to(bfloat16)` casts every floating buffer, RoPE's `inv_freq` too; a checkpoint loaded with
    # from_pretrained keeps it f32, so keep the f32 values in the bf16 model as well.
    inv_freq = {n: b.clone() for n, b in model.named_buffers() if n.endswith("inv_freq")}
    model16 = copy.deepcopy(model).to(torch.bfloat16)
    for name, buf in inv_freq.items():
        owner = model16.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model16
        setattr(owner, name.rsplit(".", 1)[-1], buf)
    model16.config.dtype = "bfloat16"
    model16.save_pretrained(args.out, safe_serialization=True)

    tokens, real_vocab = make_tokens(args, config)
    if real_vocab:
        for f in TOKENIZER_FILES:
            shutil.copy(os.path.join(args.tokenizer_dir, f), os.path.join(args.out, f))
    ids = tokens.to(args.device)[None, :]
    with torch.no_grad():
        logits_bf16 = model16(ids).logits[0].float().cpu()
        prefix = ids[:, : args.prompt_len]
        greedy = model16.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=args.greedy,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)[0, args.prompt_len:]
        model.config._attn_implementation = "eager"
        logits_f32 = model(ids).logits[0].float().cpu()
    save_file(
        {"tokens": tokens.to(torch.int32).contiguous(), "logits_f32": logits_f32.contiguous(),
         "logits_bf16": logits_bf16.contiguous(), "greedy": greedy.to(torch.int32).cpu().contiguous()},
        os.path.join(args.out, "reference.safetensors"),
        metadata={"arch": args.arch, "prompt_len": str(args.prompt_len), "seed": str(args.seed),
                  "transformers_version": transformers.__version__, "torch_version": torch.__version__},
    )
    rel = ((logits_bf16 - logits_f32).norm() / logits_f32.norm()).item()
    top1 = (logits_bf16.argmax(-1) == logits_f32.argmax(-1)).float().mean().item()
    print(f"wrote {args.out} ({args.arch}): {sum(p.numel() for p in model.parameters())} parameters, T={len(tokens)}, "
          f"transformers bf16 vs f32: rel L2 {rel:.3e}, top-1 {100 * top1:.1f}%")


if __name__ == "__main__":
    main()

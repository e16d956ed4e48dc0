#!/usr/bin/env bash
# On-GPU checks of the Llama and Qwen2 families (issue #13, item 6), run on the H200 machine from the
# repo root with the release binary at target/release/braid (built on the development machine). Makes
# random-weight checkpoints of Llama-3.2-1B's, Qwen2.5-0.5B's and SmolLM2-135M's shapes with
# transformers, then:
#   - braid check --device cuda (captured graph, fused and unfused) on each: head_dim 64, GQA groups 4,
#     7 and 3, hidden 2048 / 896 / 576, llama3 rope scaling, q/k/v biases in the qkv GEMV's epilogue;
#   - braid check --device cuda on the committed CPU fixtures (head_dim 32 and 16, o_proj bias);
#   - braid bench on Llama-3.2-1B's shape (fused and unfused, graph and eager) and braid profile.
# Logs go to $OUT (or ./gpu-logs); summary.txt has every command and its result.
# Usage: bash scripts/gpu_families.sh [quick]   (quick: Llama-3.2-1B and Qwen2.5-0.5B checks + one bench)
source "$(dirname "$0")/gpu_env.sh"
status=0
run() { echo "\$ $*" | tee -a "$LOG/summary.txt"; "$@" 2>&1 | tee -a "$LOG/summary.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "exit $rc" | tee -a "$LOG/summary.txt"; status=1; }; }
# mk NAME ARGS...: a checkpoint with its transformers reference (288 positions), once.
mk() {
  local name=$1; shift
  [ -d "$CK/$name" ] || python3 scripts/make_checkpoint.py --out "$CK/$name" --positions 288 "$@" > "$LOG/make_$name.txt" 2>&1 \
    || { echo "make_checkpoint $name failed:"; tail -5 "$LOG/make_$name.txt"; status=1; }
  tail -1 "$LOG/make_$name.txt" | tee -a "$LOG/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG/summary.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$LOG/summary.txt"
mk llama1b --arch llama
mk qwen05 --arch qwen2
for m in llama1b qwen05; do
  run "$BRAID" check --model "$CK/$m" --device cuda --passes default
  run "$BRAID" check --model "$CK/$m" --device cuda --passes none
done
run "$BRAID" bench --model "$CK/llama1b" --device cuda --passes default --prompt-len 128 --gen 256
[ "${1:-}" = quick ] && exit $status
mk smol135 --config models/smollm2-135m/config.json
run "$BRAID" check --model "$CK/smol135" --device cuda --passes default
for f in tiny-llama tiny-qwen2 tiny-llama-bias tiny-qwen3; do
  run "$BRAID" check --model "tests/fixtures/$f" --device cuda --passes default
done
run "$BRAID" bench --model "$CK/llama1b" --device cuda --passes default --no-graph --prompt-len 128 --gen 256
run "$BRAID" bench --model "$CK/llama1b" --device cuda --passes none --prompt-len 128 --gen 256
run "$BRAID" bench --model "$CK/qwen05" --device cuda --passes default --prompt-len 128 --gen 256
run "$BRAID" profile --model "$CK/llama1b" --passes default --steps 128
run "$BRAID" plan --model "$CK/llama1b" --device-facts live
exit $status

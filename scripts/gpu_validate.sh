#!/usr/bin/env bash
# On-GPU validation and benchmarks of braid (run on the H200 machine from the repo root, with the
# release binary at target/release/braid). Makes random-weight checkpoints with transformers, then:
#   - braid check --device cuda (captured graph) on Qwen3-0.6B's shape and on Qwen3-1.7B's shape;
#   - braid bench: unfused/fused x eager/graph, 128-token prompt, 256 generated tokens, greedy;
#   - braid profile of the fused step.
# Logs go to $OUT (or ./gpu-logs). Usage: bash scripts/gpu_validate.sh [quick]
source "$(dirname "$0")/gpu_env.sh"
status=0
run() { echo "\$ $*" | tee -a "$LOG/summary.txt"; "$@" 2>&1 | tee -a "$LOG/summary.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "exit $rc" | tee -a "$LOG/summary.txt"; status=1; }; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG/summary.txt"
make_q06
tail -1 "$LOG/make_q06.txt" | tee -a "$LOG/summary.txt"
run "$BRAID" check --model "$CK/q06" --device cuda --passes default
run "$BRAID" check --model "$CK/q06" --device cuda --passes none
for passes in none default; do
  for mode in --no-graph ""; do
    run "$BRAID" bench --model "$CK/q06" --device cuda --passes $passes $mode --prompt-len 128 --gen 256
  done
done
run "$BRAID" profile --model "$CK/q06" --passes default --steps 128
run "$BRAID" generate --model "$CK/q06" --device cuda --chat --prompt "Why is the sky blue?" --max-tokens 24 --stats
[ "${1:-}" = quick ] && exit $status
[ -d "$CK/q17" ] || python3 scripts/make_checkpoint.py --out "$CK/q17" --positions 288 --layers 28 --hidden 2048 \
  --heads 16 --kv-heads 8 --head-dim 128 --intermediate 6144 --untied > "$LOG/make_q17.txt" 2>&1
tail -1 "$LOG/make_q17.txt" | tee -a "$LOG/summary.txt"
run "$BRAID" check --model "$CK/q17" --device cuda --passes default
run "$BRAID" bench --model "$CK/q17" --device cuda --passes default --prompt-len 128 --gen 256
exit $status

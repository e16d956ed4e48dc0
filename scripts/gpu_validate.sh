#!/usr/bin/env bash
# On-GPU validation and benchmarks of braid (run on the H200 machine from the repo root). Makes
# random-weight checkpoints with transformers, then, each step logged and summarised:
#   1. braid check --device cuda (captured graph) on Qwen3-0.6B's shape (fused and unfused) and on
#      Qwen3-1.7B's shape;
#   2. braid bench (fused graph, 128-token prompt, 256 tokens), alternating $BRAID and, when set,
#      $BRAID_OLD (the previous build) three times each: the A/B of a change, in one call;
#   3. braid bench-chain: the GEMV-chain benchmark (per-op graph vs persistent kernel vs read pass);
#   4. the GPU test binaries in $GPU_TESTS (gpu_ops, gpu_persistent, gpu_decode; built here with
#      `cargo test --release --no-run` and carried), when set;
#   5. braid profile of the fused step.
# Logs go to $OUT (or ./gpu-logs); the summary is printed last. Usage:
#   BRAID=path/braid [BRAID_OLD=path/old-braid] [GPU_TESTS=dir] bash scripts/gpu_validate.sh [quick]
source "$(dirname "$0")/gpu_env.sh"
status=0
S="$LOG/summary.txt"
run() { echo "\$ $*" >> "$S"; "$@" > "$LOG/last.txt" 2>&1; local rc=$?; cat "$LOG/last.txt" >> "$LOG/all.txt";
        tail -n "${TAIL:-6}" "$LOG/last.txt" >> "$S"; [ "$rc" = 0 ] || { echo "exit $rc" >> "$S"; status=1; }; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$S"
make_q06
tail -1 "$LOG/make_q06.txt" >> "$S"
TAIL=7 run "$BRAID" check --model "$CK/q06" --device cuda --passes default
TAIL=7 run "$BRAID" check --model "$CK/q06" --device cuda --passes none
for i in 1 2 3; do
  for b in "$BRAID" ${BRAID_OLD:+"$BRAID_OLD"}; do
    echo "== bench $b (round $i)" >> "$S"
    "$b" bench --model "$CK/q06" --device cuda --passes default --prompt-len 128 --gen 256 --json \
      > "$LOG/bench.json" 2>> "$LOG/all.txt" || { echo "bench failed" >> "$S"; status=1; }
    python3 - "$LOG/bench.json" >> "$S" <<'EOF'
import json, sys
t = open(sys.argv[1]).read().strip()
o = json.loads(t)
o = o[0] if isinstance(o, list) else o
g = lambda k: (o.get(k, {}) or {}).get("mean") if isinstance(o.get(k), dict) else o.get(k)
print(f"host {g('tok_per_s'):.1f} tok/s {g('us_per_token'):.1f} µs  device loop {g('device_loop_tok_per_s') or 0:.1f} tok/s  launches {o.get('launches_per_token')}")
EOF
  done
done
TAIL=8 run "$BRAID" bench-chain --model models/qwen3-0.6b --steps 200
if [ -n "${GPU_TESTS:-}" ]; then
  TAIL=12 run "$GPU_TESTS/gpu_persistent" --ignored --nocapture --test-threads=1
  TAIL=14 run "$GPU_TESTS/gpu_decode" --ignored --nocapture --test-threads=1
  TAIL=6 run "$GPU_TESTS/gpu_ops" --ignored --test-threads=1
fi
[ "${1:-}" = quick ] && { cat "$S"; exit $status; }
[ -d "$CK/q17" ] || python3 scripts/make_checkpoint.py --out "$CK/q17" --positions 288 --layers 28 --hidden 2048 \
  --heads 16 --kv-heads 8 --head-dim 128 --intermediate 6144 --untied > "$LOG/make_q17.txt" 2>&1
TAIL=7 run "$BRAID" check --model "$CK/q17" --device cuda --passes default
TAIL=12 run "$BRAID" profile --model "$CK/q06" --passes default --steps 128
cat "$S"
exit $status

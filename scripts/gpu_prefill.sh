#!/usr/bin/env bash
# Batched prefill on the GPU machine (repo root, release binary at $BRAID, default
# target/release/braid). Makes random-weight Qwen3-0.6B- and Qwen3-1.7B-shaped checkpoints with
# their transformers references (gpu_env.sh), then for each:
#   - braid check --device cuda: every position's logits from one batched prefill, the decode
#     steps' logits, and 64 greedy tokens after batched vs token-by-token prefill (the default);
#   - braid check --prefill token (the decode-step check alone, as before);
#   - braid bench: the decode lines as gpu_validate.sh prints them, then the prefill section
#     (TTFT and tok/s at 128 / 512 / 2,048 / 8,192 tokens, with the compute and memory floors
#     measured in the same run); the token-by-token ablation at 128 / 512 tokens;
#   - braid generate --stats with both prefill modes (the texts must be equal; a near-tie flip is
#     possible with random weights and is reported, not failed);
# and a few prefill knobs on 0.6B: the f32 prefill attention instead of the tensor-core one
# (BRAID_PREFILL_ATT=simt, checked too), chunks of 512, BRAID_SPLIT_IN_PLACE=0, GEMMs from 16 rows. If GPU_TEST_BINS names a
# directory holding test binaries built on the development machine (cargo test --release
# --no-run; copy target/release/deps/{gpu_ops,gpu_prefill,gpu_decode}-*), their ignored GPU tests
# run too. Logs go to $OUT (or ./gpu-logs); a table of the prefill rows is printed last.
# Usage: bash scripts/gpu_prefill.sh [quick]   (quick: 0.6B only)
source "$(dirname "$0")/gpu_env.sh"
status=0
run() { echo "\$ $*" | tee -a "$LOG/prefill_summary.txt"; "$@" 2>&1 | tee -a "$LOG/prefill_summary.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "exit $rc" | tee -a "$LOG/prefill_summary.txt"; status=1; }; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG/prefill_summary.txt"
make_q06
tail -1 "$LOG/make_q06.txt" | tee -a "$LOG/prefill_summary.txt"
models=("$CK/q06")
if [ "${1:-}" != quick ]; then
  [ -d "$CK/q17" ] || python3 scripts/make_checkpoint.py --out "$CK/q17" --positions 288 --layers 28 --hidden 2048 \
    --heads 16 --kv-heads 8 --head-dim 128 --intermediate 6144 --untied > "$LOG/make_q17.txt" 2>&1
  tail -1 "$LOG/make_q17.txt" | tee -a "$LOG/prefill_summary.txt"
  models+=("$CK/q17")
fi

table=()
for m in "${models[@]}"; do
  name=$(basename "$m")
  run "$BRAID" check --model "$m" --device cuda --passes default
  run "$BRAID" check --model "$m" --device cuda --passes default --prefill token
  out="$LOG/bench_prefill_$name.txt"
  "$BRAID" bench --model "$m" --device cuda --passes default --prompt-len 128 --gen 256 \
    --prefill-lens 128,512,2048,8192 2>&1 | tee "$out" | tee -a "$LOG/prefill_summary.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "bench failed" | tee -a "$LOG/prefill_summary.txt"; status=1; }
  while read -r line; do table+=("$(printf '%-5s batched %s' "$name" "$line")"); done < <(grep '^prefill [0-9]' "$out")
  out="$LOG/bench_prefill_token_$name.txt"
  "$BRAID" bench --model "$m" --device cuda --passes default --prompt-len 128 --gen 64 \
    --prefill token --prefill-lens 128,512 > "$out" 2>&1
  [ $? = 0 ] || { echo "token bench failed" | tee -a "$LOG/prefill_summary.txt"; status=1; }
  while read -r line; do table+=("$(printf '%-5s token   %s' "$name" "$line")"); done < <(grep '^prefill [0-9]' "$out")
  for mode in batched token; do
    "$BRAID" generate --model "$m" --device cuda --chat --prompt "Why is the sky blue? Answer in detail." \
      --max-tokens 64 --stats --prefill "$mode" > "$LOG/generate_${name}_$mode.txt" 2> "$LOG/generate_${name}_$mode.err"
    [ $? = 0 ] || { echo "generate --prefill $mode failed" | tee -a "$LOG/prefill_summary.txt"; status=1; }
    tail -1 "$LOG/generate_${name}_$mode.err" | tee -a "$LOG/prefill_summary.txt"
  done
  if cmp -s "$LOG/generate_${name}_batched.txt" "$LOG/generate_${name}_token.txt"; then
    echo "$name: generated text equal after batched and token-by-token prefill" | tee -a "$LOG/prefill_summary.txt"
  else
    echo "$name: generated texts DIFFER after batched vs token-by-token prefill (a near-tie flip?)" | tee -a "$LOG/prefill_summary.txt"
  fi
done

# Knobs, 0.6B: the f32 attention kernel, chunks of 512, the in-place q/k/v split off, GEMMs only
# from 16 rows.
run env BRAID_PREFILL_ATT=simt "$BRAID" check --model "$CK/q06" --device cuda --passes default
for v in "BRAID_PREFILL_ATT=simt" "--prefill-chunk 512" "BRAID_SPLIT_IN_PLACE=0" "BRAID_GEMM_MIN_ROWS=16"; do
  case "$v" in --*) env_set=""; flag="$v";; *) env_set="$v"; flag="";; esac
  out="$LOG/bench_prefill_knob_$(echo "$v" | tr ' =' '__').txt"
  env $env_set "$BRAID" bench --model "$CK/q06" --device cuda --passes default --prompt-len 128 --gen 32 \
    --prefill-lens 512,2048 $flag > "$out" 2>&1 || status=1
  while read -r line; do table+=("$(printf '%-5s %-24s %s' q06 "$v" "$line")"); done < <(grep '^prefill [0-9]' "$out")
done

if [ -n "${GPU_TEST_BINS:-}" ] && [ -d "$GPU_TEST_BINS" ]; then
  for t in "$GPU_TEST_BINS"/gpu_ops-* "$GPU_TEST_BINS"/gpu_prefill-* "$GPU_TEST_BINS"/gpu_decode-*; do
    [ -x "$t" ] || continue
    run "$t" --ignored --nocapture --test-threads=1
  done
fi

echo "== prefill rows" | tee -a "$LOG/prefill_summary.txt"
printf '%s\n' "${table[@]}" | tee "$LOG/prefill_table.txt" | tee -a "$LOG/prefill_summary.txt"
exit $status

#!/usr/bin/env bash
# Kernel-variant ablation on the GPU machine (repo root, release binary at $BRAID, default
# target/release/braid): one random-weight Qwen3-0.6B-shaped checkpoint, a correctness check of the
# default build, then `braid bench` (captured graph, 128-token prompt, 256 generated tokens) for each
# set of tuning knobs below (crates/backend-cuda/src/tuning.rs lists them). Prints one table line per
# variant; full logs go to $OUT (or ./gpu-logs). Usage: bash scripts/gpu_ablate.sh [VARIANT ...],
# where a VARIANT is a space-separated list of NAME=VALUE settings ("" is the default build).
source "$(dirname "$0")/gpu_env.sh"
make_q06
"$BRAID" check --model "$CK/q06" --device cuda --passes default 2>&1 | tee "$LOG/ablate_check.txt" | tail -4
if [ $# -gt 0 ]; then variants=("$@"); else
  variants=(""
    "BRAID_ATT_SPLITS=8"
    "BRAID_ATT_SPLITS=16"
    "BRAID_GEMV_KERNEL=staged"
    "BRAID_GEMV_ROWS2=0"
    "BRAID_L2_PREFETCH=2")
fi
table=()
for v in "${variants[@]}"; do
  out=$(env $v "$BRAID" bench --model "$CK/q06" --device cuda --passes default --prompt-len 128 --gen 256 2>&1)
  echo "== ${v:-default}" >> "$LOG/ablate_bench.txt"; echo "$out" >> "$LOG/ablate_bench.txt"
  host=$(echo "$out" | sed -n 's/^decode *\([0-9.]*\) tok\/s, \([0-9.]*\) µs.*/\1 tok\/s \2 µs/p')
  dev=$(echo "$out" | sed -n 's/^device loop *\([0-9.]*\) tok\/s, \([0-9.]*\) µs.*; \([0-9.]*%\) of roofline/\1 tok\/s \2 µs \3/p')
  table+=("$(printf '%-52s host %-24s device loop %s' "${v:-default}" "${host:-failed}" "${dev:-failed}")")
done
printf '%s\n' "${table[@]}" | tee "$LOG/ablate_table.txt"

# Shared set-up of the GPU-machine scripts (sourced, not run): CUDA paths, where logs go ($OUT when
# the device tool runs them, else ./gpu-logs), the braid binary and the checkpoint directory.
set -uo pipefail
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export LD_LIBRARY_PATH=$CUDA_HOME/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
LOG=${OUT:-./gpu-logs}; mkdir -p "$LOG"
BRAID=${BRAID:-./target/release/braid}
CK=${CK_DIR:-/tmp/braid-ck}
# Makes the random-weight Qwen3-0.6B-shaped checkpoint with its transformers reference, once.
make_q06() { [ -d "$CK/q06" ] || python3 scripts/make_checkpoint.py --out "$CK/q06" --positions 288 > "$LOG/make_q06.txt" 2>&1; }

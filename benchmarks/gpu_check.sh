#!/usr/bin/env bash
# The GPU check of the step-time work (benchmarks/README.md, "GPU check"): one command, under
# 8 minutes on one GPU. Prints and writes JSON (to $OUT if set, else benchmarks/results/gpu/):
#   stage_mfu.json  bf16 MFU of a 1.3B-shaped stage (d 1536, 12 heads, window 30x30, the 3
#                   blocks of a middle stage, a rank's 5,400 tokens), eager and torch.compile,
#                   against the GEMM rate measured in the same run and the card's peak; the
#                   SDPA kernel that ran; peak device memory against the layout planner
#   noise.json      keyed noise of one 1.3B rank, one 40B rank and the whole field on the device
#   throughput.json serial training steps of the tiny/small cases, bf16
# Usage: bash benchmarks/gpu_check.sh        (from the repository root, torch with CUDA installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=${OUT:-benchmarks/results/gpu}
mkdir -p "$DEST"
export DS_ACCELERATOR=cuda
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device (torch.cuda.is_available() is False)"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PYEOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true
echo "== 1.3B-shaped stage: bf16, eager and compiled"
timeout 330 "$PY" benchmarks/stage_mfu.py --device cuda --precision bf16 --steps 10 --warmup 3 \
    --json "$DEST/stage_mfu.json" || echo "stage_mfu.py failed (rc $?)"
echo "== keyed noise on the device"
timeout 60 "$PY" benchmarks/noise.py --device cuda --json "$DEST/noise.json" || echo "noise.py failed (rc $?)"
echo "== serial training throughput, bf16"
timeout 60 "$PY" benchmarks/throughput.py --device cuda --precision bf16 --out "$DEST/throughput.json" \
    || echo "throughput.py failed (rc $?)"
ls -l "$DEST"

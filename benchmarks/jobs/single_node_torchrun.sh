#!/bin/bash
# One node, torchrun: 4 ranks as pp 2 x sp 2 (gloo on CPU, nccl on CUDA).
set -euo pipefail
torchrun --standalone --nproc-per-node=4 -m aeris.cli train --config tiny swipe.pp=2 swipe.sp=2 "$@"

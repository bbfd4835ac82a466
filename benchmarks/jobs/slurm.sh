#!/bin/bash
# SWiPe under Slurm (srun). swipe.launch reads SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID
# and takes the first host of SLURM_STEP_NODELIST as the rendezvous (port 29500 + job id % 10000,
# or MASTER_PORT). 8 nodes x 4 GPUs = 32 ranks = dp 2 x pp 4 x sp 4.
#SBATCH -J aeris-swipe
#SBATCH -N 8
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH -t 01:00:00
set -euo pipefail
source .venv/bin/activate
srun --cpu-bind=cores python -m aeris.cli train --config aeris-1.3b-6h \
    swipe.dp=2 swipe.pp=4 swipe.sp=4 train.precision=bf16 \
    data.path=/path/to/era5/wb2-0.25deg.zarr train.out_dir=runs/slurm

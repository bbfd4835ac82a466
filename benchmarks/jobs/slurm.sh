#!/bin/bash
# SWiPe under Slurm (srun). swipe.launch reads SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID
# and takes the first host of SLURM_STEP_NODELIST as the rendezvous (port 29500 + job id % 10000,
# or MASTER_PORT). 8 nodes x 4 GPUs = 32 ranks = dp 2 x pp 4 x sp 4.
# Long runs: 120 s before the time limit Slurm sends SIGUSR1 to every task; the trainer finishes
# the step, writes a checkpoint and exits 0, and the job requeues itself until train.steps is
# reached (each run resumes from the newest checkpoint). See README, "Running long jobs".
#SBATCH -J aeris-swipe
#SBATCH -N 8
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH -t 01:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail
source .venv/bin/activate
OUT=runs/slurm
STEPS=100000
srun --cpu-bind=cores python -m aeris.cli train --config aeris-1.3b-6h \
    swipe.dp=2 swipe.pp=4 swipe.sp=4 train.precision=bf16 train.steps=${STEPS} \
    data.path=/path/to/era5/wb2-0.25deg.zarr train.out_dir=${OUT}
# not at the last step yet (stopped by the signal): run again from the checkpoint
if ! grep -q "\"step\": ${STEPS}," "${OUT}/metrics.jsonl"; then
    scontrol requeue "${SLURM_JOB_ID}"
fi

#!/bin/bash
# AERIS 1.3B (6 h) on Aurora (Intel GPU tiles, PBS + PALS mpiexec).
# Mesh of the original science run: pp 10 x sp 12 x window 4x4 = 1,920 tiles per replica
# (160 nodes x 12 tiles); dp replicas multiply that. swipe.launch reads the PALS variables,
# broadcasts the rendezvous with mpi4py and picks xccl/ccl for XPU devices.
# Long runs: train.max_wall_minutes stops the run cleanly (step finished, checkpoint written,
# exit 0) before the 6 h walltime; the script then submits itself again until train.steps is
# reached, each run resuming from the newest checkpoint (README, "Running long jobs"). PBS also
# sends SIGTERM before killing a job at its walltime; the trainer handles it the same way.
#PBS -N aeris-1.3b-6h
#PBS -l select=160
#PBS -l walltime=06:00:00
#PBS -l filesystems=flare:home
#PBS -q prod
#PBS -A YOUR_PROJECT
set -euo pipefail
cd "${PBS_O_WORKDIR}"
source .venv/bin/activate            # built with `make install` (plus intel-extension-for-pytorch on XPU)
NNODES=$(wc -l < "${PBS_NODEFILE}")
PPN=12                               # GPU tiles per Aurora node
export OMP_NUM_THREADS=8
OUT=runs/aeris-1.3b-6h
STEPS=100000
export SWIPE_NET_INTERFACE=hsn0       # rank 0 publishes this interface's address for the rendezvous
mpiexec -n $((NNODES * PPN)) --ppn ${PPN} --cpu-bind depth -d 8 \
    python -m aeris.cli train --config aeris-1.3b-6h \
        swipe.pp=10 swipe.sp=12 swipe.wy=4 swipe.wx=4 swipe.dp=$((NNODES * PPN / 1920)) \
        train.steps=${STEPS} train.max_wall_minutes=345 \
        data.path=/flare/YOUR_PROJECT/era5/wb2-0.25deg.zarr train.out_dir=${OUT}
# stopped before the last step: queue the next run (it resumes from the checkpoint)
if ! grep -q "\"step\": ${STEPS}," "${OUT}/metrics.jsonl"; then
    qsub "${PBS_O_WORKDIR}/benchmarks/jobs/aurora_pbs.sh"
fi

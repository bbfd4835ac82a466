#!/bin/bash
# AERIS 1.3B (6 h) on Aurora (Intel GPU tiles, PBS + PALS mpiexec).
# Mesh of the original science run: pp 10 x sp 12 x window 4x4 = 1,920 tiles per replica
# (160 nodes x 12 tiles); dp replicas multiply that. swipe.launch reads the PALS variables,
# broadcasts the rendezvous with mpi4py and picks xccl/ccl for XPU devices.
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
mpiexec -n $((NNODES * PPN)) --ppn ${PPN} --cpu-bind depth -d 8 \
    python -m aeris.cli train --config aeris-1.3b-6h \
        swipe.pp=10 swipe.sp=12 swipe.wy=4 swipe.wx=4 swipe.dp=$((NNODES * PPN / 1920)) \
        data.path=/flare/YOUR_PROJECT/era5/wb2-0.25deg.zarr train.out_dir=runs/aeris-1.3b-6h

#!/bin/bash
# A small SWiPe run on Polaris (4 x A100 per node, PBS + PALS mpiexec, nccl).
#PBS -N aeris-swipe
#PBS -l select=8:system=polaris
#PBS -l walltime=01:00:00
#PBS -l filesystems=home:eagle
#PBS -q prod
#PBS -A YOUR_PROJECT
set -euo pipefail
cd "${PBS_O_WORKDIR}"
source .venv/bin/activate
NNODES=$(wc -l < "${PBS_NODEFILE}")
PPN=4
mpiexec -n $((NNODES * PPN)) --ppn ${PPN} --depth 8 --cpu-bind depth \
    python -m aeris.cli train --config aeris-1.3b-6h \
        swipe.pp=4 swipe.sp=4 swipe.wy=2 swipe.wx=1 train.precision=bf16 \
        data.path=/eagle/YOUR_PROJECT/era5/wb2-0.25deg.zarr train.out_dir=runs/polaris

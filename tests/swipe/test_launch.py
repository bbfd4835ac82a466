"""Launch bootstrap: environment parsing per launcher (pure), and real mpiexec / torchrun runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from swipe.launch import (LaunchError, backend_for_device, detect_launcher, init_distributed,
                          mpi_local_rank, parse_hostlist, pick_device, shutdown, slurm_env,
                          torchrun_env)
from tests.support import REPO

BIN = Path(sys.executable).parent
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SWIPE_LAUNCHER",
               "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "PALS_RANKID",
               "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")


# ---- hostlists ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,hosts", [
    ("nid001", ["nid001"]),
    ("nid[001-004,007]", ["nid001", "nid002", "nid003", "nid004", "nid007"]),
    ("nid[008-011]", ["nid008", "nid009", "nid010", "nid011"]),
    ("x1000c0s[0-1]b0n0,login2", ["x1000c0s0b0n0", "x1000c0s1b0n0", "login2"]),
    ("r[1-2]n[07-08]", ["r1n07", "r1n08", "r2n07", "r2n08"]),
    ("gpu-[9-10],cpu[3]", ["gpu-9", "gpu-10", "cpu3"]),
    ("a[1,3],b", ["a1", "a3", "b"]),
])
def test_parse_hostlist(spec, hosts):
    assert parse_hostlist(spec) == hosts


@pytest.mark.parametrize("spec,match", [("nid[1-3", "unbalanced"), ("nid1-3]", "unbalanced"),
                                        ("nid[5-2]", "descending"), ("nid[a-b]", "bad range"),
                                        ("", "empty")])
def test_parse_hostlist_errors(spec, match):
    with pytest.raises(LaunchError, match=match):
        parse_hostlist(spec)


# ---- detection and parsing ------------------------------------------------------------------
TORCHRUN = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234",
            "TORCHELASTIC_RUN_ID": "x"}
MPICH = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
OPENMPI = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
PALS = {"PALS_RANKID": "13", "PALS_LOCAL_RANKID": "1", "PALS_NODEID": "1", "PBS_JOBID": "42.aurora"}
SRUN = {"SLURM_PROCID": "5", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "nid[004-005]", "SLURM_NODELIST": "nid[001-009]",
        "SLURM_JOB_ID": "123456"}
SBATCH_ONLY = {"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_NODELIST": "nid[001-004]", "SLURM_JOB_ID": "7"}


@pytest.mark.parametrize("env,launcher", [
    (TORCHRUN, "torchrun"), (MPICH, "mpi"), (OPENMPI, "mpi"), (PALS, "mpi"), (SRUN, "slurm"),
    (SBATCH_ONLY, "single"), ({}, "single"),
    ({**SBATCH_ONLY, **MPICH}, "mpi"),       # mpiexec inside an allocation: MPI, not Slurm
    ({**SRUN, **TORCHRUN}, "torchrun"),      # torchrun inside srun
    ({**TORCHRUN, "SWIPE_LAUNCHER": "single"}, "single"),
])
def test_detect_launcher(env, launcher):
    assert detect_launcher(env) == launcher


def test_forced_launcher_must_be_known():
    with pytest.raises(LaunchError, match="SWIPE_LAUNCHER='pbs'"):
        detect_launcher({"SWIPE_LAUNCHER": "pbs"})


def test_torchrun_env():
    le = torchrun_env(TORCHRUN)
    assert (le.launcher, le.rank, le.world_size, le.local_rank, le.master_addr, le.master_port) == \
        ("torchrun", 3, 8, 1, "h0", 1234)
    with pytest.raises(LaunchError, match="MASTER_ADDR/MASTER_PORT are not"):
        torchrun_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match="RANK=4 is not in"):
        torchrun_env({**TORCHRUN, "RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(LaunchError, match="MASTER_PORT=0 is not a usable port"):
        torchrun_env({**TORCHRUN, "MASTER_PORT": "0"})
    with pytest.raises(LaunchError, match="WORLD_SIZE='two'"):
        torchrun_env({**TORCHRUN, "WORLD_SIZE": "two"})


def test_slurm_env():
    le = slurm_env(SRUN)
    # step values win over the allocation's; master = first host of the step's node list
    assert (le.rank, le.world_size, le.local_rank, le.master_addr) == (5, 8, 1, "nid004")
    assert le.master_port == 29500 + 123456 % 10000
    le = slurm_env({**SRUN, "MASTER_PORT": "4000", "MASTER_ADDR": "hsn0"})
    assert (le.master_addr, le.master_port) == ("hsn0", 4000)
    no_step = {k: v for k, v in SRUN.items() if not k.startswith("SLURM_STEP_")}
    le = slurm_env(no_step)
    assert (le.world_size, le.master_addr) == (16, "nid001")
    with pytest.raises(LaunchError, match="cannot find the master host"):
        slurm_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    with pytest.raises(LaunchError, match="SLURM_PROCID=9"):
        slurm_env({**SRUN, "SLURM_PROCID": "9"})


@pytest.mark.parametrize("env,local", [(MPICH, 1), (OPENMPI, 1), (PALS, 1), ({**PALS, "MPI_LOCALRANKID": "0"}, 1),
                                       ({"PMI_RANK": "0"}, None)])
def test_mpi_local_rank(env, local):
    assert mpi_local_rank(env) == local


def test_backend_for_device():
    assert backend_for_device("cuda") == "nccl"
    assert backend_for_device("cpu") == "gloo"
    assert backend_for_device("xpu", available=lambda b: b in ("xccl", "ccl")) == "xccl"
    assert backend_for_device("xpu", available=lambda b: b == "ccl") == "ccl"
    with pytest.raises(LaunchError, match="neither the 'xccl'"):
        backend_for_device("xpu", available=lambda b: False)
    with pytest.raises(LaunchError, match="no distributed backend known for device type 'mps'"):
        backend_for_device("mps")


def test_pick_device_cpu():
    assert pick_device(3, "cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device(0) == torch.device("cpu")
        with pytest.raises(LaunchError, match="no such device"):
            pick_device(0, "cuda")


def test_single_process(monkeypatch):
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SWIPE_LAUNCHER", "single")
    assert not dist.is_initialized()
    try:
        info = init_distributed(device="cpu")
        assert (info.rank, info.world_size, info.local_rank, info.backend, info.launcher) == (0, 1, 0, "gloo", "single")
        t = torch.tensor([2.0])
        dist.all_reduce(t)
        assert t.item() == 2.0
        assert init_distributed(device="cpu").launcher == "existing"  # idempotent
    finally:
        shutdown()
    assert not dist.is_initialized()


# ---- real launches --------------------------------------------------------------------------
SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
from swipe.launch import init_distributed, shutdown
info = init_distributed()
t = torch.tensor([info.rank + 1.0])
dist.all_reduce(t)
out = dict(rank=info.rank, world=info.world_size, local=info.local_rank, backend=info.backend,
           launcher=info.launcher, device=str(info.device), sum=t.item(),
           env_rank=os.environ["RANK"], env_world=os.environ["WORLD_SIZE"])
with open(os.path.join(sys.argv[1], f"r{info.rank}.json"), "w") as f:
    json.dump(out, f)
shutdown()
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run_launch(cmd: list[str], out: Path) -> list[dict]:
    proc = subprocess.run(cmd, env=_clean_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return [json.loads((out / f"r{r}.json").read_text()) for r in range(2)]


@pytest.mark.multiproc
@pytest.mark.skipif(not (BIN / "mpiexec").exists(), reason="no mpiexec beside the Python interpreter")
def test_mpiexec_two_ranks(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    res = _run_launch([str(BIN / "mpiexec"), "-n", "2", sys.executable, str(script), str(tmp_path)], tmp_path)
    for r, o in enumerate(res):
        assert (o["rank"], o["world"], o["local"], o["launcher"], o["backend"], o["sum"]) == \
            (r, 2, r, "mpi", "gloo", 3.0)
        assert (o["env_rank"], o["env_world"]) == (str(r), "2")  # exported for other libraries


@pytest.mark.multiproc
def test_torchrun_two_ranks(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(tmp_path)]
    res = _run_launch(cmd, tmp_path)
    for r, o in enumerate(res):
        assert (o["rank"], o["world"], o["local"], o["launcher"], o["backend"], o["sum"]) == \
            (r, 2, r, "torchrun", "gloo", 3.0)


# ---- rendezvous address -----------------------------------------------------------------------
def test_rendezvous_address_order():
    from swipe.launch import interface_address, rendezvous_address
    assert rendezvous_address({"MASTER_ADDR": "10.1.2.3", "SWIPE_NET_INTERFACE": "lo"}) == "10.1.2.3"
    assert rendezvous_address({"SWIPE_NET_INTERFACE": "lo"}) == "127.0.0.1" == interface_address("lo")
    import socket
    assert rendezvous_address({}) == socket.gethostname()
    with pytest.raises(LaunchError, match="network interface 'nosuch0' not found"):
        rendezvous_address({"SWIPE_NET_INTERFACE": "nosuch0"})

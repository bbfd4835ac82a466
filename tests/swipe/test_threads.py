"""Threads per rank from the launcher's variables (pure: fake environments and core counts),
and the fork guard (a forked process keeps one thread)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from swipe.launch import configure_threads, set_threads, threads_per_rank


@pytest.mark.parametrize("env,cores,node,requested,want", [
    # a config value is taken as is, even above the cores
    ({"OMP_NUM_THREADS": "2"}, 4, 4, 6, 6),
    # one process: OpenMP's per-process value, or all its cores
    ({"OMP_NUM_THREADS": "3"}, 8, 8, 0, 3),
    ({}, 8, 8, 0, 8),
    ({"OMP_NUM_THREADS": "4,2"}, 8, 8, 0, 4),          # a nesting list: the outer level
    ({"OMP_NUM_THREADS": "lots"}, 8, 8, 0, 8),         # not a number: ignored
    # torchrun with 4 ranks sets OMP_NUM_THREADS=1
    ({"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "4"}, 16, 16, 0, 1),
    # no variable: the node's cores shared by its 4 ranks
    ({"LOCAL_WORLD_SIZE": "4"}, 16, 16, 0, 4),
    # the demo: OMP_NUM_THREADS=2 from the Makefile, 4 unbound ranks on 2 cores -> 1 each
    ({"OMP_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "4"}, 2, 2, 0, 1),
    # Aurora: 12 ranks bound to 8 cores each, OMP_NUM_THREADS=8 from the job script
    ({"OMP_NUM_THREADS": "8", "PALS_LOCAL_SIZE": "12", "PBS_JOBID": "1.aurora", "NCPUS": "208"}, 8, 208, 0, 8),
    # more threads asked than this (bound) process may use: capped at its cores
    ({"OMP_NUM_THREADS": "16"}, 4, 64, 0, 4),
    # Slurm: cores of one task
    ({"SLURM_CPUS_PER_TASK": "7", "SLURM_NTASKS_PER_NODE": "8"}, 7, 56, 0, 7),
    ({"SLURM_CPUS_PER_TASK": "7", "SLURM_NTASKS_PER_NODE": "8(x2)"}, 7, 56, 0, 7),
    # PBS sets OMP_NUM_THREADS = NCPUS of the whole chunk: divided by the local ranks
    ({"PBS_JOBID": "9.polaris", "NCPUS": "64", "OMP_NUM_THREADS": "64", "PALS_LOCAL_SIZE": "4"}, 64, 64, 0, 16),
    ({"PBS_JOBID": "9.polaris", "NCPUS": "64", "PALS_LOCAL_SIZE": "4"}, 64, 64, 0, 16),
    # never below one
    ({"LOCAL_WORLD_SIZE": "8"}, 2, 2, 0, 1),
])
def test_threads_per_rank(env, cores, node, requested, want):
    n, source = threads_per_rank(env, cores=cores, node_cores=node, requested=requested)
    assert n == want, source
    assert source


def test_sources_are_named():
    assert threads_per_rank({}, cores=4, node_cores=4, requested=2)[1] == "config"
    assert "OMP_NUM_THREADS=3" in threads_per_rank({"OMP_NUM_THREADS": "3"}, cores=8, node_cores=8)[1]
    assert "capped" in threads_per_rank({"OMP_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "4"}, cores=2,
                                        node_cores=2)[1]
    assert "PBS NCPUS=64" in threads_per_rank({"PBS_JOBID": "1", "NCPUS": "64"}, cores=64, node_cores=64)[1]


def test_defaults_read_this_process(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for k in ("SLURM_CPUS_PER_TASK", "PBS_JOBID", "NCPUS", "LOCAL_WORLD_SIZE", "PALS_LOCAL_SIZE",
              "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(k, raising=False)
    import os
    n, _ = threads_per_rank()
    assert n == len(os.sched_getaffinity(0))


def test_set_threads():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(2)  # a second call: intra-op threads change, inter-op ones stay as set
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_configure_threads_sets_and_logs(caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger="swipe.launch"):
            assert configure_threads(1) == 1
            assert torch.get_num_threads() == 1
            assert configure_threads(0, env={"OMP_NUM_THREADS": "1"}) == 1
        assert "threads: 1 per rank (config)" in caplog.text
        assert "threads: 1 per rank (OMP_NUM_THREADS=1)" in caplog.text
    finally:
        torch.set_num_threads(before)


_FORK_SCRIPT = r"""
import os, sys, torch
from swipe.launch import configure_threads
torch.set_num_threads(2)
b = torch.randn(1 << 20)
for _ in range(10):
    (b * 2).exp_().sum()        # start OpenMP's pool on 2 threads (elementwise: no MKL)
torch.set_num_threads(1)        # going back to one does not make a fork safe
pid = os.fork()
if pid == 0:
    n = configure_threads(2)
    for _ in range(50):
        (b * 2).exp_().sum()    # hangs here if the child took 2 threads
    os._exit(10 + n)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    # a fresh interpreter with only what it needs: with the full suite's environment (what
    # earlier tests left in it) this script's forked child hung twice, never when run alone
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "GLIBC_TUNABLES")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_process_keeps_one_thread():
    """A rank forked after multi-threaded work gets 1 thread: with 2, GNU OpenMP's first
    parallel region in the child never returns (the run would time out)."""
    proc = subprocess.Popen([sys.executable, "-c", _FORK_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_clean_env(OMP_NUM_THREADS="2"), start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked child too, which would spin on
        _, err = proc.communicate()
        pytest.fail(f"the forked process hung in its first parallel region; its stderr: {err!r}")
    assert proc.returncode == 11, err
    assert "1 instead of 2" in err


def test_fork_safe_threads_outside_a_fork():
    from swipe.launch import fork_safe_threads
    if getattr(__import__("swipe.launch").launch, "_forked"):
        pytest.skip("this test process was itself forked")
    assert fork_safe_threads(4) == (4, None)

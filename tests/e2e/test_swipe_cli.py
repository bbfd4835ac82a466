"""`aeris train` on a SWiPe mesh, end to end through the real launchers (CPU, gloo).

Tiny store (9x16 source grid -> 8x16 model grid, window 4x4, 8 channels), d = 16, 2 blocks,
2 heads. The distributed losses must equal the serial Trainer's with the same global batch
(train.micro_batch x grad_accum x dp), step by step, and a run resumes under another mesh,
another launcher and finally in the serial Trainer (through export_serial_checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.stores import make_dataset, write
from tests.support import REPO

ROOT = REPO
VENV_BIN = Path(sys.executable).parent


def overrides(tmp: Path, out: str, steps: int) -> list[str]:
    return [
        f"data.path={tmp / 'era5.zarr'}",
        "data.surface=[2m_temperature,10m_u_component_of_wind,10m_v_component_of_wind,mean_sea_level_pressure]",
        "data.atmospheric=[geopotential,temperature]", "data.levels=[500,850]",
        "data.train_period=[2020-08-01,2020-08-02]", "data.val_period=[2020-08-03,2020-08-03]",
        "data.test_period=[2020-08-04,2020-08-04]",
        "model.dim=16", "model.depth=2", "model.heads=2", "model.mlp_hidden=32", "model.window=[4,4]",
        f"train.out_dir={tmp / out}", f"train.steps={steps}", "train.grad_accum=2", "train.val_every=0",
        "train.progress=false", "train.log_every=1", "train.ckpt_every=1", "train.keep_checkpoints=0",
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from aeris.config import load_config
    from aeris.data.prepared import prepare

    tmp = tmp_path_factory.mktemp("swipe_cli")
    write(make_dataset(n_lat=9, n_lon=16, n_time=16, levels=(500, 850)), tmp / "era5.zarr")
    cfg = load_config("tiny", overrides(tmp, "x", 1))
    prepare(cfg.data, cfg.model.window, progress=False)
    return tmp


@pytest.fixture(scope="module")
def serial_losses(store) -> list[float]:
    """Losses of the first 3 serial steps (micro_batch 1 x grad_accum 2 = the global batch)."""
    from aeris.config import load_config
    from aeris.train.trainer import Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tr = Trainer(load_config("tiny", overrides(store, "serial", 3)), resume=False)
        return [tr.train_step().loss for _ in range(3)]
    finally:
        torch.set_num_threads(threads)


def launch(cmd: list[str], tmp: Path, out: str, steps: int, mesh: dict[str, int]) -> str:
    args = [*cmd, "-m", "aeris.cli", "train", "--config", "tiny", *overrides(tmp, out, steps),
            *(f"swipe.{k}={v}" for k, v in mesh.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    assert p.returncode == 0, f"{' '.join(args[:6])} ... failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


def metrics(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_torchrun_pp2_wy2_sp2(store, serial_losses):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "8"]
    out = launch(torchrun, store, "tr", 2, {"pp": 2, "wy": 2, "sp": 2})
    assert "mesh dp=1 pp=2 wy=2 wx=1 sp=2 = 8 ranks" in out
    assert "per rank: 4 windows x 8 tokens = 32 tokens" in out
    m = metrics(store / "tr")
    for step in (1, 2):
        assert m[step]["loss"] == pytest.approx(serial_losses[step - 1], rel=1e-5)
        assert m[step]["samples_per_s"] > 0 and m[step]["tflops"] > 0
        # Ulysses moves bytes on every rank, the pipeline sends cross the stage boundary,
        # the gradients are reduce-scattered over the weight group (4 ranks per stage) and the
        # parameters gathered from their shards; only scalars are all-reduced (loss, norm)
        assert m[step]["bytes_all_to_all_all"] > 0 and m[step]["bytes_p2p_all"] > 0
        assert m[step]["bytes_reduce_scatter_all"] > 0 and m[step]["bytes_all_gather_all"] > 0
        assert 0 < m[step]["bytes_all_reduce_all"] < 64 * 8  # a few float64 scalars per rank
    assert (store / "tr" / "checkpoints" / "step_00000002" / "run.json").exists()


def test_mpiexec_resume_other_mesh_then_serial(store, serial_losses):
    from aeris.config import load_config
    import shutil

    from aeris.train.trainer import Trainer

    mpiexec = [str(VENV_BIN / "mpiexec"), "-n", "4", sys.executable]
    launch(mpiexec, store, "mpi", 1, {"pp": 1, "wy": 2, "sp": 2})
    out = launch(mpiexec, store, "mpi", 2, {"pp": 2, "sp": 2})           # resume, another mesh
    assert "resumed from" in out and "step_00000001" in out
    m = metrics(store / "mpi")
    assert [m[s]["loss"] for s in (1, 2)] == pytest.approx(serial_losses[:2], rel=1e-5)
    # the serial Trainer continues the distributed run from its checkpoint (one format)
    cfg = load_config("tiny", overrides(store, "serial_resume", 3))
    shutil.copytree(store / "mpi" / "checkpoints", Path(cfg.train.out_dir) / "checkpoints")
    tr = Trainer(cfg, resume=True)
    assert tr.step == 2 and tr.samples_seen == 4
    assert tr.train_step().loss == pytest.approx(serial_losses[2], rel=1e-5)


def test_a_mesh_that_does_not_match_the_ranks_is_one_line_and_a_non_zero_exit(store):
    mpiexec = [str(VENV_BIN / "mpiexec"), "-n", "2", sys.executable]
    args = [*mpiexec, "-m", "aeris.cli", "train", "--config", "tiny", *overrides(store, "bad", 1), "swipe.sp=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if "aeris train: error" in ln]
    assert len(lines) == 1 and "launched 2 ranks but the mesh" in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stdout + p.stderr

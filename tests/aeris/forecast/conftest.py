"""A tiny trained checkpoint on a tiny store, shared by the rollout and stability tests.

9x16 pole-inclusive source grid (8x16 model grid, window 4x4), 16 six-hourly times from
2020-08-01 (4 days), 8 channels; a 2-block d=16 model trained for one step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.stores import make_dataset, write

LEVELS = (500, 850)
N_TIME = 16


def overrides(tmp: Path) -> list[str]:
    return [
        f"data.path={tmp / 'era5.zarr'}",
        "data.surface=[2m_temperature,10m_u_component_of_wind,10m_v_component_of_wind,mean_sea_level_pressure]",
        "data.atmospheric=[geopotential,temperature]", f"data.levels=[{LEVELS[0]},{LEVELS[1]}]",
        "data.train_period=[2020-08-01,2020-08-02]", "data.val_period=[2020-08-03,2020-08-03]",
        "data.test_period=[2020-08-04,2020-08-04]",
        "model.dim=16", "model.depth=2", "model.heads=2", "model.mlp_hidden=32", "model.window=[4,4]",
        f"train.out_dir={tmp / 'run'}", "train.steps=1", "train.grad_accum=1", "train.val_every=0",
        "train.progress=false", "diffusion.steps=2",
    ]


def build_checkpoint(tmp: Path):
    """(run config, truth dataset, run dir) with one checkpoint in run dir."""
    from aeris.config import load_config
    from aeris.data.prepared import prepare
    from aeris.train.trainer import Trainer

    tmp = Path(tmp)
    ref = make_dataset(n_lat=9, n_lon=16, n_time=N_TIME, levels=LEVELS)
    write(ref, tmp / "era5.zarr")
    cfg = load_config(None, overrides(tmp))
    prepare(cfg.data, cfg.model.window, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg).run()
    finally:
        torch.set_num_threads(threads)
    return cfg, ref, tmp / "run"


# ---- module-scoped fixtures shared by the forecast test modules (import them by name) --------
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matmuls on a shared 2-core machine: one thread is much faster than two contended ones
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("forecast"))


@pytest.fixture(scope="module")
def fc(ckpt):
    from aeris.forecast.rollout import load_forecaster
    return load_forecaster(ckpt[2])

"""`aeris train --skill` (the demo's skill step) prints the skill table and nothing empty before it.

A run that is already trained to `train.steps` (the demo's case: the skill step resumes the
trained run) used to print a progress bar with no steps in it; the record line is printed
only when a step ran, so no `{}` either.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.support.stores import make_dataset, write


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _overrides(tmp) -> list[str]:
    return [f"data.path={tmp / 'era5.zarr'}",
            "data.surface=[2m_temperature,10m_u_component_of_wind,10m_v_component_of_wind,mean_sea_level_pressure]",
            "data.atmospheric=[geopotential,temperature]", "data.levels=[500,850]",
            "data.train_period=[2020-08-01,2020-08-02]", "data.val_period=[2020-08-03,2020-08-03]",
            "data.test_period=[2020-08-04,2020-08-04]", "model.dim=16", "model.depth=2", "model.heads=2",
            "model.mlp_hidden=32", "model.window=[4,4]", f"train.out_dir={tmp / 'run'}", "train.steps=1",
            "train.grad_accum=1", "train.val_every=0", "diffusion.steps=2"]


def test_skill_output_has_no_empty_bar_and_no_empty_record(tmp_path, capfd, one_thread):
    from aeris.cli import main
    write(make_dataset(n_lat=9, n_lon=16, n_time=16, levels=(500, 850)), tmp_path / "era5.zarr")
    cmd = ["train", *_overrides(tmp_path), "--skill", "--skill-inits", "1", "--skill-members", "2"]
    assert main(cmd) == 0
    first = capfd.readouterr()
    lines = (first.out + first.err).replace("\r", "\n").splitlines()
    record = [ln for ln in lines if ln.startswith("{")]
    assert len(record) == 1 and json.loads(record[0])["step"] == 1  # the last step's record
    assert any(re.match(r"train: 100%.* 1/1 ", ln) for ln in lines)  # a bar while training
    assert main(cmd) == 0  # already trained: resumes at step 1 and only scores
    again = capfd.readouterr()
    text = again.out + again.err
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines()]
    assert "{}" not in lines and not any(ln.startswith("{") for ln in lines)
    assert not any(ln.startswith("train:") for ln in lines), text  # no bar without steps
    assert "one-step forecast on 1 held-out times, 2 members" in again.out
    assert again.out.rstrip().splitlines()[-1].startswith("  -> the ensemble mean")

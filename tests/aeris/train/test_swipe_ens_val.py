"""Ensemble validation under SWiPe equals the serial Trainer's, and its scoring maths.

Tiny store (9x16 source grid -> 8x16 model grid, window 4x4, 6 channels), d = 16, 2 blocks,
2 heads; 3 validation inits x 3 members, 2 sampler steps. The pp2 x sp2 run goes through the
`aeris train --skill` CLI (in the forked ranks, gloo), the dp2 x pp2, pp2 x wy2 and pp3 runs score a
serial checkpoint directly (same EMA and model weights as the serial Trainer).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.stores import make_dataset
from swipe.testing import run_distributed

LEVELS = (500, 850)
ENS_KEYS = ("rmse_ens_mean", "rmse_member0", "rmse_persistence", "crps_fair", "spread_skill")


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.path={root / 'era5.zarr'}", "data.atmospheric=[geopotential,temperature]",
        f"data.levels=[{LEVELS[0]},{LEVELS[1]}]", "data.train_period=[2020-08-01,2020-08-03]",
        "data.val_period=[2020-08-04,2020-08-05]", "data.test_period=[2020-08-06,2020-08-06]",
        "model.window=[4,4]", "model.dim=16", "model.heads=2", "model.mlp_hidden=32", "model.depth=2",
        f"train.out_dir={out}", "train.progress=false", "train.precision=fp32", "train.steps=2",
        "train.warmup_steps=1", "train.grad_accum=2", "train.lr=0.003", "train.ema_halflife_samples=4",
        "train.log_every=1", "train.val_every=0", "train.ckpt_every=0", "train.ens_val_every=1",
        "train.ens_val_members=3", "train.ens_val_inits=3", "train.ens_val_sampler_steps=2",
        "diffusion.steps=2", *extra]


def _cli(args: list[str]) -> str:
    from aeris.cli import main as aeris_main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert aeris_main(args) == 0
    return out.getvalue()


def _report_numbers(text: str) -> list[float]:
    block = text[text.index("one-step forecast on"):]
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", block)]


def _close(a: dict, b: dict, rel: float = 1e-5) -> None:
    for k in ENS_KEYS:
        assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-9), k
    assert a["n_inits"] == b["n_inits"] and a["members"] == b["members"]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The store, a serial `aeris train --skill` run (2 steps, ens validation each step) and the
    serial scores of its final checkpoint with EMA and with the raw weights."""
    from aeris.config import load_config
    from aeris.data.prepared import prepare
    from aeris.data.stats import compute_and_save_stats
    from aeris.train.metrics_log import read_metrics
    from aeris.train.trainer import Trainer

    root = tmp_path_factory.mktemp("ens_val")
    make_dataset(n_lat=9, n_lon=16, n_time=28, levels=LEVELS).to_zarr(root / "era5.zarr", consolidated=False)
    cfg = load_config("tiny", _overrides(root, root / "unused"))
    compute_and_save_stats(cfg.data)
    prepare(cfg.data, cfg.model.window, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = root / "serial"
        text = _cli(["train", "--config", "tiny", *_overrides(root, run), "--skill", "--skill-members", "3",
                     "--skill-inits", "3"])
        tr = Trainer(load_config("tiny", _overrides(root, run)), resume=True)
        assert tr.step == 2
        ema = tr.one_step_skill(3, 3, sampler_steps=2)
        raw = tr.one_step_skill(3, 3, sampler_steps=2, use_ema=False)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "run": run, "report": text, "metrics": read_metrics(run / "metrics.jsonl"),
            "ema": ema, "raw": raw}


# ---- scoring maths --------------------------------------------------------------------------------
def test_partial_sums_against_a_brute_force_reference():
    from aeris.train.skill import finish_scores, pair_abs_sum, partial_sums

    g = torch.Generator().manual_seed(3)
    M, n_lw, tpp, C = 4, 3, 5, 2
    fc, y, p = (torch.randn(*s, generator=g, dtype=torch.float64)
                for s in ((M, n_lw, tpp, C), (n_lw, tpp, C), (n_lw, tpp, C)))
    w = torch.rand(n_lw, tpp, generator=g, dtype=torch.float64) + 0.5

    f, yy, pp_, ww = fc.numpy(), y.numpy(), p.numpy(), w.numpy()[..., None]
    pairs = sum(np.abs(f[a] - f[b]) for a, b in itertools.product(range(M), repeat=2))
    assert np.allclose(pair_abs_sum(fc).numpy(), pairs, rtol=1e-12)
    N = n_lw * tpp * C
    crps = (ww * (np.abs(f - yy).mean(0) - pairs / (2 * M * (M - 1)))).sum() / N
    ref = {"rmse_ens_mean": math.sqrt((ww * (f.mean(0) - yy) ** 2).sum() / N),
           "rmse_member0": math.sqrt((ww * (f[0] - yy) ** 2).sum() / N),
           "rmse_persistence": math.sqrt((ww * (pp_ - yy) ** 2).sum() / N), "crps_fair": crps}
    ref["spread_skill"] = math.sqrt((ww * f.var(0, ddof=1)).sum() / N) / ref["rmse_ens_mean"]

    whole = partial_sums(fc, y, p, w)
    got = finish_scores(whole, 1, M, N)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    # the pieces of a field (here: windows) add up to the whole field's sums
    pieces = sum(partial_sums(fc[:, i:i + 1], y[i:i + 1], p[i:i + 1], w[i:i + 1]) for i in range(n_lw))
    assert torch.allclose(pieces, whole, rtol=1e-12)
    # one member: no spread, no CRPS
    one = finish_scores(partial_sums(fc[:1], y, p, w), 1, 1, N)
    assert "crps_fair" not in one and one["rmse_ens_mean"] == pytest.approx(ref["rmse_member0"], rel=1e-12)
    with pytest.raises(ValueError, match="w_token"):
        partial_sums(fc, y, p, w[:, :2])
    with pytest.raises(ValueError, match="persistence"):
        partial_sums(fc, y, p[:, :2], w)


def test_validation_picks():
    from aeris.train.skill import validation_picks

    assert validation_picks(7, 3).tolist() == [0, 3, 6]
    assert validation_picks(2, 5).tolist() == [0, 1]
    with pytest.raises(ValueError, match="no validation samples"):
        validation_picks(4, 0)


# ---- distributed ----------------------------------------------------------------------------------
def _cli_rank(rank, world, args):
    return _cli(args)  # the test harness owns the process group: `aeris train` leaves it alone


def test_cli_skill_and_logged_ens_val_pp2_sp2(serial, tmp_path):
    from aeris.train.metrics_log import read_metrics

    run = tmp_path / "swipe"
    args = ["train", "--config", "tiny", *_overrides(serial["root"], run, "swipe.pp=2", "swipe.sp=2"),
            "--skill", "--skill-members", "3", "--skill-inits", "3"]
    outs = run_distributed(_cli_rank, 4, args=(args,), timeout=240)
    assert "one-step forecast on 3 held-out times, 3 members" in outs[0]
    assert all("one-step forecast" not in o for o in outs[1:])  # rank 0 reports
    assert _report_numbers(outs[0]) == pytest.approx(_report_numbers(serial["report"]), abs=2e-4)
    got = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in serial["metrics"]] == [1, 2]
    for a, b in zip(got, serial["metrics"]):
        _close({k[4:]: v for k, v in a.items() if k.startswith("ens_")},
               {k[4:]: v for k, v in b.items() if k.startswith("ens_")})


def _score_rank(rank, world, overrides):
    from aeris.config import load_config
    from aeris.train.trainer import Trainer

    tr = Trainer(load_config("tiny", overrides), resume=True)
    assert tr.step == 2
    return tr.one_step_skill(3, 3, sampler_steps=2), tr.one_step_skill(3, 3, sampler_steps=2, use_ema=False)


@pytest.mark.parametrize("mesh", [("swipe.dp=2", "swipe.pp=2"), ("swipe.pp=2", "swipe.wy=2"), ("swipe.pp=3",)])
def test_same_checkpoint_same_scores(serial, tmp_path, mesh):
    """dp2 x pp2 deals the 3 inits 2 + 1 over the replicas; pp3 has a middle stage without data."""
    run = tmp_path / "copy"
    shutil.copytree(serial["run"], run)  # resuming trims the run's metrics: leave the fixture's alone
    world = math.prod(int(m.split("=")[1]) for m in mesh)
    results = run_distributed(_score_rank, world, args=(_overrides(serial["root"], run, *mesh),), timeout=240)
    for ema, raw in results:  # the same numbers on every rank
        _close(ema, serial["ema"])
        _close(raw, serial["raw"])
    # the EMA weights are not the raw ones: the comparison above checks that each is used
    assert abs(serial["ema"]["rmse_ens_mean"] - serial["raw"]["rmse_ens_mean"]) > 1e-4 * serial["raw"]["rmse_ens_mean"]

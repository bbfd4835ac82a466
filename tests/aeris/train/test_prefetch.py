"""Reading ahead (data.prefetch_steps): the same training as reading in the step, bit for bit;
worker errors surface in the step that needs the sample; each pipeline stage reads only its
arrays; threads are joined however the run ends.

Tiny store (9x16 source grid -> 8x16 model grid, window 4x4, 6 channels), d = 16, 2 blocks.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aeris.config import load_config
from aeris.data.dataset import ForecastDataset
from aeris.data.prepared import PreparedStore, prepare
from aeris.data.stats import compute_and_save_stats
from aeris.data.store import DataError
from aeris.train.metrics_log import read_metrics
from aeris.train.prefetch import StepLoader
from aeris.train.trainer import Trainer
from swipe.testing import run_distributed
from tests.support.stores import make_dataset

LEVELS = (500, 850)
THREAD = "aeris-read-ahead"


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.path={root / 'era5.zarr'}", "data.atmospheric=[geopotential,temperature]",
        f"data.levels=[{LEVELS[0]},{LEVELS[1]}]", "data.train_period=[2020-08-01,2020-08-04]",
        "data.val_period=[2020-08-05,2020-08-05]", "data.test_period=[2020-08-06,2020-08-06]",
        "model.window=[4,4]", "model.dim=16", "model.heads=2", "model.mlp_hidden=32", "model.depth=2",
        f"train.out_dir={out}", "train.progress=false", "train.precision=fp32", "train.steps=3",
        "train.warmup_steps=1", "train.micro_batch=2", "train.grad_accum=2", "train.lr=0.003",
        "train.log_every=1", "train.val_every=0", "train.ckpt_every=0", "train.ema_halflife_samples=4",
        "diffusion.steps=2", *extra]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prefetch")
    make_dataset(n_lat=9, n_lon=16, n_time=28, levels=LEVELS).to_zarr(root / "era5.zarr", consolidated=False)
    cfg = load_config("tiny", _overrides(root, root / "unused"))
    compute_and_save_stats(cfg.data)
    prepare(cfg.data, cfg.model.window, progress=False)
    return root


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD)]


def _train(root: Path, out: Path, *extra: str):
    tr = Trainer(load_config("tiny", _overrides(root, out, *extra)), resume=False)
    tr.run()
    return tr, read_metrics(out / "metrics.jsonl")


# ---- the serial engine ----------------------------------------------------------------------------
def test_reading_ahead_trains_bit_for_bit_like_reading_in_the_step(root, tmp_path, monkeypatch):
    threads = []
    real = ForecastDataset.__getitem__

    def spy(self, i):  # which thread read each training sample, in which order
        if self.split == "train":
            threads.append(threading.current_thread().name)
        return real(self, i)

    monkeypatch.setattr(ForecastDataset, "__getitem__", spy)
    sync, log_sync = _train(root, tmp_path / "sync", "data.prefetch_steps=0")
    assert threads and all(not t.startswith(THREAD) for t in threads)
    threads.clear()
    ahead, log_ahead = _train(root, tmp_path / "ahead", "data.prefetch_steps=2", "data.loader_threads=2")
    assert threads and all(t.startswith(THREAD) for t in threads)   # read off the step
    assert len(threads) == 3 * 4   # 3 steps x 2 micro-batches x 2 samples: nothing read past the run
    assert not _read_ahead_threads()                                 # joined at the end of the run
    for a, b in zip(log_sync, log_ahead, strict=True):
        assert (a["step"], a["loss"], a["grad_norm"]) == (b["step"], b["loss"], b["grad_norm"])
        assert 0.0 <= b["data_wait_s"] <= b["seconds"] and a["data_wait_s"] > 0.0
    for (n, p), (m, q) in zip(sync.model.named_parameters(), ahead.model.named_parameters(), strict=True):
        assert n == m and torch.equal(p, q), n
    for k, v in sync.ema.shadow.items():
        assert torch.equal(v, ahead.ema.shadow[k]), k
    # steps taken outside `run` read in the step again
    assert ahead.loader.depth == 0


def test_a_worker_error_is_raised_in_the_step_that_needs_the_sample(root, tmp_path, monkeypatch):
    cfg = load_config("tiny", _overrides(root, tmp_path / "bad", "data.prefetch_steps=2"))
    tr = Trainer(cfg, resume=False)
    bad = int(tr._indices(tr.global_batch)[1][0])  # a sample of step 2, read ahead during step 1
    when = np.datetime_as_string(tr.train_ds.times[bad], unit="m")
    real = ForecastDataset.__getitem__
    asked = threading.Event()

    def failing(self, i):
        if self.split == "train" and int(i) == bad:
            asked.set()
            raise OSError("disk on fire")
        return real(self, i)

    monkeypatch.setattr(ForecastDataset, "__getitem__", failing)
    real_step = Trainer.train_step

    def step(self):
        res = real_step(self)
        if self.step == 1:
            assert asked.wait(60)  # the failing read happened during step 1, and did not stop it
        return res

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(DataError, match=rf"train sample {bad} \(t = {when}\) of step 2 could not be read: "
                                        r"OSError: disk on fire") as err:
        tr.run()
    assert isinstance(err.value.__cause__, OSError)
    assert tr.step == 1 and tr.samples_seen == tr.global_batch  # step 2 was never taken
    assert not _read_ahead_threads()


# ---- the loader itself ----------------------------------------------------------------------------
class _Slow:
    """A stand-in dataset: sample i is i everywhere; reads take a random time, so that the
    worker threads finish out of order."""

    split, fields = "train", ("target",)

    def __init__(self, n: int, fail: int | None = None):
        self.times = np.datetime64("2020-08-01T00", "ns") + np.arange(n) * np.timedelta64(6, "h")
        self.fail, self.rng = fail, np.random.default_rng(0)

    def __getitem__(self, i):
        time.sleep(float(self.rng.uniform(0, 0.01)))
        if i == self.fail:
            raise KeyError("no such chunk")
        return {"target": torch.full((2, 3, 1), float(i)), "time": torch.tensor(0), "index": torch.tensor(i)}


def _plan(start: int) -> list[np.ndarray]:
    """Two micro-batches of two samples, in a scrambled but fixed order."""
    idx = (start + np.arange(4)) * 7 % 40
    return [idx[:2], idx[2:]]


def test_loader_returns_the_planned_samples_in_order_and_restarts_when_the_position_moves():
    ds = _Slow(40)
    with StepLoader(ds, _plan, stride=4, depth=2, threads=3, end=24) as loader:
        assert not loader.pin  # pinning is for CUDA / XPU only
        for step in [0, 1, 2, 5, 6, 0]:  # 2 -> 5 and 6 -> 0: the position moved
            got = loader.get(step, 4 * step)
            want = _plan(4 * step)
            assert [b["target"][:, 0, 0, 0].tolist() for b in got] == [w.tolist() for w in want]
            assert set(got[0]) == {"target"}
        pending = [key for key, _ in loader._pending]
        assert pending == [(1, 4), (2, 8)]  # depth 2 ahead of step 0
    assert loader._pool is None and not _read_ahead_threads()
    with StepLoader(ds, _plan, stride=4, depth=2, end=12) as loader:
        loader.get(1, 4)
        assert [key for key, _ in loader._pending] == [(2, 8)]  # nothing from position 12 on


def test_loader_errors_name_the_sample_and_its_time():
    """Sample 35 is in the second step (positions 4..7: samples 28, 35, 2, 9); reading in the
    step and reading ahead raise the same error, in the get of that step."""
    for depth in (0, 2):
        with StepLoader(_Slow(40, fail=35), _plan, stride=4, depth=depth) as loader:
            loader.get(0, 0)  # samples 0, 7, 14, 21 (35 is being read ahead)
            with pytest.raises(DataError, match=r"train sample 35 \(t = 2020-08-09T18:00\) of step 2 could not be "
                                                r"read: KeyError: 'no such chunk'"):
                loader.get(1, 4)
    assert not _read_ahead_threads()


class _Sleepy(_Slow):
    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


def test_the_wait_of_a_read_in_the_step_is_at_least_the_read():
    loader = StepLoader(_Sleepy(40), _plan, stride=4)
    loader.get(0, 0)
    assert loader.wait_s >= 4 * 0.02  # four samples read in the call


# ---- a SWiPe mesh ---------------------------------------------------------------------------------
def _mesh_rank(rank, world, root, out):
    """pp 3 (first, middle, last stage), 2 steps and a validation loss: a run reading in the
    step, then one reading ahead with every store read recorded by array."""
    reads: list[str] = []
    real = PreparedStore.read_tiles

    def spy(self, name, *a):
        reads.append(name)
        return real(self, name, *a)

    logs = []
    for mode in ("sync", "ahead"):
        tr = Trainer(load_config("tiny", _overrides(root, Path(out) / mode, "swipe.pp=3", "train.steps=2",
                                                    "train.val_every=2", "train.val_samples=2",
                                                    f"data.prefetch_steps={0 if mode == 'sync' else 2}")),
                     resume=False)
        if mode == "ahead":
            PreparedStore.read_tiles = spy
        tr.run()
        PreparedStore.read_tiles = real
        logs.append([(r["step"], r["loss"], r["grad_norm"], r.get("val_loss"))
                     for r in read_metrics(Path(out) / mode / "metrics.jsonl")] if rank == 0 else None)
        # this rank's shards (a DTensor comparison would be a collective)
        params = {n: p.to_local().detach().clone() for n, p in tr.model.named_parameters()}
        if mode == "sync":
            sync_params = params
    same = all(torch.equal(sync_params[n], p) for n, p in params.items())
    return {"stage": tr.engine.plan.index, "fields": tr.engine.data_fields, "reads": sorted(set(reads)),
            "n_reads": len(reads), "logs": logs, "same_params": same,
            "threads": len([t for t in threading.enumerate() if t.name.startswith(THREAD)])}


def test_pipeline_stages_read_only_their_arrays_and_train_alike(root, tmp_path):
    res = {r["stage"]: r for r in run_distributed(_mesh_rank, 3, args=(root, str(tmp_path)), timeout=240)}
    assert res[0]["fields"] == ("cond", "forcing", "target")
    assert res[0]["reads"] == ["forcing", "state", "static"]
    assert res[1]["fields"] == () and res[1]["reads"] == [] and res[1]["n_reads"] == 0
    assert res[2]["fields"] == ("target",) and res[2]["reads"] == ["state"]  # no forcings, no static fields
    assert res[2]["n_reads"] == 2 * 4 + 2  # one state read (t and t+dt) per training and validation sample
    sync, ahead = res[0]["logs"]
    assert sync == ahead and len(sync) == 2 and math.isfinite(sync[-1][3])  # validation: the last stage's labels
    assert all(r["same_params"] and r["threads"] == 0 for r in res.values())

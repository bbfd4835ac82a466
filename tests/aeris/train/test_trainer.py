"""The serial trainer end to end on a tiny store: bit-exact resume, learning, checkpoint
errors, the one-step ensemble skill against a numpy reference, and the `aeris train` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import aeris.train.engine as engine_mod
from aeris.cli import main as aeris_main
from aeris.config import load_config
from aeris.data.prepared import prepare
from aeris.data.stats import compute_and_save_stats
from aeris.checkpoint.training import CheckpointError, latest_checkpoint, list_checkpoints, read_record
from aeris.checkpoint.weights import read_weights
from aeris.train.metrics_log import read_metrics
from aeris.train.trainer import Trainer
from tests.support.stores import make_dataset

LEVELS = (500, 850)
TRAIN = ["2020-08-01", "2020-08-07"]             # 28 times -> 27 samples
VAL = ["2020-08-08", "2020-08-09T00:00"]         # 5 times -> 4 samples
TEST = ["2020-08-09T06:00", "2020-08-10T18:00"]
VARIABLES = {"t2m": "2m_temperature", "u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind",
             "msl": "mean_sea_level_pressure", "z": "geopotential", "t": "temperature"}
TIMING_KEYS = {"seconds", "samples_per_s", "tflops", "tflops_per_rank", "mfu", "paper_tflops",
               "data_wait_s", "noise_s", "comm_wait_s", "bubble_s", "compute_s", "rank_times"}  # wall-clock dependent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """9x16 pole-inclusive store (8x16 model grid, 4x4 windows), 40 six-hourly times, prepared once."""
    root = tmp_path_factory.mktemp("train_store")
    ds = make_dataset(n_lat=9, n_lon=16, n_time=40, levels=LEVELS)
    ds.to_zarr(root / "era5.zarr", consolidated=False)
    cfg = _cfg(root, root / "unused")
    compute_and_save_stats(cfg.data)
    prepare(cfg.data, cfg.model.window, progress=False)
    return root, ds


def _cfg(root: Path, out: Path, *extra: str):
    return load_config("tiny", [
        f"data.path={Path(root) / 'era5.zarr'}", "data.atmospheric=[geopotential,temperature]",
        f"data.levels=[{LEVELS[0]},{LEVELS[1]}]", f"data.train_period=[{TRAIN[0]},{TRAIN[1]}]",
        f"data.val_period=[{VAL[0]},{VAL[1]}]", f"data.test_period=[{TEST[0]},{TEST[1]}]",
        "model.window=[4,4]", "model.dim=32", "model.heads=2", "model.mlp_hidden=64", "model.depth=2",
        f"train.out_dir={out}", "train.progress=false", "train.precision=fp32", *extra])


def _deterministic(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# ---- resume ------------------------------------------------------------------------------------
RESUME = ["train.steps=4", "train.warmup_steps=1", "train.grad_accum=2", "train.ckpt_every=2",
          "train.keep_checkpoints=5", "train.log_every=1", "train.val_every=2", "train.val_samples=2",
          "train.ema_halflife_samples=8", "train.ens_val_every=2", "train.ens_val_members=2",
          "train.ens_val_inits=1", "train.ens_val_sampler_steps=2", "train.lr=0.003"]


def test_resume_is_bit_exact(store, tmp_path, monkeypatch):
    root, _ = store
    straight = Trainer(_cfg(root, tmp_path / "a", *RESUME), resume=False)
    straight.run()

    # the second run crashes at the start of step 4, after step 3 was logged (last checkpoint: 2)
    cfg_b = _cfg(root, tmp_path / "b", *RESUME)
    real_step = Trainer.train_step

    def crashing_step(self):
        if self.step == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg_b, resume=False).run()
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3]
    assert latest_checkpoint(tmp_path / "b").name == "step_00000002"
    monkeypatch.setattr(Trainer, "train_step", real_step)

    torch.manual_seed(1234)  # the resumed process starts with another global RNG state
    resumed = Trainer(cfg_b, resume=True)
    assert resumed.step == 2 and resumed.samples_seen == 4
    resumed.run()
    assert resumed.step == straight.step == 4

    for (n, p), (n2, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert n == n2 and torch.equal(p, q), n
    assert straight.ema.decay == resumed.ema.decay
    for n, e in straight.ema.shadow.items():
        assert torch.equal(e, resumed.ema.shadow[n]), n
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(v, sb["state"][k][name]), (k, name)

    log_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    log_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert _deterministic(log_a) == _deterministic(log_b)
    assert {"val_loss", "ens_rmse_ens_mean", "ens_crps_fair"} <= set(log_a[1]) and "val_loss" not in log_a[0]
    # the checkpoints of the final step agree too
    ra = read_record(tmp_path / "a" / "checkpoints" / "step_00000004")
    rb = read_record(tmp_path / "b" / "checkpoints" / "step_00000004")
    assert ra["step"] == rb["step"] == 4 and ra["samples_seen"] == rb["samples_seen"] == 8
    ca = read_weights(tmp_path / "a" / "checkpoints" / "step_00000004")
    cb = read_weights(tmp_path / "b" / "checkpoints" / "step_00000004")
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k


def test_fresh_run_in_a_used_directory_replaces_the_old_checkpoints(store, tmp_path):
    root, _ = store
    common = ["train.warmup_steps=1", "train.grad_accum=1", "train.ckpt_every=1", "train.keep_checkpoints=5",
              "train.val_every=0", "train.log_every=1"]
    Trainer(_cfg(root, tmp_path, "train.steps=3", *common), resume=False).run()
    assert len(list_checkpoints(tmp_path)) == 3
    with pytest.warns(UserWarning, match="removing 3 checkpoint"):
        Trainer(_cfg(root, tmp_path, "train.steps=2", "train.seed=5", *common), resume=False).run()
    # only the new run's checkpoints remain: a later resume must not pick the old step 3
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    assert json.loads(read_record(latest_checkpoint(tmp_path))["config"])["train"]["seed"] == 5
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


# ---- checkpoint errors through the trainer --------------------------------------------------------
def test_checkpoint_that_does_not_fit_the_run(store, tmp_path):
    root, _ = store
    args = ["train.steps=2", "train.grad_accum=1", "train.val_every=0", "train.warmup_steps=0",
            "train.ckpt_every=0", "train.log_every=0"]
    Trainer(_cfg(root, tmp_path, *args), resume=False).run()
    # 0 = only at the end, for both checkpoints and log lines
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002"]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2]
    path = latest_checkpoint(tmp_path)
    record = path / "run.json"
    good = record.read_text()

    state = json.loads(good)
    del state["samples_seen"]
    record.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"not a training checkpoint: it lacks \['samples_seen'\]"):
        Trainer(_cfg(root, tmp_path, *args), resume=True)

    state = json.loads(good)
    state["meta"]["channels"] = ["t2m", "msl"]
    record.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"trained on channels \['t2m', 'msl'\]"):
        Trainer(_cfg(root, tmp_path, *args), resume=True)

    state = json.loads(good)
    state["format"] = "aeris-dcp/99"
    record.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format 'aeris-dcp/99'"):
        Trainer(_cfg(root, tmp_path, *args), resume=True)

    record.write_text(good)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(_cfg(root, tmp_path, *args, "model.dim=16", "model.mlp_hidden=32"), resume=True)

    shard = sorted(path.glob("*.distcp"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(_cfg(root, tmp_path, *args), resume=True)
    assert Trainer(_cfg(root, tmp_path, *args), resume=False).step == 0  # no resume: not read


# ---- learning ----------------------------------------------------------------------------------
def test_training_lowers_the_fixed_validation_loss(store, tmp_path):
    root, _ = store
    tr = Trainer(_cfg(root, tmp_path, "train.steps=36", "train.warmup_steps=3", "train.grad_accum=2",
                      "train.lr=0.01", "train.val_every=0", "train.ckpt_every=1000", "train.val_samples=4"),
                 resume=False)
    before = tr.validation_loss()
    assert before == tr.validation_loss()  # fixed keys: the same number every time
    losses = [tr.train_step().loss for _ in range(tr.cfg.train.steps)]
    after = tr.validation_loss()
    assert all(math.isfinite(v) for v in losses)
    assert after < 0.8 * before, (before, after)
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses


# ---- one-step ensemble skill vs an independent numpy reference --------------------------------------
def _numpy_reference(ds, channels):
    """(X(t), X(t+6h)) of every validation sample on the 8x16 model grid, with the climatological
    std and the 6-h difference std of each channel over the training period (plain numpy)."""
    times = ds["time"].values
    fields = []
    for ch in channels:
        name = VARIABLES.get(ch) or VARIABLES[ch[0]]
        da = ds[name]
        if "level" in da.dims:
            da = da.sel(level=int(ch[1:]))
        fields.append(da.values.astype(np.float64))
    x = np.stack(fields, axis=1)  # (time, C, 9, 16)
    in_train = (times >= np.datetime64(TRAIN[0])) & (times < np.datetime64(TRAIN[1]) + np.timedelta64(1, "D"))
    tr = x[in_train]
    std = tr.std(axis=(0, 2, 3))
    diff_std = (tr[1:] - tr[:-1]).std(axis=(0, 2, 3))
    in_val = (times >= np.datetime64(VAL[0])) & (times <= np.datetime64(VAL[1]))
    iv = np.nonzero(in_val)[0][:-1]  # t and t + 6 h both in the validation period
    lat = ds["latitude"].values[:-1]  # the model grid drops the southern pole row
    w = np.cos(np.deg2rad(lat)).clip(0) + 0.01
    w = w / w.mean()
    return x[iv][..., :-1, :], x[iv + 1][..., :-1, :], std, diff_std, w


def _oracle(val_ds, offsets):
    """sample_residuals stand-in: member m = the true residual + offsets[m] (standardised units)."""
    hours = {int(t.astype("datetime64[h]").astype(np.int64)): i for i, t in enumerate(val_ds.times)}
    calls = []

    def fake(model, ctx, cond, keys, n_out, cfg, progress=False):
        i = hours[int(keys[0][1])]
        s = val_ds[i]
        assert torch.equal(cond[..., :n_out], s["cond"]) and torch.equal(cond[..., n_out:], s["forcing"])
        calls.append(i)
        return torch.stack([s["target"] + float(offsets[int(k[2])]) for k in keys])

    return fake, calls


@pytest.mark.parametrize("offsets", [(0.0, 0.0, 0.0), (-0.3, 0.1, 0.5)])
def test_one_step_skill_scores_against_numpy(store, tmp_path, monkeypatch, offsets):
    root, ds = store
    tr = Trainer(_cfg(root, tmp_path, "train.steps=1"), resume=False)
    n_val = len(tr.val_ds)
    x0, x1, std, diff_std, w = _numpy_reference(ds, tr.val_ds.channels)
    assert x0.shape[0] == n_val == 4

    fake, calls = _oracle(tr.val_ds, offsets)
    monkeypatch.setattr(engine_mod, "sample_residuals", fake)
    rng_before = torch.get_rng_state()
    s = tr.one_step_skill(n_inits=n_val, members=len(offsets))
    assert torch.equal(torch.get_rng_state(), rng_before)  # scoring does not disturb training's RNG
    assert calls == list(range(n_val)) and s["n_inits"] == n_val and s["members"] == 3

    # persistence: latitude-weighted RMSE of (X(t) - X(t+6h)) / std, mean over channels and times
    wf = w[None, None, :, None]
    pers = math.sqrt(np.mean(wf * ((x0 - x1) / std[None, :, None, None]) ** 2))
    assert s["rmse_persistence"] == pytest.approx(pers, rel=1e-5)

    # member m is the truth shifted by offsets[m] * diff_std / std (standardised state units)
    d = np.asarray(offsets)
    r2 = np.mean((diff_std / std) ** 2)
    assert s["rmse_ens_mean"] == pytest.approx(abs(d.mean()) * math.sqrt(r2), rel=1e-6, abs=1e-12)
    assert s["rmse_member0"] == pytest.approx(abs(d[0]) * math.sqrt(r2), rel=1e-6, abs=1e-12)
    M = len(d)
    crps = (np.abs(d).mean() - np.abs(d[:, None] - d[None]).sum() / (2 * M * (M - 1))) * np.mean(diff_std / std)
    assert s["crps_fair"] == pytest.approx(crps, rel=1e-6, abs=1e-12)
    if d.std() > 0:
        spread = math.sqrt(d.var(ddof=1) * r2)
        assert s["spread_skill"] == pytest.approx(spread / s["rmse_ens_mean"], rel=1e-4)


def test_one_step_skill_with_the_model(store, tmp_path):
    root, _ = store
    tr = Trainer(_cfg(root, tmp_path, "train.steps=1"), resume=False)
    s = tr.one_step_skill(n_inits=2, members=2, sampler_steps=2)
    assert s["n_inits"] == 2 and all(math.isfinite(v) for v in s.values())
    assert s["rmse_ens_mean"] > 0 and s["crps_fair"] > 0
    with pytest.raises(ValueError, match="no validation samples"):
        tr.one_step_skill(n_inits=0, members=2)


# ---- CLI ---------------------------------------------------------------------------------------
def test_aeris_train_cli(store, tmp_path, capsys):
    root, _ = store
    cfg = _cfg(root, tmp_path / "run")
    overrides = [f"data.path={cfg.data.path}", "data.atmospheric=[geopotential,temperature]",
                 f"data.levels=[{LEVELS[0]},{LEVELS[1]}]", f"data.train_period=[{TRAIN[0]},{TRAIN[1]}]",
                 f"data.val_period=[{VAL[0]},{VAL[1]}]", f"data.test_period=[{TEST[0]},{TEST[1]}]",
                 "model.window=[4,4]", "model.dim=32", "model.heads=2", "model.mlp_hidden=64", "model.depth=2",
                 f"train.out_dir={tmp_path / 'run'}", "train.progress=false", "train.precision=fp32",
                 "train.steps=2", "train.grad_accum=1", "train.ckpt_every=1", "train.log_every=1",
                 "train.val_every=2", "train.val_samples=1", "diffusion.steps=2"]
    rc = aeris_main(["train", "--config", "tiny", *overrides, "--skill", "--skill-members", "2",
                     "--skill-inits", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    last = json.loads(next(line for line in out.splitlines() if line.startswith("{")))  # after the log lines
    assert last["step"] == 2 and math.isfinite(last["val_loss"])
    assert "persistence" in out and "ensemble mean" in out
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2] and recs[-1]["loss"] == last["loss"]
    assert load_config(str(run / "config.yaml")).train.steps == 2
    assert not list(run.rglob("*.tmp"))
    # running again resumes at the end: nothing more to do, the log is unchanged
    assert aeris_main(["train", "--config", "tiny", *overrides]) == 0
    assert read_metrics(run / "metrics.jsonl") == recs


# ---- review fixes -------------------------------------------------------------------------------
def test_fresh_run_also_removes_an_earlier_run_and_an_unfinished_save(store, tmp_path):
    root, _ = store
    old = tmp_path / "checkpoints" / "step_00000100"
    old.mkdir(parents=True)
    (old / "run.json").write_text(json.dumps({"format": "aeris-dcp/1"}))
    unfinished = tmp_path / "checkpoints" / "step_00000200.tmp"
    unfinished.mkdir()
    with pytest.warns(UserWarning, match="removing 1 checkpoint"):
        Trainer(_cfg(root, tmp_path, "train.steps=1", "train.grad_accum=1", "train.val_every=0"),
                resume=False).run()
    assert not old.exists() and not unfinished.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


def test_resume_with_another_batch_keeps_the_half_life_in_samples(store, tmp_path):
    from aeris.train.ema import ema_decay
    root, _ = store
    common = ["train.val_every=0", "train.ema_halflife_samples=50", "train.micro_batch=1"]
    Trainer(_cfg(root, tmp_path, "train.steps=1", "train.grad_accum=1", *common), resume=False).run()
    t = Trainer(_cfg(root, tmp_path, "train.steps=2", "train.grad_accum=3", *common), resume=True)
    assert t.step == 1
    assert t.ema.decay == pytest.approx(ema_decay(3, 50.0)) and t.ema.decay != pytest.approx(ema_decay(1, 50.0))


def test_repeated_sample_in_a_step_draws_different_noise():
    from aeris.train.data_order import sample_keys, samples_for_step
    idx = samples_for_step(0, 6, 28, 4)             # crosses an epoch: an index can appear twice
    keys = sample_keys(0, 7, 28 + np.arange(4), idx)
    assert len(set(keys)) == 4
    if len(set(idx.tolist())) < 4:
        assert len({k[3] for k in keys}) < 4        # the same dataset index, told apart by position


def test_asynchronous_checkpoints_equal_synchronous_ones(store, tmp_path):
    root, _ = store
    args = ["train.steps=3", "train.grad_accum=1", "train.val_every=0", "train.ckpt_every=1",
            "train.keep_checkpoints=2"]
    Trainer(_cfg(root, tmp_path / "sync", *args), resume=False).run()
    Trainer(_cfg(root, tmp_path / "async", *args, "train.async_checkpoint=true"), resume=False).run()
    names = [p.name for p in list_checkpoints(tmp_path / "async")]
    assert names == [p.name for p in list_checkpoints(tmp_path / "sync")] == ["step_00000002", "step_00000003"]
    assert not list((tmp_path / "async" / "checkpoints").glob("*.tmp"))
    for name in names:  # step 2 was written while step 3 trained: it holds step 2's state
        a = read_weights(tmp_path / "sync" / "checkpoints" / name)
        b = read_weights(tmp_path / "async" / "checkpoints" / name)
        for k, v in a["model"].items():
            assert torch.equal(v, b["model"][k]) and torch.equal(a["ema"][k], b["ema"][k]), (name, k)
    # and the asynchronous run resumes from its own checkpoint
    assert Trainer(_cfg(root, tmp_path / "async", *args), resume=True).step == 3


def test_step_record_splits_the_step_time(store, tmp_path):
    """data wait + noise + communication + bubble + compute = the step, per rank; the serial
    engine has no communication; noise is timed where it is drawn."""
    root, _ = store
    t = Trainer(_cfg(root, tmp_path / "split", "train.steps=2", "train.warmup_steps=1"), resume=False)
    t.run()
    for r in read_metrics(tmp_path / "split" / "metrics.jsonl"):
        (mine,) = r["rank_times"]
        assert mine["seconds"] == pytest.approx(r["seconds"])
        parts = sum(mine[k] for k in ("data_wait_s", "noise_s", "comm_wait_s", "bubble_s", "compute_s"))
        assert parts == pytest.approx(r["seconds"], rel=1e-9)
        assert r["noise_s"] > 0 and r["comm_wait_s"] == r["bubble_s"] == 0.0
        assert 0 < r["compute_s"] < r["seconds"]

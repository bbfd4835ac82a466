"""Forecast rollout: store layout, persistence, analytic model, resume, refusal, members, evaluate, dp."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from aeris.data.store import open_store
from aeris.diffusion.noise import field_noise
from aeris.forecast.config import ForecastConfig
from aeris.forecast.rollout import ForcingSource, ForecastError, resolve_inits, run_forecast
from aeris.forecast.store_writer import ForecastStoreError, progress_dir, variable_layout
from tests.aeris.forecast.conftest import LEVELS

INITS = ["2020-08-01T00", "2020-08-02T06"]
SURFACE = {"t2m": "2m_temperature", "u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind",
           "msl": "mean_sea_level_pressure"}








def _fcfg(out, **kw) -> ForecastConfig:
    base = dict(out=str(out), inits=INITS, steps=3, members=3, batch_members=2, seed=7, progress=False)
    return ForecastConfig(**(base | kw))


@pytest.fixture(scope="module")
def full_run(fc, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "fc.zarr"
    run_forecast(fc, _fcfg(out))
    return out


def _load(path) -> xr.Dataset:
    return open_store(path).load()


def _field(ds: xr.Dataset, ch: str) -> xr.DataArray:
    if ch in SURFACE:
        return ds[SURFACE[ch]]
    name = {"z": "geopotential", "t": "temperature"}[ch[0]]
    return ds[name].sel(level=int(ch[1:]))


class ZeroPhysicalResidual:
    """A stepper whose standardised residual means X(t+dt) - X(t) = 0 (persistence)."""

    def __init__(self, ds):
        self.r = torch.as_tensor(-ds.normalizer.diff_mean / ds.normalizer.diff_std, dtype=torch.float32)

    def __call__(self, cond, keys):
        return self.r.expand(len(keys), *cond.shape[1:3], self.r.numel()).clone()


# ---- layout and metadata ------------------------------------------------------------------------
def test_store_layout_and_metadata(fc, ckpt, full_run):
    cfg, ref, run = ckpt
    ds = open_store(full_run)
    assert set(ds.data_vars) == {"2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
                                 "mean_sea_level_pressure", "geopotential", "temperature"}
    assert ds["geopotential"].dims == ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "prediction_timedelta", "number", "latitude", "longitude")
    assert ds["geopotential"].attrs["units"] == "m**2 s**-2" and ds["2m_temperature"].attrs["units"] == "K"
    assert ds["geopotential"].dtype == np.float32
    np.testing.assert_array_equal(ds["time"].values, np.array(INITS, dtype="datetime64[ns]"))
    np.testing.assert_array_equal(ds["prediction_timedelta"].values / np.timedelta64(1, "h"), [0, 6, 12, 18])
    np.testing.assert_array_equal(ds["number"].values, [0, 1, 2])
    np.testing.assert_array_equal(ds["level"].values, LEVELS)
    np.testing.assert_allclose(ds["latitude"].values, ref["latitude"].values)  # source grid, 9 rows
    np.testing.assert_allclose(ds["longitude"].values, ref["longitude"].values)
    # one lead, one member batch per chunk
    assert ds["geopotential"].encoding["chunks"] == (1, 1, 2, 2, 9, 16)
    assert ds.attrs["checkpoint"] == str(Path(fc.checkpoint)) and ds.attrs["seed"] == 7
    assert ds.attrs["weights"] == "ema" and '"steps": 2' in ds.attrs["sampler"]
    data = ds.load()
    for v in data.data_vars:
        assert np.isfinite(data[v].values).all(), v
        # dropped (last) row padded back with a copy of its neighbour
        np.testing.assert_array_equal(data[v].isel(latitude=-1).values, data[v].isel(latitude=-2).values)
    # lead 0 = the initial condition (through float32 standardisation), every member
    for i, t in enumerate(INITS):
        for ch in ("t2m", "msl", "z500", "t850"):
            truth = _field(ref, ch).sel(time=np.datetime64(t)).values[:-1]
            got = _field(data, ch).isel(time=i, prediction_timedelta=0).values[:, :-1]
            np.testing.assert_allclose(got, np.broadcast_to(truth, got.shape), rtol=1e-6)
    # members differ after the first step (different noise)
    z = data["geopotential"].isel(prediction_timedelta=1).values
    assert not np.allclose(z[:, 0], z[:, 1])


def test_variable_layout_splits_channels():
    vars_, levels = variable_layout(["t2m", "z500", "z850", "msl", "t500", "t850"])
    assert levels == [500, 850]
    assert vars_ == {"2m_temperature": [0], "geopotential": [1, 2], "mean_sea_level_pressure": [3],
                     "temperature": [4, 5]}
    with pytest.raises(ForecastStoreError, match="shared level"):
        variable_layout(["z500", "z850", "t500"])


def test_resolve_inits():
    got = resolve_inits(ForecastConfig(start="2020-08-01", end="2020-08-02", stride_hours=12))
    np.testing.assert_array_equal(got, np.array(["2020-08-01T00", "2020-08-01T12", "2020-08-02T00"],
                                                dtype="datetime64[ns]"))
    with pytest.raises(ForecastError, match="OR"):
        resolve_inits(ForecastConfig(inits=["2020-08-01"], start="2020-08-01"))
    with pytest.raises(ForecastError, match="no initial time"):
        resolve_inits(ForecastConfig())


# ---- values ---------------------------------------------------------------------------------------
def test_zero_residual_keeps_initial_state(fc, ckpt, tmp_path):
    out = tmp_path / "persist.zarr"
    run_forecast(fc, _fcfg(out, steps=4, inits=INITS[:1], members=2, include_initial=False),
                 stepper=ZeroPhysicalResidual(fc.ds))
    data = _load(out)
    np.testing.assert_array_equal(data["prediction_timedelta"].values / np.timedelta64(1, "h"), [6, 12, 18, 24])
    x0 = torch.as_tensor(fc.ds.denormalize_state(fc.ds.state_at([np.datetime64(INITS[0])]).double())).float()
    want = fc.ds.to_field(x0.numpy())[0]  # (C, 8, 16) float32 initial state
    for c, ch in enumerate(fc.channels):
        got = _field(data, ch).isel(time=0).values[..., :-1, :]  # (lead, member, 8, 16)
        np.testing.assert_array_equal(got, np.broadcast_to(want[c], got.shape))


def test_constant_velocity_model_matches_analytic_rollout(fc, tmp_path):
    """Output head weight 0, bias b: F = b, so the PF-ODE gives r = sin(t0) z - t0 b exactly,
    with z the keyed noise of (seed, init hours, member, step); compare with a numpy rollout."""
    b = torch.linspace(-0.5, 0.5, len(fc.channels))
    model = fc.model
    saved = {k: v.clone() for k, v in model.out.linear.state_dict().items()}
    with torch.no_grad():
        model.out.linear.weight.zero_()
        model.out.linear.bias.copy_(b)
    try:
        out = tmp_path / "const.zarr"
        steps, seed = 3, 11
        run_forecast(fc, _fcfg(out, steps=steps, inits=INITS[1:], members=2, seed=seed))
    finally:
        model.out.linear.load_state_dict(saved)
    data = _load(out)
    ds, nrm = fc.ds, fc.ds.normalizer
    t0 = math.atan(fc.dcfg.sample_sigma_max / fc.dcfg.sigma_data)
    hours = int(np.datetime64(INITS[1], "h").astype(np.int64))
    x = fc.ds.to_field(fc.ds.denormalize_state(ds.state_at([np.datetime64(INITS[1])]).double()).numpy())[0]
    for m in range(2):
        xm = x.copy()
        for k in range(steps):
            z = field_noise(fc.ctx.layout, (seed, hours, m, k), len(fc.channels), torch.float64).numpy()
            r = fc.dcfg.sigma_data * (math.sin(t0) * z - t0 * b.double().numpy()[:, None, None])
            xm = xm + r * nrm.diff_std[:, None, None] + nrm.diff_mean[:, None, None]
            for c, ch in enumerate(fc.channels):
                got = _field(data, ch).isel(time=0, number=m, prediction_timedelta=k + 1).values[:-1]
                scale = nrm.diff_std[c] * (k + 1)
                np.testing.assert_allclose(got, xm[c], rtol=0, atol=1e-4 * scale + 2e-6 * abs(nrm.mean[c]))


# ---- resume, refusal, members --------------------------------------------------------------------
def test_resume_after_interruption_equals_uninterrupted(fc, full_run, tmp_path):
    out = tmp_path / "resumed.zarr"
    events = []

    def stop_after_5(ev):
        events.append(ev)
        if len(events) == 5:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_forecast(fc, _fcfg(out), callback=stop_after_5)
    partial = _load(out)
    assert np.isnan(partial["2m_temperature"].values).any()  # really incomplete
    second = []
    run_forecast(fc, _fcfg(out), callback=second.append)
    # 2 inits x 2 member batches x 3 steps = 12 regions; 5 were done before the kill
    assert len(second) == 12 - 5
    a, b = _load(full_run), _load(out)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    # a complete store is left alone by a rerun of the same request
    third = []
    run_forecast(fc, _fcfg(out), callback=third.append)
    assert third == []


def test_refuses_to_overwrite(fc, full_run, tmp_path):
    with pytest.raises(ForecastStoreError, match="different forecast request.*seed"):
        run_forecast(fc, _fcfg(full_run, seed=8))
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "data.txt").write_text("not mine")
    with pytest.raises(ForecastStoreError, match="not an aeris forecast store"):
        run_forecast(fc, _fcfg(foreign, steps=1))
    assert (foreign / "data.txt").exists()
    # --overwrite replaces it, progress records start afresh
    run_forecast(fc, _fcfg(foreign, steps=1, inits=INITS[:1], members=1, overwrite=True))
    assert not (foreign / "data.txt").exists()
    assert sorted(p.name for p in progress_dir(foreign).iterdir()) == ["i00000_b0000.json"]
    assert _load(foreign)["2m_temperature"].shape == (1, 2, 1, 9, 16)


def test_member_regenerated_alone_equals_full_run(fc, full_run, tmp_path):
    out = tmp_path / "m2.zarr"
    run_forecast(fc, _fcfg(out, member_ids=[2]))
    one, full = _load(out), _load(full_run)
    np.testing.assert_array_equal(one["number"].values, [2])
    for v in full.data_vars:
        # member 2 ran in a batch of one both times (batches [0, 1], [2]) -> identical bits
        np.testing.assert_array_equal(one[v].values[:, :, 0], full[v].sel(number=2).values)
    out1 = tmp_path / "m1.zarr"
    run_forecast(fc, _fcfg(out1, member_ids=[1]))
    one = _load(out1)
    for v in full.data_vars:
        # member 1 ran beside member 0 in the full run: equal up to batched-matmul rounding
        np.testing.assert_allclose(one[v].values[:, :, 0], full[v].sel(number=1).values, rtol=1e-5)


# ---- forcings past the store's end ---------------------------------------------------------------
def test_forcings_past_store_end(fc, tmp_path):
    from aeris.data.forcings import toa_incident_solar_radiation
    ds = fc.ds
    last = ds.store.times[-1]
    src = ForcingSource(ds, "compute")
    inside = ds.times[0]
    np.testing.assert_array_equal(src(inside).numpy(), ds.forcing_at([inside]).numpy())
    got = src(last).numpy()[0]  # t in the store, t + dt past its end -> both computed
    nrm = ds.normalizer
    for j, when in enumerate((last, last + ds.dt)):
        x = toa_incident_solar_radiation([when], ds.latitudes, ds.longitudes, 1.0)[0]
        want = (x - nrm.forcing_mean[0]) / nrm.forcing_std[0]
        np.testing.assert_allclose(ds.to_field(got[None, ..., j:j + 1])[0, 0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[..., 2:], ds.forcing_at([inside]).numpy()[0][..., 2:])  # static
    with pytest.raises(ForecastError, match=f"ends at {str(last)[:19]}"):
        ForcingSource(ds, "error")(last)
    # a rollout past the end: runs with computed insolation, stops with 'error'
    late = str(last - 2 * ds.dt)[:19]
    out = tmp_path / "late.zarr"
    run_forecast(fc, _fcfg(out, inits=[late], steps=4, members=1), stepper=ZeroPhysicalResidual(ds))
    assert np.isfinite(_load(out)["2m_temperature"].values).all()
    with pytest.raises(ForecastError, match="prepared store ends at"):
        run_forecast(fc, _fcfg(tmp_path / "late2.zarr", inits=[late], steps=4, members=1,
                               forcing_fallback="error"), stepper=ZeroPhysicalResidual(ds))


# ---- consumers ------------------------------------------------------------------------------------
def test_evaluate_scores_the_output(ckpt, full_run):
    from aeris.evaluate.skill import evaluate
    cfg, ref, _ = ckpt
    scores = evaluate(open_store(full_run), open_store(cfg.data.path),
                      channels=["t2m", "msl", "z500", "t850"], progress=False)
    for k in ("rmse_member0", "rmse_ensmean", "crps_fair", "spread"):
        assert np.isfinite(scores[k].values).all(), k
    # lead 0 is the truth itself up to float32 standardisation round-off
    assert float(scores["rmse_ensmean"].isel(prediction_timedelta=0).max()) < 1e-2
    assert float(scores["rmse_ensmean"].isel(prediction_timedelta=-1).min()) > 0


def test_cli_forecast(ckpt, tmp_path, capsys):
    from aeris.cli import main
    out = tmp_path / "cli.zarr"
    # forecast.threads=1: the CLI sets this (test) process's threads; keep the module's one thread
    args = ["forecast", "forecast.threads=1", "--checkpoint", str(ckpt[2]), "--out", str(out), "--init", INITS[0],
            "--steps", "2", "--members", "2", "--seed", "3", "--sampler-steps", "1", "--no-progress"]
    assert main(args) == 0
    data = _load(out)
    assert data["2m_temperature"].shape == (1, 3, 2, 9, 16)
    assert '"steps": 1' in open_store(out).attrs["sampler"]
    assert main(args) == 0  # same request again: resumes (nothing to do)
    assert main(args[:-1] + ["--seed", "4", "--no-progress"]) == 1
    assert "different forecast request" in capsys.readouterr().err


def test_cli_sampler_overrides(ckpt, tmp_path, capsys):
    """--churn reaches the sampler (recorded, and the members change); a diffusion.* key of the
    command that the checkpoint's sampler does not use is named in a warning, not dropped silently."""
    from aeris.cli import main
    base = ["forecast", "forecast.threads=1", "--checkpoint", str(ckpt[2]), "--init", INITS[0], "--steps", "2",
            "--members", "2", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "ode.zarr")]) == 0
    assert "not used" not in capsys.readouterr().err
    assert main(base[:2] + ["diffusion.rho=3.0"] + base[2:] + ["--out", str(tmp_path / "churn.zarr"),
                                                              "--churn", "1.0"]) == 0
    err = capsys.readouterr().err
    assert "not used: diffusion.rho=3.0" in err and "churn 1.0" in err
    assert '"churn": 1.0' in open_store(tmp_path / "churn.zarr").attrs["sampler"]
    ode, churned = _load(tmp_path / "ode.zarr"), _load(tmp_path / "churn.zarr")
    lead = dict(prediction_timedelta=-1)
    np.testing.assert_array_equal(ode["2m_temperature"].isel(prediction_timedelta=0),
                                  churned["2m_temperature"].isel(prediction_timedelta=0))
    assert not np.allclose(ode["2m_temperature"].isel(**lead), churned["2m_temperature"].isel(**lead))


# ---- data parallel ------------------------------------------------------------------------------
def _dp_rank(rank, world, fc, fcfg):
    run_forecast(fc, fcfg)
    return rank


@pytest.mark.multiproc
def test_data_parallel_store_equals_serial(fc, full_run, tmp_path):
    from swipe.testing import run_distributed
    out = tmp_path / "dp.zarr"
    assert run_distributed(_dp_rank, 2, args=(fc, _fcfg(out)), timeout=240) == [0, 1]
    a, b = _load(full_run), _load(out)
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)


def _swipe_rank(rank, world, fc, fcfg, shape):
    from aeris.forecast.parallel import swipe_forecaster
    from swipe.mesh import SwipeMesh
    mesh = SwipeMesh.build(**shape)
    local, stepper, role = swipe_forecaster(fc, mesh)
    run_forecast(local, fcfg, stepper=stepper, role=role)
    return role.writer


@pytest.mark.parametrize("shape", [dict(pp=2, wx=2), dict(dp=2, pp=2)],
                         ids=["pp2-wx2", "dp2-pp2"])
@pytest.mark.multiproc
def test_swipe_pipeline_store_equals_serial(fc, full_run, tmp_path, shape):
    """Members as pipeline micro-batches (forward-only schedule), window ranks, dp replicas."""
    from swipe.testing import run_distributed
    out = tmp_path / "swipe.zarr"
    writers = run_distributed(_swipe_rank, 4, args=(fc, _fcfg(out), shape), timeout=300)
    assert sum(writers) == shape.get("dp", 1)
    a, b = _load(full_run), _load(out)
    for v in a.data_vars:
        np.testing.assert_allclose(b[v].values, a[v].values, rtol=1e-5, atol=1e-6 * float(np.abs(a[v]).max()))


# ---- real signals and kills -----------------------------------------------------------------------
def _forecast_cmd(ckpt, out):
    import sys
    return [sys.executable, "-m", "aeris.cli", "forecast", "--checkpoint", str(ckpt[2]), "--out", str(out),
            "--init", "2020-08-01T00", "2020-08-01T06", "2020-08-01T12", "2020-08-01T18", "2020-08-02T00",
            "2020-08-02T06", "--steps", "3", "--members", "2", "--seed", "3", "--sampler-steps", "2",
            "--no-progress"]


def _after_first_unit(cmd, out, sig):
    """Run `cmd`, send `sig` once a unit is complete; returns the finished process."""
    import os
    import signal
    import subprocess
    import time
    from tests.support import REPO
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    prog = progress_dir(out)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if prog.is_dir() and any('"step": 3' in p.read_text() for p in prog.glob("*.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the signal"
    os.killpg(proc.pid, sig)
    out_, err = proc.communicate(timeout=240)
    return proc.returncode, out_, err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_signalled_forecast_resumes_to_the_same_store(ckpt, tmp_path, sig):
    import signal
    import subprocess
    from tests.support import REPO
    straight, cut = tmp_path / "straight.zarr", tmp_path / "cut.zarr"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    assert subprocess.run(_forecast_cmd(ckpt, straight), cwd=REPO, env=env, capture_output=True).returncode == 0
    rc, out, err = _after_first_unit(_forecast_cmd(ckpt, cut), cut, getattr(signal, sig))
    if sig == "SIGTERM":   # a clean stop between units, exit 0
        assert rc == 0 and "stopped by SIGTERM after" in out, err[-2000:]
    else:
        assert rc == -signal.SIGKILL
    done = [p for p in progress_dir(cut).glob("*.json")]
    assert 1 <= len(done) < 6
    p = subprocess.run(_forecast_cmd(ckpt, cut), cwd=REPO, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = _load(straight), _load(cut)
    for v in a.data_vars:   # byte for byte
        np.testing.assert_array_equal(a[v].values, b[v].values)

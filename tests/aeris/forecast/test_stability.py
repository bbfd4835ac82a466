"""Long-rollout stability report: persistence is stable with zero drift, blow-ups are caught at
the right step, the real model runs end to end through the CLI (JSON, table, PNG)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aeris.forecast.stability import channel_bounds, format_table, run_stability, write_report

INIT = "2020-08-02T00"








class PhysicalIncrement:
    """Stepper adding a fixed PHYSICAL increment per step to each channel (inc[c]); NaN from
    step `nan_step` on (0-based step index k, read from the member keys (seed, init, m, k))."""

    def __init__(self, ds, inc, nan_step=None):
        nrm = ds.normalizer
        self.r = torch.as_tensor((np.asarray(inc, dtype=np.float64) - nrm.diff_mean) / nrm.diff_std,
                                 dtype=torch.float32)
        self.nan_step = nan_step

    def __call__(self, cond, keys):
        r = self.r.expand(len(keys), *cond.shape[1:3], self.r.numel()).clone()
        if self.nan_step is not None and keys[0][3] >= self.nan_step:
            r[..., 0] = float("nan")
        return r


def _initial_fields(ref, fc):
    """Source fields at INIT on the model grid (last row dropped), (C, 8, 16) float64."""
    out = []
    for ch in fc.channels:
        name = {"t2m": "2m_temperature", "u10": "10m_u_component_of_wind", "v10": "10m_v_component_of_wind",
                "msl": "mean_sea_level_pressure"}.get(ch)
        if name is None:
            name = {"z": "geopotential", "t": "temperature"}[ch[0]]
            da = ref[name].sel(level=int(ch[1:]))
        else:
            da = ref[name]
        out.append(da.sel(time=np.datetime64(INIT)).values[:-1].astype(np.float64))
    return np.stack(out)


def _global_mean(field, lat):
    w = np.cos(np.deg2rad(lat))[:, None] * np.ones_like(field)
    return float((w * field).sum() / w.sum())


def test_persistence_is_stable_without_drift(fc, ckpt):
    _, ref, _ = ckpt
    n = len(fc.channels)
    rep = run_stability(fc, INIT, days=2, members=2, stepper=PhysicalIncrement(fc.ds, np.zeros(n)), progress=False)
    assert rep["stable"] and rep["steps_run"] == rep["steps_requested"] == 8
    assert rep["lead_hours"] == [6 * k for k in range(9)]
    x0 = _initial_fields(ref, fc)
    for c, ch in enumerate(fc.channels):
        r = rep["channels"][ch]
        assert r["status"] == "stable" and r["first_out_of_bounds_step"] is None
        # r is float32, so diff_std * r + diff_mean is ~1e-16 relative, not exactly 0
        assert abs(r["drift"]) < 1e-9 * fc.ds.normalizer.std[c] and r["max_abs_drift_std"] < 1e-9
        # independent global mean of the source field (float32 standardisation round-off)
        want = _global_mean(x0[c], fc.ds.latitudes)
        assert r["initial_mean"] == pytest.approx(want, rel=1e-6, abs=1e-6 * fc.ds.normalizer.std[c])
        assert r["min"] == pytest.approx(x0[c].min(), rel=1e-6) and r["max"] == pytest.approx(x0[c].max(), rel=1e-6)
        assert len(rep["global_mean"][ch]) == 9


def test_blow_up_reported_at_the_right_step(fc, ckpt):
    _, ref, _ = ckpt
    x0 = _initial_fields(ref, fc)
    c_t2m, c_msl = fc.channels.index("t2m"), fc.channels.index("msl")
    inc = np.zeros(len(fc.channels))
    inc[c_t2m] = 7.0      # K per step: t2m max crosses 350 K at a step we compute here
    inc[c_msl] = -150.0   # Pa per step: msl drifts down, stays within bounds over 1 day
    rep = run_stability(fc, INIT, days=3, members=1, stepper=PhysicalIncrement(fc.ds, inc), progress=False)
    hi = channel_bounds("t2m")[1]
    want = int(math.floor((hi - x0[c_t2m].max()) / 7.0)) + 1  # first k with max0 + 7 k > 350
    r = rep["channels"]["t2m"]
    assert 1 <= want <= rep["steps_run"]
    assert r["status"] == "out_of_bounds" and r["first_out_of_bounds_step"] == want
    assert r["first_out_of_bounds_lead_hours"] == 6 * want and not rep["stable"]
    assert r["drift"] == pytest.approx(7.0 * rep["steps_run"], rel=1e-5)
    m = rep["channels"]["msl"]
    assert m["status"] == "stable"
    assert m["drift"] == pytest.approx(-150.0 * rep["steps_run"], rel=1e-4)
    assert m["drift_std"] == pytest.approx(m["drift"] / fc.ds.normalizer.std[c_msl])
    assert abs(rep["channels"]["z500"]["drift_std"]) < 1e-9
    table = format_table(rep)
    assert "UNSTABLE" in table and "out_of_bounds" in table


def test_nan_reported_at_the_right_step_and_rollout_stops(fc):
    n = len(fc.channels)
    rep = run_stability(fc, INIT, days=5, members=2, stepper=PhysicalIncrement(fc.ds, np.zeros(n), nan_step=2),
                        progress=False)
    ch0 = fc.channels[0]
    r = rep["channels"][ch0]
    # step index k = 2 produces lead 3: the first non-finite state
    assert r["status"] == "non_finite" and r["first_nonfinite_step"] == 3 and r["first_out_of_bounds_step"] == 3
    assert rep["channels"][fc.channels[1]]["status"] == "stable"  # other channels untouched
    assert rep["steps_run"] == rep["steps_requested"]  # not ALL values non-finite: keeps going
    assert rep["global_mean"][ch0][3] is None and rep["global_mean"][ch0][2] is not None


def test_cli_stability_with_the_real_model(ckpt, tmp_path, capsys):
    from aeris.cli import main
    out = tmp_path / "stab"
    rc = main(["forecast-stability", "--checkpoint", str(ckpt[2]), "--init", INIT, "--days", "1",
               "--members", "2", "--sampler-steps", "1", "--out", str(out), "--no-progress"])
    rep = json.loads((out / "stability.json").read_text())
    assert rc == (0 if rep["stable"] else 3)
    assert rep["steps_run"] == 4 and rep["members"] == 2
    assert set(rep["channels"]) == {"t2m", "u10", "v10", "msl", "z500", "z850", "t500", "t850"}
    for ch, r in rep["channels"].items():
        assert r["first_nonfinite_step"] is None, ch  # a 1-step-trained model stays finite for a day
        assert len(rep["global_mean"][ch]) == 5
    png = (out / "stability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "stability of" in capsys.readouterr().out
    assert (out / "stability.txt").read_text().startswith("stability of")


def test_write_report_is_strict_json(fc, tmp_path):
    rep = run_stability(fc, INIT, days=1, members=1,
                        stepper=PhysicalIncrement(fc.ds, np.zeros(len(fc.channels)), nan_step=0), progress=False)
    paths = write_report(rep, tmp_path)
    data = json.loads(paths["json"].read_text())  # NaNs are written as null, not NaN
    assert data["channels"][fc.channels[0]]["first_nonfinite_step"] == 1

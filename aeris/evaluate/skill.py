"""Forecast store + truth store -> ensemble skill scores per channel and lead time.

`evaluate` scores a WB2-layout forecast (dims time = INIT time, prediction_timedelta, number,
[level], latitude, longitude) against a truth dataset in the canonical data layout, aligned
on valid time = init + lead. `write_scores` writes scores.nc / scores.json / scores.md
atomically; `run_evaluation` is the whole `aeris evaluate` pipeline (open, score, spectra,
write, plot).

Scores (see `aeris.evaluate.metrics` for the maths; averages over all init times):
  rmse_member0   RMSE of member number[0]
  rmse_ensmean   RMSE of the ensemble mean
  crps_fair      fair (M(M-1)) ensemble CRPS;  crps_ecdf  empirical-CDF (M^2) CRPS
  spread         sqrt(mean unbiased ensemble variance)
  ssr            spread / rmse_ensmean (x sqrt((M+1)/M) if ssr_correction)
  acc            ACC of the ensemble mean against a climatology (NaN without one)
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.store import open_store
from aeris.data.lexicon import LexiconError, lookup, parse_channel
from aeris.evaluate import metrics as M
from aeris.evaluate.skill_plots import plot_skill, plot_spectra

__all__ = [
    "HEADLINE_CHANNELS", "SCORE_NAMES", "EvaluationError", "default_channels", "channel_field",
    "common_grid", "evaluate", "evaluate_spectra", "scores_to_json", "scores_to_markdown",
    "write_scores", "write_netcdf", "run_evaluation",
]

HEADLINE_CHANNELS = ("t2m", "u10", "v10", "msl", "z500", "t850", "q700", "u850", "v850")
SCORE_NAMES = ("rmse_member0", "rmse_ensmean", "crps_fair", "crps_ecdf", "spread", "ssr", "acc")
_LEAD = "prediction_timedelta"


class EvaluationError(ValueError):
    """Forecast and truth that cannot be compared: grids, variables, levels or times differ."""


def _open(path: str | os.PathLike) -> xr.Dataset:
    """Open a store in the canonical layout (the project's one opener; lazy)."""
    return open_store(path)


# ---- channels ----------------------------------------------------------------------------------
def _has_channel(ds: xr.Dataset, channel: str) -> bool:
    name, level = parse_channel(channel)
    if name not in ds.data_vars:
        return False
    if level is None:
        return "level" not in ds[name].dims
    return "level" in ds[name].dims and level in [int(v) for v in ds[name]["level"].values]


def default_channels(forecast: xr.Dataset, truth: xr.Dataset,
                     candidates: Sequence[str] = HEADLINE_CHANNELS) -> tuple[list[str], list[str]]:
    """(the `candidates` present in BOTH stores, those skipped), in the order of `candidates`."""
    present = [c for c in candidates if _has_channel(forecast, c) and _has_channel(truth, c)]
    return present, [c for c in candidates if c not in present]


def channel_field(ds: xr.Dataset, channel: str, store: str) -> xr.DataArray:
    """The lazy field of one channel (``'z500'`` -> geopotential at 500 hPa, no level dim)."""
    try:
        name, level = parse_channel(channel)
    except LexiconError as e:
        raise EvaluationError(str(e)) from None
    if name not in ds.data_vars:
        raise EvaluationError(f"channel {channel!r}: variable {name!r} is not in the {store} store "
                              f"(it has {sorted(ds.data_vars)})")
    da = ds[name]
    if level is None:
        if "level" in da.dims:
            raise EvaluationError(f"channel {channel!r}: {name!r} in the {store} store has a level dim")
        return da
    have = [int(v) for v in da["level"].values] if "level" in da.dims else []
    if level not in have:
        raise EvaluationError(f"channel {channel!r}: level {level} hPa is not in the {store} store "
                              f"(levels of {name}: {have})")
    return da.sel(level=level, drop=True)


# ---- grids and times ---------------------------------------------------------------------------
def _non_pole(lat: np.ndarray) -> np.ndarray:
    return lat[np.abs(np.abs(lat) - 90.0) > 1e-6]


def common_grid(forecast: xr.Dataset, truth: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(latitudes, longitudes) both stores are scored on: the latitudes without the poles.

    Pole rows have area weight cos(+-90) = 0, so leaving them out changes no weighted score;
    it makes a forecast that drops one polar row (or pads it back with a copy or NaN)
    comparable with a pole-inclusive truth. Apart from the poles, latitudes and longitudes
    must be equal (to 1e-6 deg), else `EvaluationError` naming the coordinate.
    """
    for ds, store in ((forecast, "forecast"), (truth, "truth")):
        for d in (M.LAT, M.LON):
            if d not in ds.dims:
                raise EvaluationError(f"the {store} store has no {d!r} dimension (dims {dict(ds.sizes)})")
    grids = {}
    for d, pick in ((M.LAT, _non_pole), (M.LON, lambda a: a)):
        f = pick(np.sort(forecast[d].values.astype(np.float64)))
        t = pick(np.sort(truth[d].values.astype(np.float64)))
        if f.shape != t.shape or not np.allclose(f, t, rtol=0, atol=1e-6):
            def desc(a):
                return f"{a.size} points {a.min():g}..{a.max():g}" if a.size else "empty"
            raise EvaluationError(f"{d} grids differ{' (poles excluded)' if d == M.LAT else ''}: "
                                  f"forecast {desc(f)}, truth {desc(t)}")
        grids[d] = t
    return grids[M.LAT][::-1].copy(), grids[M.LON]  # latitude descending (canonical)


def _on_grid(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray, store: str) -> xr.DataArray:
    try:
        da = da.sel({M.LAT: lat, M.LON: lon}, method="nearest", tolerance=1e-6)
    except KeyError as e:
        raise EvaluationError(f"the {store} grid does not contain the common grid: {e}") from None
    return da.assign_coords({M.LAT: lat, M.LON: lon})  # exact coords: no silent misalignment


def _valid_times(forecast: xr.Dataset) -> xr.DataArray:
    """valid time = init + lead, dims (time, prediction_timedelta)."""
    return forecast[M.TIME] + forecast[_LEAD]


def _check_times(forecast: xr.Dataset, truth: xr.Dataset) -> None:
    for d in (M.TIME, _LEAD):
        if d not in forecast.dims:
            raise EvaluationError(f"the forecast store has no {d!r} dimension (WB2 forecast layout: "
                                  f"time = init, prediction_timedelta, number); dims {dict(forecast.sizes)}")
    if M.TIME not in truth.dims:
        raise EvaluationError(f"the truth store has no 'time' dimension (dims {dict(truth.sizes)})")
    valid = pd.DatetimeIndex(np.unique(_valid_times(forecast).values.ravel()))
    absent = valid.difference(pd.DatetimeIndex(truth[M.TIME].values))
    if len(absent):
        tt = truth[M.TIME].values
        raise EvaluationError(
            f"valid times (init + lead) missing from the truth store: "
            f"{[t.isoformat() for t in absent[:5]]}{' ...' if len(absent) > 5 else ''} ({len(absent)} of "
            f"{len(valid)}); truth covers {str(tt.min())[:19]} .. {str(tt.max())[:19]}")


def _with_members(forecast: xr.Dataset) -> xr.Dataset:
    if M.MEMBER in forecast.dims:
        return forecast
    warnings.warn("forecast has no ensemble dim 'number': scored as one member "
                  "(crps_fair, spread and ssr are NaN)", stacklevel=3)
    return forecast.expand_dims({M.MEMBER: [0]})


# ---- scores --------------------------------------------------------------------------------------
def _lead_scores(f: xr.DataArray, y: xr.DataArray, clim: xr.DataArray | None, w: xr.DataArray,
                 ssr_correction: bool) -> dict[str, float]:
    """All scores of one channel at one lead: f (time, number, lat, lon), y (time, lat, lon)."""
    n_members = f.sizes[M.MEMBER]
    ens_mean = f.mean(M.MEMBER, skipna=False)
    out = {
        "rmse_member0": M.rmse(f.isel({M.MEMBER: 0}), y, weights=w),
        "rmse_ensmean": M.rmse(ens_mean, y, weights=w),
        "crps_fair": M.crps_score(f, y, method="fair", weights=w),
        "crps_ecdf": M.crps_score(f, y, method="ecdf", weights=w),
    }
    if n_members >= 2:
        out["spread"] = M.ensemble_spread(f, weights=w)
        out["ssr"] = M.spread_skill_ratio(f, y, weights=w, finite_ensemble_correction=ssr_correction)
    if clim is not None:
        out["acc"] = M.acc(ens_mean, y, clim, weights=w)
    return {k: float(v) for k, v in out.items()}


def evaluate(forecast: xr.Dataset, truth: xr.Dataset, channels: Sequence[str] | None = None,
             climatology: xr.Dataset | None = None, *, ssr_correction: bool = False,
             progress: bool = True) -> xr.Dataset:
    """Scores of `forecast` against `truth` per channel and lead time.

    channels: lexicon channel names (``'z500'``, ``'t2m'``); None = the headline channels
    present in both stores (the skipped ones are listed in attrs ``skipped_channels``). An
    asked-for channel missing from either store is an `EvaluationError`.
    climatology: from `metrics.compute_climatology` (dims dayofyear, hour, ...) for ACC;
    None leaves acc NaN.
    Each (channel, lead) is scored over all init times (see module docstring); the truth is
    taken at valid time init + lead, which must all be in the truth store. Scored on the
    common grid (`common_grid`: poles excluded, weight 0 anyway).

    Returns a Dataset with one variable per score, dims (channel, prediction_timedelta),
    coordinates variable/level/units per channel and lead_hours.
    """
    forecast = _with_members(forecast)
    _check_times(forecast, truth)
    skipped: list[str] = []
    if channels is None:
        channels, skipped = default_channels(forecast, truth)
        if not channels:
            raise EvaluationError(f"no headline channel {list(HEADLINE_CHANNELS)} is in both stores "
                                  f"(forecast has {sorted(forecast.data_vars)}, truth has "
                                  f"{sorted(truth.data_vars)})")
    channels = list(channels)
    if not channels:
        raise EvaluationError("no channels to evaluate")
    lat, lon = common_grid(forecast, truth)
    w = M.area_weights(lat)
    leads = forecast[_LEAD].values
    inits = forecast[M.TIME]
    values = {k: np.full((len(channels), len(leads)), np.nan) for k in SCORE_NAMES}
    no_clim: list[str] = []
    pairs = [(c, i) for c in range(len(channels)) for i in range(len(leads))]
    fields: dict[int, tuple] = {}
    for c, i in tqdm(pairs, desc="evaluate", unit="lead", disable=not progress):
        ch = channels[c]
        if c not in fields:
            fields = {c: (channel_field(forecast, ch, "forecast"), channel_field(truth, ch, "truth"),
                          None if climatology is None else channel_field(climatology, ch, "climatology"))}
        fda, tda, cda = fields[c]
        valid = inits + forecast[_LEAD][i]  # dims (time,), coordinate time = init
        f = _on_grid(fda.isel({_LEAD: i}, drop=True), lat, lon, "forecast")
        f = f.transpose(M.TIME, M.MEMBER, M.LAT, M.LON).load()
        y = _on_grid(tda.sel({M.TIME: valid.values}), lat, lon, "truth")
        y = y.assign_coords({M.TIME: inits.values}).transpose(M.TIME, M.LAT, M.LON).load()
        clim = None
        if cda is not None:
            clim = M.climatology_at(_on_grid(cda, lat, lon, "climatology"), valid)
            clim = clim.transpose(M.TIME, M.LAT, M.LON).load()
            if bool(clim.isnull().any()):
                no_clim.append(f"{ch}@{pd.Timedelta(leads[i])}")
        for k, v in _lead_scores(f, y, clim, w, ssr_correction).items():
            values[k][c, i] = v
    if no_clim:
        warnings.warn(f"climatology undefined at some valid times (acc NaN) for {no_clim[:6]}"
                      f"{' ...' if len(no_clim) > 6 else ''}: widen climatology period/window", stacklevel=2)
    names = [parse_channel(ch) for ch in channels]
    coords = {
        "channel": channels,
        _LEAD: leads,
        "variable": ("channel", [n for n, _ in names]),
        "level": ("channel", [np.nan if lv is None else float(lv) for _, lv in names]),
        "units": ("channel", [lookup(n).units for n, _ in names]),
        "lead_hours": (_LEAD, (leads / np.timedelta64(1, "h")).astype(np.float64)),
    }
    out = xr.Dataset({k: (("channel", _LEAD), v) for k, v in values.items()}, coords=coords)
    out.attrs.update(
        n_members=int(forecast.sizes[M.MEMBER]), n_inits=int(inits.size),
        init_times=", ".join(str(t)[:16] for t in inits.values),
        ssr_finite_ensemble_correction=int(ssr_correction),
        skipped_channels=", ".join(skipped),
        climatology=str(climatology.attrs.get("climatology_period", "given")) if climatology is not None else "none",
        conventions="WeatherBench2: cos-latitude weights (mean 1, poles excluded); MSE averaged over "
                    "inits before the root; CRPS fair = M(M-1), ecdf = M^2; ACC of ensemble mean, "
                    "per init then averaged",
    )
    for k, doc in (("rmse_member0", "RMSE of member number[0]"), ("rmse_ensmean", "RMSE of the ensemble mean"),
                   ("crps_fair", "fair ensemble CRPS, spread term / (2M(M-1))"),
                   ("crps_ecdf", "empirical-CDF ensemble CRPS, spread term / (2M^2)"),
                   ("spread", "sqrt(mean unbiased ensemble variance)"),
                   ("ssr", "spread / rmse_ensmean" + (" x sqrt((M+1)/M)" if ssr_correction else "")),
                   ("acc", "anomaly correlation of the ensemble mean")):
        out[k].attrs["description"] = doc
    return out


def evaluate_spectra(forecast: xr.Dataset, truth: xr.Dataset, channels: Sequence[str],
                     leads: Sequence | None = None, *, member: int = 0,
                     max_leads: int = 4) -> xr.Dataset:
    """Mean zonal power spectra (`metrics.mean_zonal_spectrum`, all latitudes but the poles,
    averaged over init times) of forecast member `member` and of the truth at the same valid
    times, dims (channel, prediction_timedelta, zonal_wavenumber).

    leads: leads to use (timedeltas); None = up to `max_leads` evenly spread non-zero leads.
    """
    forecast = _with_members(forecast)
    _check_times(forecast, truth)
    lat, lon = common_grid(forecast, truth)
    all_leads = forecast[_LEAD].values
    if leads is None:
        nz = all_leads[all_leads > np.timedelta64(0, "ns")]
        nz = nz if nz.size else all_leads
        idx = np.unique(np.linspace(0, nz.size - 1, min(max_leads, nz.size)).round().astype(int))
        leads = nz[idx]
    leads = np.asarray(leads, dtype="timedelta64[ns]")
    missing = [str(pd.Timedelta(x)) for x in leads if x not in all_leads]
    if missing:
        raise EvaluationError(f"leads {missing} are not in the forecast store")
    fc, tr = [], []
    for ch in channels:
        fda, tda = channel_field(forecast, ch, "forecast"), channel_field(truth, ch, "truth")
        fl, tl = [], []
        for lead in leads:
            f = _on_grid(fda.sel({_LEAD: lead}, drop=True).isel({M.MEMBER: member}, drop=True),
                         lat, lon, "forecast").load()
            valid = (forecast[M.TIME] + lead).values
            y = _on_grid(tda.sel({M.TIME: valid}), lat, lon, "truth").load()
            fl.append(M.mean_zonal_spectrum(f).drop_vars([c for c in f.coords if c not in (M.LAT, M.LON)],
                                                         errors="ignore"))
            tl.append(M.mean_zonal_spectrum(y).drop_vars([c for c in y.coords if c not in (M.LAT, M.LON)],
                                                         errors="ignore"))
        fc.append(xr.concat(fl, dim=pd.Index(leads, name=_LEAD)))
        tr.append(xr.concat(tl, dim=pd.Index(leads, name=_LEAD)))
    idx = pd.Index(list(channels), name="channel")
    out = xr.Dataset({"forecast_power": xr.concat(fc, dim=idx), "truth_power": xr.concat(tr, dim=idx)})
    out = out.assign_coords(lead_hours=(_LEAD, (leads / np.timedelta64(1, "h")).astype(np.float64)))
    out.attrs.update(member=member, normalisation="sum over wavenumbers = zonal mean of x^2 (Parseval)")
    return out


# ---- writing -----------------------------------------------------------------------------------

def _finite(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """`ds.to_netcdf`, atomically."""
    return atomic_write(Path(path), lambda p: ds.to_netcdf(p))


def scores_to_json(scores: xr.Dataset) -> dict:
    """{"lead_hours": [...], "channels": [...], "scores": {channel: {score: [per lead]}}, attrs}."""
    present = [k for k in SCORE_NAMES if k in scores]
    return {
        "lead_hours": [float(h) for h in scores["lead_hours"].values],
        "channels": [str(c) for c in scores["channel"].values],
        "units": {str(c): str(u) for c, u in zip(scores["channel"].values, scores["units"].values)},
        "scores": {str(ch): {k: [_finite(v) for v in scores[k].sel(channel=ch).values] for k in present}
                   for ch in scores["channel"].values},
        "attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in scores.attrs.items()},
    }


def scores_to_markdown(scores: xr.Dataset, max_columns: int = 10) -> str:
    """One table per score: a row per channel, a column per lead (at most `max_columns`,
    evenly spread and always including the last lead)."""
    hours = scores["lead_hours"].values
    cols = np.unique(np.linspace(0, hours.size - 1, min(max_columns, hours.size)).round().astype(int))
    lines = [f"# Skill scores ({scores.attrs.get('n_members', '?')} members, "
             f"{scores.attrs.get('n_inits', '?')} inits)", ""]
    if scores.attrs.get("skipped_channels"):
        lines += [f"Skipped headline channels (not in both stores): {scores.attrs['skipped_channels']}", ""]
    for k in SCORE_NAMES:
        if k not in scores or bool(scores[k].isnull().all()):
            continue
        desc = scores[k].attrs.get("description", "")
        lines += [f"## {k}" + (f" — {desc}" if desc else ""), "",
                  "| channel | units | " + " | ".join(f"{hours[j]:g} h" for j in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for c, ch in enumerate(scores["channel"].values):
            units = "1" if k in ("ssr", "acc") else str(scores["units"].values[c])
            vals = scores[k].values[c, cols]
            lines.append(f"| {ch} | {units} | " + " | ".join(
                "—" if not np.isfinite(v) else f"{v:.4g}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def write_scores(scores: xr.Dataset, out_dir: str | os.PathLike) -> dict[str, Path]:
    """scores.nc, scores.json and scores.md in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    return {
        "netcdf": write_netcdf(scores, out / "scores.nc"),
        "json": atomic_write(out / "scores.json",
                        lambda p: p.write_text(json.dumps(scores_to_json(scores), indent=1))),
        "markdown": atomic_write(out / "scores.md", lambda p: p.write_text(scores_to_markdown(scores))),
    }


def run_evaluation(forecast_path: str | os.PathLike, truth_path: str | os.PathLike,
                   out_dir: str | os.PathLike, channels: Sequence[str] | None = None,
                   climatology_period: Sequence[str] | None = None, *, window_days: int = 61,
                   ssr_correction: bool = False, plots: bool = True, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Path]:
    """The `aeris evaluate` pipeline: open both stores, optional climatology from the truth
    over `climatology_period`, `evaluate`, `evaluate_spectra`, write scores + spectra.nc,
    and plots (skill.png, spectra.png). Returns the written paths by kind."""
    forecast, truth = _open(forecast_path), _open(truth_path)
    if channels is None:
        channels, skipped = default_channels(_with_members(forecast), truth)
        if skipped:
            log(f"skipping headline channels not in both stores: {', '.join(skipped)}")
        if not channels:
            raise EvaluationError("no headline channel is in both stores; pass --channels")
    else:
        skipped = []
    climatology = None
    if climatology_period is not None:
        names = sorted({parse_channel(c)[0] for c in channels})
        missing = [n for n in names if n not in truth.data_vars]
        if missing:
            raise EvaluationError(f"variables {missing} are not in the truth store")
        log(f"climatology from the truth over {climatology_period[0]} .. {climatology_period[1]} "
            f"({window_days}-day window)")
        climatology = M.compute_climatology(truth[names], climatology_period, window_days=window_days)
    scores = evaluate(forecast, truth, channels, climatology, ssr_correction=ssr_correction,
                      progress=progress)
    scores.attrs["skipped_channels"] = ", ".join(skipped)
    scores.attrs.update(forecast=str(forecast_path), truth=str(truth_path))
    paths = write_scores(scores, out_dir)
    spectra = evaluate_spectra(forecast, truth, channels)
    paths["spectra"] = write_netcdf(spectra, Path(out_dir) / "spectra.nc")
    if plots:
        paths["skill_plot"] = plot_skill(scores, Path(out_dir) / "skill.png")
        paths["spectra_plot"] = plot_spectra(spectra, Path(out_dir) / "spectra.png")
    log(scores_to_markdown(scores))
    return paths

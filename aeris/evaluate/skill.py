"""Forecast store + truth store -> ensemble skill scores per channel and lead time.

`evaluate` scores a WB2-layout forecast (dims time = INIT time, prediction_timedelta, number,
[level], latitude, longitude) against a truth dataset in the canonical data layout, aligned
on valid time = init + lead. `write_scores` writes scores.nc / scores.json / scores.md
atomically; `run_evaluation` is the whole `aeris evaluate` pipeline (open, score, spectra,
write, plot). Stores are opened here only (`open_forecasts`, `open_truth`).

Scores (see `aeris.evaluate.metrics` for the maths; averages over all init times):
  rmse_member0   RMSE of member number[0]
  rmse_ensmean   RMSE of the ensemble mean
  crps_fair      fair (M(M-1)) ensemble CRPS;  crps_ecdf  empirical-CDF (M^2) CRPS
  spread         sqrt(mean unbiased ensemble variance)
  ssr            spread / rmse_ensmean (x sqrt((M+1)/M) if ssr_correction); NaN at lead 0
                 when the members are identical (the initial condition: 0 / 0)
  acc            ACC of the ensemble mean against a climatology (NaN without one)
and the baselines (docs/evaluation.md, "Baselines"), deterministic, so their CRPS is the MAE:
  rmse_persistence, crps_persistence, acc_persistence   the truth at the init time
  rmse_climatology, crps_climatology                     the climatology at the valid time
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.stats import load_stats, stats_for
from aeris.data.store import open_store
from aeris.data.lexicon import LexiconError, lookup, parse_channel
from aeris.evaluate import metrics as M
from aeris.evaluate.skill_plots import plot_skill, plot_spectra

__all__ = [
    "HEADLINE_CHANNELS", "SCORE_NAMES", "MODEL_SCORES", "BASELINE_SCORES", "HEADLINE_SCORES",
    "EvaluationError", "open_forecasts", "open_truth", "default_channels", "channel_field",
    "common_grid", "climatology_for", "channel_std", "evaluate", "evaluate_spectra", "headline_scores",
    "headline_to_json", "scores_to_json", "scores_to_markdown", "write_scores", "write_netcdf",
    "run_evaluation",
]

HEADLINE_CHANNELS = ("t2m", "u10", "v10", "msl", "z500", "t850", "q700", "u850", "v850")
MODEL_SCORES = ("rmse_member0", "rmse_ensmean", "crps_fair", "crps_ecdf", "spread", "ssr", "acc")
BASELINE_SCORES = ("rmse_persistence", "crps_persistence", "acc_persistence",
                   "rmse_climatology", "crps_climatology")
SCORE_NAMES = MODEL_SCORES + BASELINE_SCORES
# the headline: means over channels of standardised scores (see `headline_scores`)
HEADLINE_SCORES = ("rmse_ensmean", "rmse_persistence", "rmse_climatology", "crps_fair",
                   "crps_persistence", "crps_climatology", "spread", "ssr")
_LEAD = "prediction_timedelta"
_DESCRIPTIONS = {
    "rmse_member0": "RMSE of member number[0]", "rmse_ensmean": "RMSE of the ensemble mean",
    "crps_fair": "fair ensemble CRPS, spread term / (2M(M-1))",
    "crps_ecdf": "empirical-CDF ensemble CRPS, spread term / (2M^2)",
    "spread": "sqrt(mean unbiased ensemble variance)",
    "acc": "anomaly correlation of the ensemble mean",
    "rmse_persistence": "RMSE of persistence (the truth at the init time)",
    "crps_persistence": "MAE of persistence (the CRPS of a deterministic forecast)",
    "acc_persistence": "anomaly correlation of persistence",
    "rmse_climatology": "RMSE of the climatology at the valid time",
    "crps_climatology": "MAE of the climatology (the CRPS of a deterministic forecast)",
}


class EvaluationError(ValueError):
    """Forecast and truth that cannot be compared: grids, variables, levels or times differ."""


def open_truth(path: str | os.PathLike) -> xr.Dataset:
    """Open a truth store in the canonical layout (the project's one opener; lazy)."""
    return open_store(path)


def open_forecasts(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> xr.Dataset:
    """One or more forecast stores as one dataset, concatenated along the init time (lazy).

    The stores must have the same leads, members, variables and levels and no init in common
    (e.g. the Laura inits and validation-period inits of the demo, scored together)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise EvaluationError("no forecast store given")
    stores = [open_store(p) for p in paths]
    if len(stores) == 1:
        return stores[0]
    first = stores[0]
    for p, ds in zip(paths[1:], stores[1:]):
        if sorted(ds.data_vars) != sorted(first.data_vars):
            raise EvaluationError(f"forecast stores differ in variables: {paths[0]} has "
                                  f"{sorted(first.data_vars)}, {p} has {sorted(ds.data_vars)}")
        for d in (_LEAD, M.MEMBER, "level"):
            a = first[d].values if d in first.coords else None
            b = ds[d].values if d in ds.coords else None
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                raise EvaluationError(f"forecast stores differ in {d!r}: {paths[0]} has "
                                      f"{None if a is None else a.tolist()}, {p} has "
                                      f"{None if b is None else b.tolist()}")
    out = xr.concat(stores, dim=M.TIME, data_vars="all", coords="minimal", compat="override",
                    join="override", combine_attrs="drop_conflicts")
    t = pd.DatetimeIndex(out[M.TIME].values)
    if t.has_duplicates:
        raise EvaluationError(f"forecast stores share init times {sorted(set(t[t.duplicated()].astype(str)))}")
    out = out.sortby(M.TIME)
    out.attrs["source"] = ", ".join(str(p) for p in paths)
    return out


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


def _check_times(forecast: xr.Dataset, truth: xr.Dataset, inits_too: bool = False) -> None:
    for d in (M.TIME, _LEAD):
        if d not in forecast.dims:
            raise EvaluationError(f"the forecast store has no {d!r} dimension (WB2 forecast layout: "
                                  f"time = init, prediction_timedelta, number); dims {dict(forecast.sizes)}")
    if M.TIME not in truth.dims:
        raise EvaluationError(f"the truth store has no 'time' dimension (dims {dict(truth.sizes)})")
    valid = pd.DatetimeIndex(np.unique(_valid_times(forecast).values.ravel()))
    if inits_too:  # persistence is the truth at the init time
        valid = valid.union(pd.DatetimeIndex(forecast[M.TIME].values))
    absent = valid.difference(pd.DatetimeIndex(truth[M.TIME].values))
    if len(absent):
        tt = truth[M.TIME].values
        raise EvaluationError(
            f"{'init and ' if inits_too else ''}valid times (init + lead) missing from the truth store: "
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
                 ssr_correction: bool, persistence: xr.DataArray | None = None,
                 lead_zero: bool = False, baselines: bool = True) -> dict[str, float]:
    """All scores of one channel at one lead: f (time, number, lat, lon), y, clim and
    persistence (time, lat, lon); `lead_zero`: this lead is the initial time; `baselines`:
    also score persistence (when given) and the climatology (when given)."""
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
        if lead_zero and bool((f == f.isel({M.MEMBER: 0})).all()):
            # identical members (the initial condition): no spread and no error beyond
            # rounding, so spread/skill is 0 / 0, undefined -- not 0
            out["ssr"] = np.nan
    if clim is not None:
        out["acc"] = M.acc(ens_mean, y, clim, weights=w)
    if baselines and persistence is not None:
        out["rmse_persistence"] = M.rmse(persistence, y, weights=w)
        out["crps_persistence"] = M.mae(persistence, y, weights=w)
        if clim is not None:
            out["acc_persistence"] = M.acc(persistence, y, clim, weights=w)
    if baselines and clim is not None:
        out["rmse_climatology"] = M.rmse(clim, y, weights=w)
        out["crps_climatology"] = M.mae(clim, y, weights=w)
    return {k: float(v) for k, v in out.items()}


def evaluate(forecast: xr.Dataset, truth: xr.Dataset, channels: Sequence[str] | None = None,
             climatology: xr.Dataset | None = None, *, ssr_correction: bool = False,
             baselines: bool = True, progress: bool = True) -> xr.Dataset:
    """Scores of `forecast` against `truth` per channel and lead time, with the baselines.

    channels: lexicon channel names (``'z500'``, ``'t2m'``); None = the headline channels
    present in both stores (the skipped ones are listed in attrs ``skipped_channels``). An
    asked-for channel missing from either store is an `EvaluationError`.
    climatology: from `metrics.compute_climatology` (dims [dayofyear,] hour, ...) for ACC and
    the climatology baseline; None leaves acc, acc_persistence and the climatology scores NaN.
    baselines: score persistence (the truth at the init time, which must be in the truth
    store) and, with a climatology, the climatology; False leaves them NaN.
    Each (channel, lead) is scored over all init times (see module docstring); the truth is
    taken at valid time init + lead, which must all be in the truth store. Scored on the
    common grid (`common_grid`: poles excluded, weight 0 anyway).

    Returns a Dataset with one variable per score, dims (channel, prediction_timedelta),
    coordinates variable/level/units per channel and lead_hours.
    """
    forecast = _with_members(forecast)
    _check_times(forecast, truth, inits_too=baselines)
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
        pers = None
        if baselines:
            pers = _on_grid(tda.sel({M.TIME: inits.values}), lat, lon, "truth")
            pers = pers.transpose(M.TIME, M.LAT, M.LON).load()
        clim = None
        if cda is not None:
            clim = M.climatology_at(_on_grid(cda, lat, lon, "climatology"), valid)
            clim = clim.transpose(M.TIME, M.LAT, M.LON).load()
            if bool(clim.isnull().any()):
                no_clim.append(f"{ch}@{pd.Timedelta(leads[i])}")
        if clim is not None:
            clim = clim.assign_coords({M.TIME: inits.values})
        lead_zero = bool(leads[i] == np.timedelta64(0, "ns"))
        for k, v in _lead_scores(f, y, clim, w, ssr_correction, pers, lead_zero, baselines).items():
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
        baselines="persistence" + (", climatology" if climatology is not None else "") if baselines else "none",
        conventions="WeatherBench2: cos-latitude weights (mean 1, poles excluded); MSE averaged over "
                    "inits before the root; CRPS fair = M(M-1), ecdf = M^2; ACC of ensemble mean, "
                    "per init then averaged; deterministic baselines: CRPS = MAE",
    )
    out.attrs.update(_climatology_attrs(climatology))
    for k in SCORE_NAMES:
        out[k].attrs["description"] = (_DESCRIPTIONS[k] if k != "ssr" else
                                       "spread / rmse_ensmean" + (" x sqrt((M+1)/M)" if ssr_correction else ""))
    return out


def _climatology_attrs(climatology: xr.Dataset | None) -> dict:
    """What the scores say about their climatology: period, kind, window, years."""
    if climatology is None:
        return {"climatology": "none"}
    a = climatology.attrs
    out = {"climatology": str(a.get("climatology_period", "given")),
           "climatology_kind": str(a.get("climatology_kind", "doy_hour" if "dayofyear" in climatology.dims
                                         else "hour"))}
    for k in ("climatology_window_days", "climatology_years", "climatology_min_years",
              "climatology_requested_period", "climatology_note"):
        if k in a:
            out[k] = a[k]
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


# ---- climatology and headline ---------------------------------------------------------------------
def climatology_for(truth: xr.Dataset, channels: Sequence[str], valid_times: np.ndarray,
                    period: Sequence[str] | None = None, *, kind: str = "auto", window_days: int = 61,
                    min_years: int = 3) -> xr.Dataset:
    """The climatology of the variables of `channels` over `period` of the truth store
    (docs/evaluation.md, "Baselines"). kind ``auto``: by day of year and hour where every
    (day-of-year, hour) bin of `valid_times` has >= `min_years` distinct years within the
    `window_days` window, else by hour of day (`metrics.choose_climatology_kind`);
    ``doy_hour`` / ``hour`` force one. period None = every time of the truth store (then the
    scored valid times are part of it: the attrs say so)."""
    if kind not in ("auto",) + M.CLIMATOLOGY_KINDS:
        raise EvaluationError(f"climatology kind must be auto, doy_hour or hour, got {kind!r}")
    names = sorted({parse_channel(c)[0] for c in channels})
    missing = [n for n in names if n not in truth.data_vars]
    if missing:
        raise EvaluationError(f"variables {missing} are not in the truth store")
    try:
        sub = M.select_period(truth[names], period, what="climatology")
    except ValueError as e:
        raise EvaluationError(str(e)) from None
    times = sub[M.TIME].values
    chosen = kind if kind != "auto" else M.choose_climatology_kind(times, valid_times, window_days=window_days,
                                                                   min_years=min_years)
    clim = M.compute_climatology(sub, window_days=window_days, kind=chosen)
    clim.attrs["climatology_min_years"] = min_years
    clim.attrs["climatology_requested_period"] = ("the whole truth store" if period is None
                                                  else f"{period[0]} .. {period[1]}")
    inside = np.isin(np.asarray(valid_times, dtype="datetime64[ns]").ravel(), times.astype("datetime64[ns]"))
    if inside.any():
        clim.attrs["climatology_note"] = (f"{int(inside.sum())} of {inside.size} scored valid times lie in the "
                                          f"climatology period (an in-sample, optimistic baseline)")
    return clim


def headline_scores(scores: xr.Dataset, std: Mapping[str, float],
                    channels: Sequence[str] | None = None) -> xr.Dataset:
    """Means over channels of standardised scores, per lead (docs/evaluation.md, "Headline scores"):

        S(lead) = (1 / C) sum_c score_c(lead) / std_c     rmse_*, crps_*, spread
        SSR(lead) = (1 / C) sum_c ssr_c(lead)              (already dimensionless)

    with std_c the channel's climatological standard deviation (the normalisation statistics),
    over `channels` (None = the scored headline channels). NaNs propagate."""
    have = [str(c) for c in scores["channel"].values]
    channels = [c for c in HEADLINE_CHANNELS if c in have] if channels is None else list(channels)
    if not channels:
        raise EvaluationError(f"no headline channel {list(HEADLINE_CHANNELS)} among the scored {have}")
    absent = [c for c in channels if c not in have]
    if absent:
        raise EvaluationError(f"channels {absent} were not scored (scored: {have})")
    no_std = [c for c in channels if c not in std or not np.isfinite(std[c]) or std[c] <= 0]
    if no_std:
        raise EvaluationError(f"no positive standard deviation for channels {no_std}")
    sub = scores.sel(channel=channels)
    scale = xr.DataArray([float(std[c]) for c in channels], dims=["channel"], coords={"channel": channels})
    out = xr.Dataset(coords={_LEAD: scores[_LEAD], "lead_hours": scores["lead_hours"]})
    for k in HEADLINE_SCORES:
        if k not in sub:
            continue
        v = sub[k] if k == "ssr" else sub[k] / scale
        out[k] = v.mean("channel", skipna=False).drop_vars(
            [c for c in v.coords if c not in (_LEAD, "lead_hours")], errors="ignore")
    out.attrs.update(channels=", ".join(channels), standardised="score / std(channel), mean over channels; "
                     "ssr: mean over channels",
                     **{k: scores.attrs[k] for k in ("n_members", "n_inits", "init_times",
                                                     "ssr_finite_ensemble_correction") if k in scores.attrs})
    return out


def headline_to_json(head: xr.Dataset) -> dict:
    """{"lead_hours": [...], "channels": [...], score: [per lead] (null = NaN)}."""
    return {"lead_hours": [float(h) for h in head["lead_hours"].values],
            "channels": [c.strip() for c in str(head.attrs.get("channels", "")).split(",") if c.strip()],
            **{k: [_finite(float(v)) for v in head[k].values] for k in HEADLINE_SCORES if k in head}}


def channel_std(stats: str | os.PathLike, channels: Sequence[str]) -> dict[str, float]:
    """{channel: std} from a statistics file, for the `channels` it has (`headline_scores`)."""
    data = load_stats(stats)
    have = [str(c) for c in data["channel"].values]
    use = [c for c in channels if c in have]
    return dict(zip(use, stats_for(data, use)["std"].tolist()))


def _stats_path(stats: str | os.PathLike | None, truth_path: str | os.PathLike) -> str | None:
    """``auto``: the truth store's statistics file beside it when it exists; None: none."""
    if stats is None or str(stats) == "none":
        return None
    if str(stats) == "auto":
        p = f"{str(truth_path).rstrip('/')}.stats.nc"
        return p if Path(p).exists() else None
    return str(stats)


# ---- writing -----------------------------------------------------------------------------------

def _finite(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """`ds.to_netcdf`, atomically."""
    return atomic_write(Path(path), lambda p: ds.to_netcdf(p))


def scores_to_json(scores: xr.Dataset, headline: xr.Dataset | None = None) -> dict:
    """{"lead_hours": [...], "channels": [...], "scores": {channel: {score: [per lead]}}, attrs,
    and "headline" (`headline_to_json`) when given}."""
    present = [k for k in SCORE_NAMES if k in scores]
    out = {
        "lead_hours": [float(h) for h in scores["lead_hours"].values],
        "channels": [str(c) for c in scores["channel"].values],
        "units": {str(c): str(u) for c, u in zip(scores["channel"].values, scores["units"].values)},
        "scores": {str(ch): {k: [_finite(v) for v in scores[k].sel(channel=ch).values] for k in present}
                   for ch in scores["channel"].values},
        "attrs": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in scores.attrs.items()},
    }
    if headline is not None:
        out["headline"] = headline_to_json(headline)
    return out


def _fmt(v: float, spec: str = ".4g") -> str:
    return "—" if not np.isfinite(v) else format(v, spec)


def headline_to_markdown(head: xr.Dataset, max_rows: int = 12) -> list[str]:
    """The headline table: a row per lead (at most `max_rows`, evenly spread), the model's
    standardised RMSE beside persistence and climatology, their ratios, CRPS and SSR."""
    hours = head["lead_hours"].values
    rows = np.unique(np.linspace(0, hours.size - 1, min(max_rows, hours.size)).round().astype(int))
    v = {k: head[k].values if k in head else np.full(hours.size, np.nan) for k in HEADLINE_SCORES}
    with np.errstate(invalid="ignore", divide="ignore"):
        rp, rc = v["rmse_ensmean"] / v["rmse_persistence"], v["rmse_ensmean"] / v["rmse_climatology"]
    lines = [f"## Headline — standardised scores, mean over {head.attrs.get('channels', '')}", "",
             "| lead | RMSE ens. mean | persistence | climatology | / persistence | / climatology "
             "| CRPS | MAE persistence | MAE climatology | spread/skill |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for j in rows:
        lines.append(f"| {hours[j]:g} h | " + " | ".join(_fmt(x[j]) for x in (
            v["rmse_ensmean"], v["rmse_persistence"], v["rmse_climatology"], rp, rc, v["crps_fair"],
            v["crps_persistence"], v["crps_climatology"], v["ssr"])) + " |")
    return lines + [""]


def scores_to_markdown(scores: xr.Dataset, max_columns: int = 10, headline: xr.Dataset | None = None) -> str:
    """The headline table (when given), then one table per score: a row per channel, a column
    per lead (at most `max_columns`, evenly spread and always including the last lead)."""
    hours = scores["lead_hours"].values
    cols = np.unique(np.linspace(0, hours.size - 1, min(max_columns, hours.size)).round().astype(int))
    a = scores.attrs
    lines = [f"# Skill scores ({a.get('n_members', '?')} members, {a.get('n_inits', '?')} inits)", ""]
    if a.get("init_times"):
        lines += [f"Inits: {a['init_times']}", ""]
    if a.get("climatology", "none") != "none":
        kind = a.get("climatology_kind", "?")
        how = (f"by day of year and hour, {a.get('climatology_window_days', '?')}-day window" if kind == "doy_hour"
               else "by hour of day")
        lines += [f"Climatology: {how}, from the truth over {a['climatology']} "
                  f"({a.get('climatology_years', '?')} year(s); a day-of-year climatology needs >= "
                  f"{a.get('climatology_min_years', '?')} per bin)."
                  + (f" Note: {a['climatology_note']}." if a.get("climatology_note") else ""), ""]
    if a.get("skipped_channels"):
        lines += [f"Skipped headline channels (not in both stores): {a['skipped_channels']}", ""]
    if headline is not None:
        lines += headline_to_markdown(headline)
    for k in SCORE_NAMES:
        if k not in scores or bool(scores[k].isnull().all()):
            continue
        desc = scores[k].attrs.get("description", "")
        lines += [f"## {k}" + (f" — {desc}" if desc else ""), "",
                  "| channel | units | " + " | ".join(f"{hours[j]:g} h" for j in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for c, ch in enumerate(scores["channel"].values):
            units = "1" if k in ("ssr", "acc", "acc_persistence") else str(scores["units"].values[c])
            vals = scores[k].values[c, cols]
            lines.append(f"| {ch} | {units} | " + " | ".join(_fmt(x) for x in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def write_scores(scores: xr.Dataset, out_dir: str | os.PathLike,
                 headline: xr.Dataset | None = None) -> dict[str, Path]:
    """scores.nc, scores.json and scores.md in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    js = json.dumps(scores_to_json(scores, headline), indent=1)
    md = scores_to_markdown(scores, headline=headline)
    return {
        "netcdf": write_netcdf(scores, out / "scores.nc"),
        "json": atomic_write(out / "scores.json", lambda p: p.write_text(js)),
        "markdown": atomic_write(out / "scores.md", lambda p: p.write_text(md)),
    }


def run_evaluation(forecast_path: str | os.PathLike | Sequence[str | os.PathLike],
                   truth_path: str | os.PathLike, out_dir: str | os.PathLike,
                   channels: Sequence[str] | None = None, climatology_period: Sequence[str] | None = None, *,
                   climatology_kind: str = "auto", window_days: int = 61, min_years: int = 3,
                   stats: str | os.PathLike | None = "auto", ssr_correction: bool = False,
                   plots: bool = True, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Path]:
    """The `aeris evaluate` pipeline: open the forecast store(s) (`open_forecasts`: several are
    scored as one set of inits) and the truth, the climatology of the truth over
    `climatology_period` (`climatology_for`; None = the whole truth store), `evaluate` with
    the persistence and climatology baselines, the headline (standardised by the channels'
    std from `stats`: a statistics file, ``auto`` = ``<truth>.stats.nc`` when it exists, None
    = no headline), `evaluate_spectra`, then scores + spectra.nc and plots (skill.png,
    spectra.png). Returns the written paths by kind."""
    forecast, truth = open_forecasts(forecast_path), open_truth(truth_path)
    if channels is None:
        channels, skipped = default_channels(_with_members(forecast), truth)
        if skipped:
            log(f"skipping headline channels not in both stores: {', '.join(skipped)}")
        if not channels:
            raise EvaluationError("no headline channel is in both stores; pass --channels")
    else:
        skipped = []
    _check_times(forecast, truth, inits_too=True)
    climatology = climatology_for(truth, channels, _valid_times(forecast).values, climatology_period,
                                  kind=climatology_kind, window_days=window_days, min_years=min_years)
    ca = climatology.attrs
    log(f"climatology: {'by day of year and hour' if ca['climatology_kind'] == 'doy_hour' else 'by hour of day'} "
        f"from the truth over {ca['climatology_period']} ({ca['climatology_years']} year(s))"
        + (f"; {ca['climatology_note']}" if "climatology_note" in ca else ""))
    scores = evaluate(forecast, truth, channels, climatology, ssr_correction=ssr_correction,
                      progress=progress)
    scores.attrs["skipped_channels"] = ", ".join(skipped)
    paths_in = [forecast_path] if isinstance(forecast_path, (str, os.PathLike)) else list(forecast_path)
    scores.attrs.update(forecast=", ".join(str(p) for p in paths_in), truth=str(truth_path))
    headline = None
    stats_file = _stats_path(stats, truth_path)
    if stats_file is not None and any(c in HEADLINE_CHANNELS for c in channels):
        headline = headline_scores(scores, channel_std(stats_file, channels))
        headline.attrs["stats"] = stats_file
        scores.attrs["headline_stats"] = stats_file
    paths = write_scores(scores, out_dir, headline)
    spectra = evaluate_spectra(forecast, truth, channels)
    paths["spectra"] = write_netcdf(spectra, Path(out_dir) / "spectra.nc")
    if plots:
        paths["skill_plot"] = plot_skill(scores, Path(out_dir) / "skill.png")
        paths["spectra_plot"] = plot_spectra(spectra, Path(out_dir) / "spectra.png")
    log(scores_to_markdown(scores, headline=headline))
    return paths

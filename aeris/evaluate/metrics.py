"""Ensemble skill metrics (docs/evaluation.md, "Skill metrics", WeatherBench2 conventions).

Pure functions on xarray DataArrays (numpy cores where natural). Grids use the canonical
dims ``latitude`` / ``longitude``; the ensemble dim is ``number`` and the init-time dim is
``time`` unless told otherwise. Nothing here opens files.

Conventions (Rasp et al. 2024, "WeatherBench 2", sections 4-5):

* area weights w(lat) = cos(lat) / mean_lat cos(lat): a weighted spatial mean is
  ``<x> = mean_{lat,lon} w(lat) x``.
* time aggregation: squared-error-like scores are averaged over init times BEFORE any root
  (RMSE = sqrt(mean_t <(f - y)^2>)); CRPS is averaged over space then time; ACC is computed
  per init time and the correlations are averaged over init times.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "LAT", "LON", "MEMBER", "TIME",
    "area_weights", "spatial_mean", "mse", "rmse", "ensemble_mean_rmse",
    "crps_ensemble", "crps_fair", "crps_ecdf", "crps_score",
    "ensemble_variance", "ensemble_spread", "spread_skill_ratio",
    "mae", "CLIMATOLOGY_KINDS", "select_period", "climatology_years", "choose_climatology_kind",
    "compute_climatology", "climatology_at", "acc",
    "zonal_power_spectrum", "mean_zonal_spectrum",
]

LAT, LON, MEMBER, TIME = "latitude", "longitude", "number", "time"


def _need(x: xr.DataArray, dims: Sequence[Hashable], what: str) -> None:
    missing = [d for d in dims if d not in x.dims]
    if missing:
        raise ValueError(f"{what}: missing dimension(s) {missing}; has {list(x.dims)}")


def _time_mean(x: xr.DataArray, time_dim: str | None) -> xr.DataArray:
    return x.mean(time_dim, skipna=False) if time_dim is not None and time_dim in x.dims else x


# ---- area weighting --------------------------------------------------------------------------
def area_weights(latitude: xr.DataArray | np.ndarray | Sequence[float]) -> xr.DataArray:
    """w_j = cos(lat_j) / mean_j cos(lat_j), so that mean_j w_j = 1 (dim ``latitude``).

    cos(+-90 deg) is set to exactly 0: pole rows of a pole-inclusive grid get no weight.
    """
    lat = np.asarray(latitude, dtype=np.float64)
    if lat.ndim != 1 or lat.size == 0:
        raise ValueError(f"area_weights: latitude must be a non-empty 1-D array, got shape {lat.shape}")
    if np.any(np.abs(lat) > 90.0 + 1e-9):
        raise ValueError(f"area_weights: latitudes outside [-90, 90]: {lat[np.abs(lat) > 90]}")
    w = np.cos(np.deg2rad(lat))
    w[np.abs(np.abs(lat) - 90.0) < 1e-9] = 0.0  # cos(pi/2) is 6e-17 in floating point
    if w.sum() == 0:
        raise ValueError("area_weights: all latitudes are poles; weights would be undefined")
    return xr.DataArray(w / w.mean(), dims=[LAT], coords={LAT: lat}, name="area_weight")


def spatial_mean(x: xr.DataArray, weights: xr.DataArray | None = None) -> xr.DataArray:
    """Area-weighted mean over (latitude, longitude): <x> = mean_{j,i} w_j x_{j,i}.

    `weights` defaults to `area_weights(x.latitude)`. NaNs propagate (they are not skipped:
    a NaN in a field means the score is not defined).
    """
    _need(x, (LAT, LON), "spatial_mean")
    w = area_weights(x[LAT]) if weights is None else weights
    return (x * w).mean((LAT, LON), skipna=False)


# ---- deterministic -----------------------------------------------------------------------------
def mse(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray | None = None) -> xr.DataArray:
    """Spatial mean squared error <(f - y)^2> (area-weighted), other dims kept."""
    return spatial_mean((forecast - truth) ** 2, weights)


def rmse(forecast: xr.DataArray, truth: xr.DataArray, *, time_dim: str | None = TIME,
         weights: xr.DataArray | None = None) -> xr.DataArray:
    """RMSE = sqrt( mean_t <(f_t - y_t)^2> ) (WB2: average MSE over init times, then the root).

    Without a `time_dim` in the data this is the RMSE of a single field.
    """
    return np.sqrt(_time_mean(mse(forecast, truth, weights), time_dim))


def mae(forecast: xr.DataArray, truth: xr.DataArray, *, time_dim: str | None = TIME,
        weights: xr.DataArray | None = None) -> xr.DataArray:
    """MAE = mean_t < |f_t - y_t| >: the CRPS of a deterministic forecast (its predictive
    distribution is a point mass at f, and CRPS(delta_f, y) = |f - y|), so deterministic
    baselines are compared with an ensemble's CRPS through it (WB2)."""
    return _time_mean(spatial_mean(np.abs(forecast - truth), weights), time_dim)


def ensemble_mean_rmse(forecast: xr.DataArray, truth: xr.DataArray, *, member_dim: str = MEMBER,
                       time_dim: str | None = TIME, weights: xr.DataArray | None = None) -> xr.DataArray:
    """RMSE of the ensemble mean: sqrt( mean_t <(mean_i X_i - y)^2> )."""
    _need(forecast, (member_dim,), "ensemble_mean_rmse")
    return rmse(forecast.mean(member_dim, skipna=False), truth, time_dim=time_dim, weights=weights)


# ---- CRPS ------------------------------------------------------------------------------------
def crps_ensemble(members: np.ndarray, obs: np.ndarray, *, axis: int = 0, fair: bool = True) -> np.ndarray:
    """Pointwise ensemble CRPS (numpy core), members along `axis`, obs broadcastable without it.

        CRPS = (1/M) sum_i |X_i - y|  -  sum_{i,j} |X_i - X_j| / (2 K)

    with K = M (M - 1) for the fair (unbiased) estimator (Ferro 2014) and K = M^2 for the
    "ecdf" form (the exact CRPS of the ensemble's empirical CDF; Gneiting & Raftery 2007).
    The spread term uses the sorted members X_(1) <= ... <= X_(M):

        sum_{i,j} |X_i - X_j| = 2 sum_k (2k - M - 1) X_(k),

    which costs O(M log M) per point instead of O(M^2). The fair form needs M >= 2
    (it returns NaN for M = 1, where the spread term is undefined).
    """
    x = np.moveaxis(np.asarray(members, dtype=np.float64), axis, 0)
    y = np.asarray(obs, dtype=np.float64)
    m = x.shape[0]
    if m == 0:
        raise ValueError("crps_ensemble: empty ensemble")
    skill = np.abs(x - y[None, ...]).mean(0)
    coef = (2.0 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (x.ndim - 1))
    pair_sum = 2.0 * (coef * np.sort(x, axis=0)).sum(0)  # sum over all ordered pairs (i, j)
    if fair:
        if m < 2:
            return np.full(skill.shape, np.nan)
        return skill - pair_sum / (2.0 * m * (m - 1))
    return skill - pair_sum / (2.0 * m * m)


def _crps_xr(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str, fair: bool) -> xr.DataArray:
    _need(forecast, (member_dim,), "crps")
    if member_dim in truth.dims:
        raise ValueError(f"crps: truth must not have the ensemble dim {member_dim!r}")
    f, y = xr.broadcast(forecast, truth, exclude=[member_dim])
    out = xr.apply_ufunc(
        lambda a, b: crps_ensemble(a, b, axis=-1, fair=fair), f, y,
        input_core_dims=[[member_dim], []], output_core_dims=[[]], dask="parallelized",
        output_dtypes=[np.float64])
    return out.rename("crps_fair" if fair else "crps_ecdf")


def crps_fair(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Pointwise fair CRPS: mean_i |X_i - y| - sum_{i,j} |X_i - X_j| / (2 M (M - 1)).

    Unbiased for the CRPS of the distribution the members are drawn from (Ferro 2014);
    equals ``scores.probability.crps_for_ensemble(method="fair")`` before its reduction.
    """
    return _crps_xr(forecast, truth, member_dim, fair=True)


def crps_ecdf(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Pointwise "ecdf" CRPS: mean_i |X_i - y| - sum_{i,j} |X_i - X_j| / (2 M^2).

    The CRPS of the ensemble's empirical CDF; equals ``properscoring.crps_ensemble``.
    """
    return _crps_xr(forecast, truth, member_dim, fair=False)


def crps_score(forecast: xr.DataArray, truth: xr.DataArray, *, method: str = "fair",
               member_dim: str = MEMBER, time_dim: str | None = TIME,
               weights: xr.DataArray | None = None) -> xr.DataArray:
    """Aggregated CRPS: mean_t < CRPS_t(lat, lon) > with `method` "fair" or "ecdf"."""
    if method not in ("fair", "ecdf"):
        raise ValueError(f"crps_score: method must be 'fair' or 'ecdf', got {method!r}")
    field = _crps_xr(forecast, truth, member_dim, fair=(method == "fair"))
    return _time_mean(spatial_mean(field, weights), time_dim)


# ---- spread / skill --------------------------------------------------------------------------
def ensemble_variance(forecast: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Unbiased ensemble variance s^2 = sum_i (X_i - mean X)^2 / (M - 1) (needs M >= 2)."""
    _need(forecast, (member_dim,), "ensemble_variance")
    if forecast.sizes[member_dim] < 2:
        raise ValueError(f"ensemble_variance: needs >= 2 members along {member_dim!r}, "
                         f"got {forecast.sizes[member_dim]}")
    return forecast.var(member_dim, ddof=1, skipna=False)


def ensemble_spread(forecast: xr.DataArray, *, member_dim: str = MEMBER, time_dim: str | None = TIME,
                    weights: xr.DataArray | None = None) -> xr.DataArray:
    """Spread = sqrt( mean_t < s^2 > ), s^2 the unbiased ensemble variance."""
    return np.sqrt(_time_mean(spatial_mean(ensemble_variance(forecast, member_dim), weights), time_dim))


def spread_skill_ratio(forecast: xr.DataArray, truth: xr.DataArray, *, member_dim: str = MEMBER,
                       time_dim: str | None = TIME, weights: xr.DataArray | None = None,
                       finite_ensemble_correction: bool = False) -> xr.DataArray:
    """SSR = sqrt( mean_t <s^2> ) / RMSE(ensemble mean)  [ x sqrt((M + 1) / M) if corrected ].

    For members and truth exchangeable (a calibrated ensemble) E[(mean X - y)^2] =
    (1 + 1/M) sigma^2 while E[s^2] = sigma^2, so the raw ratio tends to sqrt(M / (M + 1));
    `finite_ensemble_correction` multiplies by sqrt((M + 1) / M) so that calibrated -> 1
    (Fortin et al. 2014; Leutbecher & Palmer 2008).
    """
    spread = ensemble_spread(forecast, member_dim=member_dim, time_dim=time_dim, weights=weights)
    skill = ensemble_mean_rmse(forecast, truth, member_dim=member_dim, time_dim=time_dim, weights=weights)
    ratio = spread / skill
    if finite_ensemble_correction:
        m = forecast.sizes[member_dim]
        ratio = ratio * np.sqrt((m + 1) / m)
    return ratio


# ---- climatology and ACC ---------------------------------------------------------------------
CLIMATOLOGY_KINDS = ("doy_hour", "hour")


def _circular_doy_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a[:, None] - b[None, :]) % 366
    return np.minimum(d, 366 - d)


def _check_window(window_days: int, what: str) -> None:
    if window_days < 1 or window_days % 2 == 0:
        raise ValueError(f"{what}: window_days must be a positive odd integer, got {window_days}")


def select_period(truth: xr.Dataset | xr.DataArray, period: Sequence[str] | None, time_dim: str = TIME,
                  what: str = "select_period") -> xr.Dataset | xr.DataArray:
    """`truth` restricted to ``period = (start, end)`` (inclusive ISO dates; None = all)."""
    if time_dim not in truth.dims:
        raise ValueError(f"{what}: truth has no {time_dim!r} dimension")
    if period is None:
        return truth
    if len(period) != 2:
        raise ValueError(f"{what}: period must be (start, end), got {period!r}")
    sub = truth.sel({time_dim: slice(str(period[0]), str(period[1]))})
    if sub.sizes[time_dim] == 0:
        t = truth[time_dim].values
        raise ValueError(f"{what}: no truth times in period {tuple(period)} "
                         f"(truth covers {t.min() if t.size else '-'} .. {t.max() if t.size else '-'})")
    return sub


def climatology_years(times: np.ndarray | pd.DatetimeIndex, window_days: int = 61) -> xr.DataArray:
    """How many distinct calendar years feed each (day of year, hour) bin of a smoothed
    climatology computed from samples at `times`:

        n_years(d, h) = #{ year(t) : hour(t) = h, |doy(t) - d|_366 <= window_days // 2 }

    dims (dayofyear = 1..366, hour = the hours present in `times`)."""
    _check_window(window_days, "climatology_years")
    t = pd.DatetimeIndex(times)
    if t.size == 0:
        raise ValueError("climatology_years: no times")
    doy, hour, year = t.day_of_year.values, t.hour.values, t.year.values
    hours = np.unique(hour)
    all_doy = np.arange(1, 367)
    near = _circular_doy_distance(all_doy, doy) <= window_days // 2  # (366, n_times)
    counts = np.zeros((all_doy.size, hours.size), dtype=np.int64)
    for h_i, h in enumerate(hours):
        at_h = hour == h
        for y in np.unique(year[at_h]):
            counts[:, h_i] += near[:, at_h & (year == y)].any(axis=1)
    return xr.DataArray(counts, dims=("dayofyear", "hour"), coords={"dayofyear": all_doy, "hour": hours},
                        name="n_years")


def choose_climatology_kind(period_times: np.ndarray | pd.DatetimeIndex,
                            valid_times: np.ndarray | pd.DatetimeIndex, *, window_days: int = 61,
                            min_years: int = 3) -> str:
    """``"doy_hour"`` when the period gives every (day of year, hour) bin of the valid times
    at least `min_years` distinct years within the smoothing window (`climatology_years`),
    else ``"hour"`` (a mean per hour of day over the whole period): a day-of-year
    climatology from one or two years is mostly weather, not climate."""
    if min_years < 1:
        raise ValueError(f"choose_climatology_kind: min_years must be >= 1, got {min_years}")
    n = climatology_years(period_times, window_days)
    v = pd.DatetimeIndex(np.asarray(valid_times).ravel())
    if v.size == 0:
        raise ValueError("choose_climatology_kind: no valid times")
    have = {int(h) for h in n["hour"].values}
    if any(int(h) not in have for h in np.unique(v.hour)):
        return "hour"  # a bin without samples at all; compute_climatology names the missing hours
    got = n.sel(dayofyear=xr.DataArray(v.day_of_year.values), hour=xr.DataArray(v.hour.values))
    return "doy_hour" if int(got.min()) >= min_years else "hour"


def compute_climatology(truth: xr.Dataset | xr.DataArray, period: Sequence[str] | None = None, *,
                        window_days: int = 61, kind: str = "doy_hour",
                        time_dim: str = TIME) -> xr.Dataset | xr.DataArray:
    """Climatology of `truth` over ``period = (start, end)``, by day of year and hour of day
    (``kind="doy_hour"``, smoothed by a circular day-of-year window) or by hour of day only
    (``kind="hour"``):

        doy_hour:  clim(d, h) = mean{ y_t : hour(t) = h, |doy(t) - d|_366 <= window_days // 2,
                                           t in period }
        hour:      clim(h)    = mean{ y_t : hour(t) = h, t in period }

    doy_hour is the mean of all samples at hour h whose calendar day of year lies within
    window_days // 2 days of d (distance circular over 366 days, so late December and early
    January are neighbours). ``window_days=1`` is the raw, unsmoothed per-day mean; the
    default 61 follows WB2's ERA5 climatology. It needs several years (`choose_climatology_kind`);
    from a short period the hour-of-day mean is the honest climatology. ``period`` is
    inclusive (ISO dates; a date as `end` includes that whole day); None = all times.
    Day-of-year is the calendar one (1..366; in leap years dates after Feb 28 shift by one
    day, as in WB2).

    Returns dims (dayofyear, hour, *others) or (hour, *others); for doy_hour only days of year
    with at least one sample in their window are present (look values up with
    `climatology_at`). attrs: climatology_kind, climatology_period (first .. last time used),
    climatology_window_days (doy_hour only), climatology_years (distinct years used).
    """
    if kind not in CLIMATOLOGY_KINDS:
        raise ValueError(f"compute_climatology: kind must be one of {CLIMATOLOGY_KINDS}, got {kind!r}")
    _check_window(window_days, "compute_climatology")
    sub = select_period(truth, period, time_dim, "compute_climatology")
    times = pd.DatetimeIndex(sub[time_dim].values)
    hour = times.hour.values
    hours, hour_idx = np.unique(hour, return_inverse=True)
    if kind == "doy_hour":
        doy = times.day_of_year.values
        present_doy, doy_idx = np.unique(doy, return_inverse=True)
        all_doy = np.arange(1, 367)
        kernel = (_circular_doy_distance(all_doy, present_doy) <= window_days // 2).astype(np.float64)
        counts = np.zeros((present_doy.size, hours.size))
        np.add.at(counts, (doy_idx, hour_idx), 1.0)
        win_counts = kernel @ counts  # (366, H): samples in each window
        keep = win_counts.sum(1) > 0
        kernel, win_counts = kernel[keep], win_counts[keep]
        bins, bin_dims = (doy_idx, hour_idx), ("dayofyear", "hour")
        n_bins = (present_doy.size, hours.size)
        bin_coords = {"dayofyear": all_doy[keep], "hour": hours}
    else:
        win_counts = np.bincount(hour_idx, minlength=hours.size).astype(np.float64)
        bins, bin_dims, n_bins, bin_coords = (hour_idx,), ("hour",), (hours.size,), {"hour": hours}

    def one(da: xr.DataArray) -> xr.DataArray:
        if time_dim not in da.dims:
            return da
        da = da.transpose(time_dim, ...)
        other = da.shape[1:]
        sums = np.zeros(n_bins + other)
        step = 64  # load in time chunks: the store may be larger than memory
        for s in range(0, da.shape[0], step):
            block = np.asarray(da[s:s + step].values, dtype=np.float64)
            np.add.at(sums, tuple(b[s:s + step] for b in bins), block)
        if kind == "doy_hour":
            sums = np.tensordot(kernel, sums, axes=(1, 0))  # (D, H, ...)
        with np.errstate(invalid="ignore", divide="ignore"):
            clim = sums / win_counts.reshape(win_counts.shape + (1,) * len(other))
        coords = {k: v for k, v in da.coords.items() if time_dim not in v.dims}
        coords.update(bin_coords)
        return xr.DataArray(clim.astype(np.float32), dims=bin_dims + da.dims[1:],
                            coords=coords, name=da.name, attrs=da.attrs)

    out = one(sub) if isinstance(sub, xr.DataArray) else sub.map(one)
    out.attrs.update(climatology_kind=kind,
                     climatology_period=f"{times.min().isoformat()} .. {times.max().isoformat()}",
                     climatology_years=int(np.unique(times.year).size))
    if kind == "doy_hour":
        out.attrs["climatology_window_days"] = window_days
    return out


def climatology_at(climatology: xr.DataArray | xr.Dataset,
                   valid_time: xr.DataArray | np.ndarray) -> xr.DataArray | xr.Dataset:
    """The climatology at each valid time: clim(doy(t), hour(t)) or clim(hour(t)); NaN where
    that day of year has no climatology. Returns the dims of `valid_time` (dim ``time`` for a
    plain array)."""
    vt = valid_time if isinstance(valid_time, xr.DataArray) else xr.DataArray(
        np.asarray(valid_time, dtype="datetime64[ns]"), dims=[TIME])
    hours = np.unique(vt.dt.hour.values)
    missing = sorted(set(hours.tolist()) - set(climatology["hour"].values.tolist()))
    if missing:
        raise ValueError(f"climatology has no hour(s) {missing} of the valid times; "
                         f"it has {climatology['hour'].values.tolist()}")
    if "dayofyear" not in climatology.dims:
        return climatology.sel(hour=vt.dt.hour).drop_vars(["hour"], errors="ignore")
    doy = vt.dt.dayofyear
    need = np.unique(doy.values)
    clim = climatology.reindex(dayofyear=need)  # NaN for days of year outside the climatology
    out = clim.sel(dayofyear=doy, hour=vt.dt.hour)
    return out.drop_vars(["dayofyear", "hour"], errors="ignore")


def acc(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray, *,
        time_dim: str | None = TIME, weights: xr.DataArray | None = None) -> xr.DataArray:
    """Anomaly correlation coefficient, per init time, then averaged over init times (WB2):

        ACC_t = <f'_t y'_t> / sqrt( <f'_t^2> <y'_t^2> ),  f' = f - c,  y' = y - c,

    <.> the area-weighted spatial mean and c the climatology at the valid time (already
    aligned, e.g. by `climatology_at`). Anomalies are not re-centred by their spatial mean
    (the "uncentred" ACC of WB2 and ECMWF). ACC = 1 for f = y, -1 for f' = -y'.
    """
    fa, ya = forecast - climatology, truth - climatology
    num = spatial_mean(fa * ya, weights)
    den = np.sqrt(spatial_mean(fa ** 2, weights) * spatial_mean(ya ** 2, weights))
    return _time_mean(num / den, time_dim)


# ---- spectra ---------------------------------------------------------------------------------
def zonal_power_spectrum(x: xr.DataArray, lon_dim: str = LON) -> xr.DataArray:
    """One-sided zonal power spectrum along longitude, per latitude (and every other dim).

    With N longitudes and F_k = sum_n x_n exp(-2 pi i k n / N) (numpy rfft), the power at
    zonal wavenumber k (cycles per latitude circle, k = 0 .. N // 2) is

        P_0 = |F_0|^2 / N^2,   P_k = 2 |F_k|^2 / N^2 (0 < k < N/2),   P_{N/2} = |F_{N/2}|^2 / N^2
        (N even; the Nyquist term is not doubled),

    so that Parseval holds as sum_k P_k = mean_n x_n^2 (units of x squared). A sine of
    amplitude A at wavenumber k0 has P_{k0} = A^2 / 2. The wavelength of wavenumber k at
    latitude phi is 2 pi R cos(phi) / k.
    """
    _need(x, (lon_dim,), "zonal_power_spectrum")
    n = x.sizes[lon_dim]
    scale = np.full(n // 2 + 1, 2.0)
    scale[0] = 1.0
    if n % 2 == 0:
        scale[-1] = 1.0
    out = xr.apply_ufunc(
        lambda a: np.abs(np.fft.rfft(a, axis=-1)) ** 2 * scale / n ** 2, x,
        input_core_dims=[[lon_dim]], output_core_dims=[["zonal_wavenumber"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"zonal_wavenumber": n // 2 + 1}})
    out = out.assign_coords(zonal_wavenumber=np.arange(n // 2 + 1))
    out.zonal_wavenumber.attrs.update(units="cycles per latitude circle")
    return out.rename(f"{x.name}_power" if x.name else "power")


def mean_zonal_spectrum(x: xr.DataArray, *, keep: Sequence[str] = (),
                        lat_band: tuple[float, float] | None = None) -> xr.DataArray:
    """`zonal_power_spectrum` averaged (unweighted) over every dim except zonal_wavenumber
    and `keep`, after restricting latitude to ``lat_band = (lat_min, lat_max)`` if given.

    The unweighted latitude mean treats each latitude circle's spectrum as one sample in
    wavenumber space (same wavenumber = same number of waves around that circle).
    """
    if lat_band is not None:
        lo, hi = min(lat_band), max(lat_band)
        x = x.where((x[LAT] >= lo) & (x[LAT] <= hi), drop=True)
        if x.sizes[LAT] == 0:
            raise ValueError(f"mean_zonal_spectrum: no latitude in band {lat_band}")
    p = zonal_power_spectrum(x)
    dims = [d for d in p.dims if d != "zonal_wavenumber" and d not in keep]
    return p.mean(dims)

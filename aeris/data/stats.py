"""Per-channel normalisation statistics, computed once by streaming over the store (dask).

For every channel c (prognostic, forcing and static):
    mean[c] = E[x_c],   std[c] = sqrt(E[(x_c - mean[c])^2])      over (time, latitude, longitude)
and for every prognostic channel the same over the dt-differences
    d_c(t) = x_c(t + dt) - x_c(t)   for all t with t and t + dt in the period
giving diff_mean[c], diff_std[c] (NaN for forcing/static channels).

Plain (not latitude-weighted) averages over the source grid, population std (ddof=0), as in
the original AERIS. Fields listed in ``fill_nan_with_min`` (sea surface temperature over
land) have their NaNs replaced by the field minimum first. The reductions are dask
reductions over the store's chunks (float64 accumulation, chunk-wise moment merging), so
only a few chunks are in memory at once.

Saved as netCDF (``<store>.stats.nc`` beside the data unless ``DataConfig.stats`` says
otherwise), written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr
from dask.callbacks import Callback
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.config import DataConfig
from aeris.data.lexicon import canonical_name, channel_name, channel_names, parse_channel
from aeris.data.forcings import toa_incident_solar_radiation
from aeris.data.store import (
    DataError, select_levels, select_variables, fill_nan_with_min, is_remote, open_store, select_period,
)

__all__ = ["compute_stats", "save_stats", "load_stats", "stats_path", "channel_sets",
           "compute_and_save_stats", "time_pairs", "open_config_store", "with_computed_tisr",
           "STATS_VARIABLES"]

STATS_VARIABLES = ("mean", "std", "diff_mean", "diff_std")


def channel_sets(cfg: DataConfig) -> tuple[list[str], list[str], list[str]]:
    """(prognostic, forcing, static) channel names of a data config, in config order."""
    prog = channel_names(cfg.surface, cfg.atmospheric, cfg.levels)
    return prog, [channel_name(v) for v in cfg.forcings], [channel_name(v) for v in cfg.static]


def stats_path(cfg: DataConfig) -> str:
    """Where the statistics of `cfg` live: ``cfg.stats`` or ``<cfg.path>.stats.nc``."""
    if cfg.stats:
        return cfg.stats
    if is_remote(cfg.path):
        raise DataError(f"the store {cfg.path} is remote: set data.stats to a local path for its statistics")
    return f"{str(cfg.path).rstrip('/')}.stats.nc"


def time_pairs(times: np.ndarray, dt_hours: int, period: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i0, i1) into `times` with times[i1] = times[i0] + dt, both inside `period`."""
    times = np.asarray(times, dtype="datetime64[ns]")
    inside = select_period(times, period)
    index = pd.Index(times)
    target = times + np.timedelta64(int(dt_hours), "h")
    i1 = index.get_indexer(target)
    ok = inside & (i1 >= 0)
    ok[ok] &= inside[i1[ok]]
    i0 = np.nonzero(ok)[0]
    return i0, i1[i0]


class _TqdmCallback(Callback):
    """A tqdm bar over the tasks of a dask computation."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc
        self.bar = None

    def _start_state(self, dsk, state):
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar = tqdm(total=total, desc=self.desc, unit="task", leave=False)

    def _posttask(self, key, result, dsk, state, worker_id):
        self.bar.update(1)

    def _finish(self, dsk, state, errored):
        if self.bar is not None:
            self.bar.close()


def _channel_field(ds: xr.Dataset, channel: str, fill: set[str]) -> xr.DataArray:
    name, level = parse_channel(channel)
    if name not in ds.data_vars:
        raise DataError(f"channel {channel!r}: variable {name!r} missing; the store has {sorted(ds.data_vars)}")
    da = ds[name]
    if level is not None:
        have = [int(v) for v in da["level"].values] if "level" in da.dims else []
        if level not in have:
            raise DataError(f"channel {channel!r}: level {level} hPa missing; {name} has levels {have}")
        da = da.sel(level=level, drop=True)
    if name in fill:
        da = fill_nan_with_min(da)
    return da


def compute_stats(ds: xr.Dataset, channels: Sequence[str], dt_hours: int,
                  forcings: Sequence[str] = (), static: Sequence[str] = (),
                  period: Sequence[str] | None = None,
                  fill_nan_with_min: Sequence[str] = ()) -> xr.Dataset:
    """Statistics of a canonical dataset (see the module docstring).

    channels: prognostic channels (``'z500'``, ``'t2m'``); forcings/static: variable names or
    channel names (``'toa_incident_solar_radiation'`` or ``'tisr'``). period: [start, end]
    (inclusive dates) restricting the time-varying fields; None = all times.
    Returns an ``xr.Dataset`` over dim ``channel`` with ``mean``, ``std``, ``diff_mean``,
    ``diff_std`` (float64) and ``kind`` ("prognostic" | "forcing" | "static").
    """
    fill = {canonical_name(v) for v in fill_nan_with_min}
    forc = [channel_name(canonical_name(v)) for v in forcings]
    stat = [channel_name(canonical_name(v)) for v in static]
    all_channels = [*channels, *forc, *stat]
    if len(set(all_channels)) != len(all_channels):
        raise DataError(f"duplicate channels in {all_channels}")
    times = ds["time"].values if "time" in ds.coords else np.array([], dtype="datetime64[ns]")
    in_period = np.nonzero(select_period(times, period))[0]
    i0, i1 = time_pairs(times, dt_hours, period)
    if (channels or forc) and in_period.size == 0:
        raise DataError(f"no time of the store lies in the period {list(period or [])}")
    if channels and i0.size == 0:
        raise DataError(f"no pair (t, t+{dt_hours}h) of the store lies in the period {list(period or [])}")

    lazy = []  # (channel, stat name, dask scalar)
    for ch in all_channels:
        da = _channel_field(ds, ch, fill)
        if ch in stat:
            if "time" in da.dims:
                raise DataError(f"static channel {ch!r} has a time dimension")
            x = da.data.astype(np.float64)
        else:
            if "time" not in da.dims:
                raise DataError(f"channel {ch!r} has no time dimension")
            x = da.isel(time=in_period).transpose("time", ...).data.astype(np.float64)
        x = dsa.asarray(x)
        lazy += [(ch, "mean", x.mean()), (ch, "std", x.std())]
        if ch in channels:
            full = dsa.asarray(da.transpose("time", ...).data).astype(np.float64)
            d = full[i1] - full[i0]
            lazy += [(ch, "diff_mean", d.mean()), (ch, "diff_std", d.std())]
    with _TqdmCallback("statistics"):
        values = dask.compute(*[v for _, _, v in lazy])
    out = {k: np.full(len(all_channels), np.nan) for k in STATS_VARIABLES}
    pos = {ch: i for i, ch in enumerate(all_channels)}
    for (ch, k, _), v in zip(lazy, values):
        out[k][pos[ch]] = float(v)
    bad = [ch for ch in all_channels if not np.isfinite(out["mean"][pos[ch]])]
    if bad:
        raise DataError(f"statistics of channel(s) {bad} are not finite: NaNs in the data? "
                        f"(list such variables in data.fill_nan_with_min)")
    kind = ["prognostic"] * len(channels) + ["forcing"] * len(forc) + ["static"] * len(stat)
    return xr.Dataset(
        {k: ("channel", out[k]) for k in STATS_VARIABLES} | {"kind": ("channel", np.array(kind, dtype=object))},
        coords={"channel": np.array(all_channels, dtype=object)},
        attrs={"dt_hours": int(dt_hours), "period": [str(p) for p in (period or [])],
               "n_times": int(in_period.size), "n_pairs": int(i0.size),
               "fill_nan_with_min": sorted(fill), "source": str(ds.attrs.get("source", "")),
               "description": "per-channel mean/std of fields and of dt-differences (aeris.data.stats)"},
    )


def save_stats(stats: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write statistics to netCDF atomically (temporary file in the same folder, then rename)."""
    out = stats.copy()
    out.attrs = {k: (",".join(v) if isinstance(v, list) else v) for k, v in stats.attrs.items()}
    return atomic_write(path, lambda p: out.to_netcdf(p))


def load_stats(path: str | os.PathLike) -> xr.Dataset:
    """Statistics saved by `save_stats`, loaded into memory and checked."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"statistics file not found: {path} (compute it with `aeris data stats`)")
    with xr.open_dataset(path) as f:
        stats = f.load()
    missing = [k for k in (*STATS_VARIABLES, "kind") if k not in stats]
    if missing or "channel" not in stats.dims:
        raise DataError(f"{path} is not a statistics file (missing {missing or ['channel']})")
    for k in ("period", "fill_nan_with_min"):
        v = stats.attrs.get(k, "")
        stats.attrs[k] = [s for s in str(v).split(",") if s] if not isinstance(v, list) else v
    stats = stats.assign_coords(channel=[str(c) for c in stats["channel"].values])
    stats["kind"] = ("channel", np.array([str(k) for k in stats["kind"].values], dtype=object))
    return stats


def stats_for(stats: xr.Dataset, channels: Sequence[str], need_diff: bool = False) -> dict[str, np.ndarray]:
    """mean/std (and diff_mean/diff_std) arrays of `channels` in that order; error naming missing ones."""
    have = [str(c) for c in stats["channel"].values]
    missing = [c for c in channels if c not in have]
    if missing:
        raise DataError(f"statistics have no channel(s) {missing}; they have {have} "
                        f"(recompute with `aeris data stats`)")
    sub = stats.sel(channel=list(channels))
    keys = STATS_VARIABLES if need_diff else ("mean", "std")
    out = {k: sub[k].values.astype(np.float64) for k in keys}
    if need_diff and not np.all(np.isfinite(out["diff_std"])):
        raise DataError(f"statistics lack dt-difference stats for some of {list(channels)}")
    return out


def with_computed_tisr(ds: xr.Dataset, chunk: int = 8) -> xr.Dataset:
    """`ds` plus a lazy ``toa_incident_solar_radiation`` computed analytically
    (`aeris.data.forcings`, 1-h accumulation ending at each time) when the store lacks it."""
    if "toa_incident_solar_radiation" in ds.data_vars:
        return ds
    lat = ds["latitude"].values.astype(np.float64)
    lon = ds["longitude"].values.astype(np.float64)
    t = dsa.from_array(ds["time"].values.astype("datetime64[ns]").astype(np.int64), chunks=chunk)

    def block(tb):
        return toa_incident_solar_radiation(tb.astype("datetime64[ns]"), lat, lon).astype(np.float32)

    arr = t.map_blocks(block, new_axis=[1, 2], chunks=(t.chunks[0], (lat.size,), (lon.size,)),
                       dtype=np.float32)
    da = xr.DataArray(arr, dims=("time", "latitude", "longitude"),
                      coords={"time": ds["time"], "latitude": ds["latitude"], "longitude": ds["longitude"]},
                      attrs={"units": "J m**-2", "source": "computed by aeris.data.forcings"})
    return ds.assign(toa_incident_solar_radiation=da)


def open_config_store(cfg: DataConfig) -> xr.Dataset:
    """The configured store with just the configured variables and levels (lazy); a missing
    ``toa_incident_solar_radiation`` forcing is computed analytically."""
    ds = open_store(cfg.path)
    if "toa_incident_solar_radiation" in {canonical_name(v) for v in cfg.forcings}:
        ds = with_computed_tisr(ds)
    variables = [*cfg.surface, *cfg.atmospheric, *cfg.forcings, *cfg.static]
    ds = select_variables(ds, variables, str(cfg.path))
    return select_levels(ds, cfg.levels, str(cfg.path)) if cfg.atmospheric else ds


def compute_and_save_stats(cfg: DataConfig, overwrite: bool = True) -> Path:
    """Statistics of the configured store over the TRAINING period, saved at `stats_path(cfg)`."""
    path = Path(stats_path(cfg))
    if path.exists() and not overwrite:
        return path
    prog, forc, stat = channel_sets(cfg)
    ds = open_config_store(cfg)
    stats = compute_stats(ds, prog, cfg.dt_hours, cfg.forcings, cfg.static, cfg.train_period,
                          cfg.fill_nan_with_min)
    return save_stats(stats, path)

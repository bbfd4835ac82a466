"""Per-channel normalisation statistics, computed once in blocks of times on a Dask cluster.

For every channel c (prognostic, forcing and static):
    mean[c] = E[x_c],   std[c] = sqrt(E[(x_c - mean[c])^2])      over (time, latitude, longitude)
and for every prognostic channel the same over the dt-differences
    d_c(t) = x_c(t + dt) - x_c(t)   for all t with t and t + dt in the period
giving diff_mean[c], diff_std[c] (NaN for forcing/static channels).

Plain (not latitude-weighted) averages over the source grid, population std (ddof=0), as in
the original AERIS. Fields listed in ``fill_nan_with_min`` (sea surface temperature over
land) have their NaNs replaced by the field minimum first.

The period's times are cut into blocks (`aeris.data.source.time_blocks`); a task reads one
block (and the partners t + dt of its pairs), and returns per channel the count, the mean
and the sum of squared deviations from that mean, in float64. The blocks are merged in block
order with the exact pairwise update of Chan et al. (parallel Welford), so the result does
not depend on where or in which order the tasks ran: a cluster of any size gives the bits of
the one-process run (docs/data.md, "Preparing ERA5 on a cluster"). A NaN/inf field, or a time
missing from the store's grid, is an error naming variable and time, or (``on_bad_data="skip"``)
is left out and recorded in the attributes.

Saved as netCDF (``<store>.stats.nc`` beside the data unless ``DataConfig.stats`` says
otherwise; a local path or an fsspec URL), written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris.atomic import atomic_write
from aeris.data.cluster import Cluster
from aeris.data.config import DataConfig
from aeris.data.lexicon import canonical_name, channel_name, channel_names
from aeris.data.location import Location
from aeris.data.source import (
    ConfigSource, DatasetSource, auto_block_times, bad_data_message, bad_times, block_chunks, check_times,
    describe_channel,
    missing_message, missing_times, open_config_store, read_channels, stored_time_chunk, time_blocks,
    with_computed_tisr,
)
from aeris.data.store import DataError, is_remote, select_period

__all__ = ["compute_stats", "save_stats", "load_stats", "stats_path", "channel_sets",
           "compute_and_save_stats", "time_pairs", "open_config_store", "with_computed_tisr",
           "stats_exists", "STATS_VARIABLES", "StatsJob", "stats_block", "merge_moments"]

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
        raise DataError(f"the store {cfg.path} is remote: set data.stats (a local path or a URL) for its "
                        f"statistics")
    return f"{str(cfg.path).rstrip('/')}.stats.nc"


def stats_exists(path: str | os.PathLike) -> bool:
    """True when the statistics file exists (local path or URL)."""
    return Location(path).exists()


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


# ---- moments ---------------------------------------------------------------------------------
def _moments(x: np.ndarray) -> tuple[int, float, float]:
    """(count, mean, sum of squared deviations from the mean) of `x` in float64 (two passes)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0, 0.0, 0.0
    m = float(x.mean())
    return int(x.size), m, float(np.square(x - m).sum())


def merge_moments(a: tuple[np.ndarray, np.ndarray, np.ndarray],
                  b: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.'s exact merge of (count, mean, M2) per channel (arrays over channels)."""
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    safe = np.where(n > 0, n, 1).astype(np.float64)
    delta = mb - ma
    mean = np.where(nb == 0, ma, np.where(na == 0, mb, ma + delta * (nb / safe)))
    m2 = np.where(nb == 0, qa, np.where(na == 0, qb, qa + qb + delta * delta * (na * (nb / safe))))
    return n, mean, m2


def _empty(c: int):
    return np.zeros(c, dtype=np.int64), np.zeros(c), np.zeros(c)


# ---- the block tasks -------------------------------------------------------------------------
@dataclass
class StatsJob:
    """What every statistics task needs (sent to the workers once)."""

    source: ConfigSource | DatasetSource
    channels: list[str]          # prognostic: fields and dt-differences
    forcings: list[str]          # time-varying forcing channels: fields
    static: list[str]            # static channels: fields
    fill: list[str]              # variables whose NaNs are filled with the field minimum
    times: np.ndarray            # the source's times
    in_period: np.ndarray        # positions (into times) of the period's times, ascending
    i0: np.ndarray               # pairs (i0, i1): times[i1] = times[i0] + dt, both in the period
    i1: np.ndarray
    on_bad_data: str = "error"


def stats_block(job: StatsJob, block: tuple[int, int]) -> dict:
    """Moments of one block of the period's times (source positions a..b-1):
    ``field`` (count, mean, M2) per prognostic + forcing channel, ``diff`` per prognostic
    channel over the pairs starting in the block, and the times ``skipped`` (time, reason)."""
    a, b = block
    idx = np.arange(a, b)
    chans = [*job.channels, *job.forcings]
    cf, cp = len(chans), len(job.channels)
    if idx.size == 0 or not chans:
        return {"field": _empty(cf), "diff": _empty(cp), "skipped": []}
    starts = (job.i0 >= idx[0]) & (job.i0 <= idx[-1])
    p0, p1 = job.i0[starts], job.i1[starts]
    need = np.union1d(idx, p1)
    fields = read_channels(job.source.dataset(), chans, need, job.fill)
    bad = {int(need[k]): ch for k, ch in bad_times(fields, chans).items()}
    if bad and job.on_bad_data != "skip":
        t, ch = next(iter(bad.items()))
        raise DataError(bad_data_message("", ch, job.times[t]))
    pos = {int(s): k for k, s in enumerate(need)}
    keep = [pos[int(s)] for s in idx if int(s) not in bad]
    ok = [(pos[int(s0)], pos[int(s1)]) for s0, s1 in zip(p0, p1) if int(s0) not in bad and int(s1) not in bad]
    k0 = np.asarray([o[0] for o in ok], dtype=np.int64)
    k1 = np.asarray([o[1] for o in ok], dtype=np.int64)
    field = [_moments(x[keep]) for x in fields]
    diff = [_moments(x[k1].astype(np.float64) - x[k0].astype(np.float64)) for x in fields[:cp]]
    inside = set(idx.tolist())
    skipped = [(t, f"{np.datetime64(job.times[t], 'ns')}: NaN/inf in {describe_channel(ch)}")
               for t, ch in bad.items() if t in inside]
    return {"field": tuple(np.asarray(v) for v in zip(*field)),
            "diff": tuple(np.asarray(v) for v in zip(*diff)) if diff else _empty(0),
            "skipped": skipped}


def stats_static(job: StatsJob, _item=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of the static channels (count, mean, M2 per channel); a NaN is always an error."""
    if not job.static:
        return _empty(0)
    fields = read_channels(job.source.dataset(), job.static, None, job.fill)
    for ch, x in zip(job.static, fields):
        if not np.isfinite(x).all():
            raise DataError(f"NaN/inf in static {describe_channel(ch)} (a static field cannot be skipped; "
                            f"list its variable in data.fill_nan_with_min if NaNs are expected)")
    return tuple(np.asarray(v) for v in zip(*[_moments(x) for x in fields]))


def _job(source, ds: xr.Dataset, channels, dt_hours, forcings, static, period, fill_nan_with_min,
         on_bad_data) -> tuple[StatsJob, list[str], list[str], dict]:
    if on_bad_data not in ("error", "skip"):
        raise DataError(f"on_bad_data must be 'error' or 'skip', got {on_bad_data!r}")
    fill = sorted({canonical_name(v) for v in fill_nan_with_min})
    forc = [channel_name(canonical_name(v)) for v in forcings]
    stat = [channel_name(canonical_name(v)) for v in static]
    channels = list(channels)
    all_channels = [*channels, *forc, *stat]
    if len(set(all_channels)) != len(all_channels):
        raise DataError(f"duplicate channels in {all_channels}")
    times = ds["time"].values.astype("datetime64[ns]") if "time" in ds.coords else np.array([], "datetime64[ns]")
    check_times(times, str(ds.attrs.get("source", "store")))
    in_period = np.nonzero(select_period(times, period))[0]
    i0, i1 = time_pairs(times, dt_hours, period)
    if (channels or forc) and in_period.size == 0:
        raise DataError(f"no time of the store lies in the period {list(period or [])}")
    if channels and i0.size == 0:
        raise DataError(f"no pair (t, t+{dt_hours}h) of the store lies in the period {list(period or [])}")
    gaps = missing_times(times[in_period]) if (channels or forc) else np.array([], "datetime64[ns]")
    if gaps.size and on_bad_data != "skip":
        raise DataError(missing_message(gaps, times[in_period], f"the period {list(period or [])}"))
    job = StatsJob(source=source, channels=channels, forcings=forc, static=stat, fill=fill, times=times,
                   in_period=in_period, i0=i0, i1=i1, on_bad_data=on_bad_data)
    info = {"missing_times": [str(t) for t in gaps]}
    return job, forc, stat, info


def _blocking(job: StatsJob, ds: xr.Dataset, block_times: int) -> tuple[int, tuple[int, ...]]:
    """Times per block and the dask chunks along the source's time axis that match the blocks.

    Automatic blocks hold at least 4 dt-steps, so that the partners t + dt read beyond a block
    add at most a quarter to what is read; on a store chunked by single times the first dt-steps
    of each block are a chunk of their own, so that the previous block reads just those."""
    chans = [*job.channels, *job.forcings]
    chunk = stored_time_chunk(ds)
    k = int((job.i1 - job.i0).max()) if job.i0.size else 0
    if block_times:
        bt = int(block_times)
    else:
        bt = auto_block_times(max(len(chans), 1), ds.sizes.get("latitude", 1), ds.sizes.get("longitude", 1),
                              chunk=chunk)
        bt = max(bt, -(-4 * k // chunk) * chunk)
    return bt, block_chunks(max(len(job.times), 1), bt, head=k if chunk == 1 else 0)


def _run_stats(job: StatsJob, forc: list[str], stat: list[str], info: dict, ds: xr.Dataset, dt_hours: int,
               period, bt: int, cluster: Cluster, progress: bool) -> xr.Dataset:
    chans = [*job.channels, *job.forcings]
    p = job.in_period
    blocks = time_blocks(int(p[0]), int(p[-1]) + 1, bt) if chans and p.size else []
    parts = cluster.run(stats_block, job, blocks, desc="statistics", progress=progress)
    static = stats_static(job)  # two fields: read here
    field, diff, skipped = _empty(len(chans)), _empty(len(job.channels)), []
    for p in parts:  # block order: the merge is the same wherever the blocks ran
        field = merge_moments(field, p["field"])
        diff = merge_moments(diff, p["diff"])
        skipped += p["skipped"]
    all_channels = [*chans, *stat]
    n = np.concatenate([field[0], static[0]])
    mean = np.concatenate([field[1], static[1]])
    m2 = np.concatenate([field[2], static[2]])
    out = {k: np.full(len(all_channels), np.nan) for k in STATS_VARIABLES}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = np.where(n > 0, mean, np.nan)
        out["std"] = np.where(n > 0, np.sqrt(m2 / np.where(n > 0, n, 1)), np.nan)
        cp = len(job.channels)
        out["diff_mean"][:cp] = np.where(diff[0] > 0, diff[1], np.nan)
        out["diff_std"][:cp] = np.where(diff[0] > 0, np.sqrt(diff[2] / np.where(diff[0] > 0, diff[0], 1)), np.nan)
    bad = [ch for k, ch in enumerate(all_channels) if not np.isfinite(out["mean"][k]) or not np.isfinite(out["std"][k])]
    bad += [ch for k, ch in enumerate(job.channels) if not np.isfinite(out["diff_std"][k]) and ch not in bad]
    if bad:
        raise DataError(f"statistics of channel(s) {bad} are not finite: no valid time left, or NaNs in the "
                        f"data (list such variables in data.fill_nan_with_min)")
    kind = ["prognostic"] * len(job.channels) + ["forcing"] * len(forc) + ["static"] * len(stat)
    skipped = sorted(skipped)
    gone = np.asarray([t for t, _ in skipped], dtype=np.int64)
    n_pairs = int(np.count_nonzero(~np.isin(job.i0, gone) & ~np.isin(job.i1, gone)))
    return xr.Dataset(
        {k: ("channel", out[k]) for k in STATS_VARIABLES} | {"kind": ("channel", np.array(kind, dtype=object))},
        coords={"channel": np.array(all_channels, dtype=object)},
        attrs={"dt_hours": int(dt_hours), "period": [str(p) for p in (period or [])],
               "n_times": int(job.in_period.size - len(skipped)), "n_pairs": n_pairs,
               "fill_nan_with_min": list(job.fill), "source": str(ds.attrs.get("source", "")),
               "block_times": int(bt),
               "skipped_times": [r for _, r in skipped], "missing_times": list(info["missing_times"]),
               "description": "per-channel mean/std of fields and of dt-differences (aeris.data.stats)"},
    )


def compute_stats(ds: xr.Dataset, channels: Sequence[str], dt_hours: int,
                  forcings: Sequence[str] = (), static: Sequence[str] = (),
                  period: Sequence[str] | None = None,
                  fill_nan_with_min: Sequence[str] = (), *, on_bad_data: str = "error",
                  block_times: int = 0, progress: bool = False) -> xr.Dataset:
    """Statistics of a canonical dataset (see the module docstring), in this process.

    channels: prognostic channels (``'z500'``, ``'t2m'``); forcings/static: variable names or
    channel names (``'toa_incident_solar_radiation'`` or ``'tisr'``). period: [start, end]
    (inclusive dates) restricting the time-varying fields; None = all times. block_times:
    times per block (0 = automatic). Returns an ``xr.Dataset`` over dim ``channel`` with
    ``mean``, ``std``, ``diff_mean``, ``diff_std`` (float64) and ``kind`` ("prognostic" |
    "forcing" | "static"). `compute_and_save_stats` runs the same blocks on a cluster.
    """
    job, forc, stat, info = _job(DatasetSource(ds), ds, channels, dt_hours, forcings, static, period,
                                 fill_nan_with_min, on_bad_data)
    bt, _ = _blocking(job, ds, block_times)
    with Cluster("serial") as cluster:
        return _run_stats(job, forc, stat, info, ds, dt_hours, period, bt, cluster, progress)


def compute_and_save_stats(cfg: DataConfig, overwrite: bool = True, *, scheduler: str | None = None,
                           workers: int | None = None, client=None, cluster: Cluster | None = None,
                           progress: bool = True) -> Path | str:
    """Statistics of the configured store over the TRAINING period, saved at `stats_path(cfg)`.

    Runs on ``scheduler`` (default ``cfg.scheduler``: a LocalCluster of ``cfg.workers``
    processes; see `aeris.data.cluster.Cluster`), on an existing Dask `client` or on a
    `cluster`; the workers open the store themselves (local path or URL). Returns the path (a
    str for a URL).
    """
    path = stats_path(cfg)
    if not overwrite and stats_exists(path):
        return path if is_remote(path) else Path(path)
    prog, _, _ = channel_sets(cfg)
    ds = ConfigSource(cfg).dataset()
    job, forc, stat, info = _job(None, ds, prog, cfg.dt_hours, cfg.forcings, cfg.static, cfg.train_period,
                                 cfg.fill_nan_with_min, cfg.on_bad_data)
    bt, chunks = _blocking(job, ds, cfg.block_times)
    job.source = ConfigSource(cfg, time_chunks=chunks, times=job.times)  # a block per chunk
    own = cluster is None
    cl = cluster or Cluster(scheduler or cfg.scheduler, cfg.workers if workers is None else workers, client=client)
    try:
        stats = _run_stats(job, forc, stat, info, ds, cfg.dt_hours, cfg.train_period, bt, cl, progress)
    finally:
        if own:
            cl.close()
    return save_stats(stats, path)


# ---- files -----------------------------------------------------------------------------------
_JSON_ATTRS = ("skipped_times", "missing_times")


def save_stats(stats: xr.Dataset, path: str | os.PathLike) -> Path | str:
    """Write statistics to netCDF atomically: a temporary file in the same folder, then rename;
    for a URL, a local temporary file uploaded in one piece. Returns the path (str for a URL)."""
    out = stats.copy()
    out.attrs = {k: (json.dumps(v) if k in _JSON_ATTRS else ",".join(v) if isinstance(v, list) else v)
                 for k, v in stats.attrs.items()}
    if not is_remote(path):
        return atomic_write(path, lambda p: out.to_netcdf(p))
    with tempfile.TemporaryDirectory(prefix="aeris-stats-") as tmp:
        local = Path(tmp) / "stats.nc"
        out.to_netcdf(local)
        Location(path).write_bytes(local.read_bytes())
    return str(path)


def load_stats(path: str | os.PathLike) -> xr.Dataset:
    """Statistics saved by `save_stats` (local path or URL), loaded into memory and checked."""
    if is_remote(path):
        loc = Location(path)
        if not loc.exists():
            raise DataError(f"statistics file not found: {path} (compute it with `aeris data stats`)")
        with tempfile.TemporaryDirectory(prefix="aeris-stats-") as tmp:
            local = Path(tmp) / "stats.nc"
            local.write_bytes(loc.read_bytes())
            return _load_local(local, str(path))
    if not Path(path).exists():
        raise DataError(f"statistics file not found: {path} (compute it with `aeris data stats`)")
    return _load_local(Path(path), str(path))


def _load_local(path: Path, name: str) -> xr.Dataset:
    with xr.open_dataset(path) as f:
        stats = f.load()
    missing = [k for k in (*STATS_VARIABLES, "kind") if k not in stats]
    if missing or "channel" not in stats.dims:
        raise DataError(f"{name} is not a statistics file (missing {missing or ['channel']})")
    for k in ("period", "fill_nan_with_min"):
        v = stats.attrs.get(k, "")
        stats.attrs[k] = [s for s in str(v).split(",") if s] if not isinstance(v, list) else v
    for k in _JSON_ATTRS:
        v = stats.attrs.get(k, "[]")
        stats.attrs[k] = json.loads(v) if isinstance(v, str) else list(v)
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

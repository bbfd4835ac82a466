"""The configured source store read in blocks of times, on any worker (docs/data.md, "Preparing ERA5 on a cluster").

`aeris data stats` and `aeris data prepare` cut the time axis into blocks (`time_blocks`) and
hand each block to a task. A task opens the source itself (`ConfigSource`: the store named by
the data config, local or an fsspec URL, opened once per worker process and cached), reads
the block's channels with `read_channels` (one synchronous dask computation per block over
the store's own chunks, so no two workers share a read), fills the `fill_nan_with_min`
variables, and finds the times with a NaN/inf field (`bad_times`). `missing_times` finds
the gaps of the source's time axis. Nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from aeris.data.config import DataConfig
from aeris.data.forcings import toa_incident_solar_radiation
from aeris.data.lexicon import canonical_name, parse_channel
from aeris.data.location import Location
from aeris.data.store import DataError, is_remote, open_store, select_levels, select_variables

__all__ = ["ConfigSource", "DatasetSource", "open_config_store", "with_computed_tisr", "read_channels",
           "bad_times", "missing_times", "time_blocks", "auto_block_times", "block_chunks", "stored_time_chunk", "describe_channel", "bad_data_message",
           "missing_message", "check_times", "times_fingerprint", "BLOCK_BYTES"]

BLOCK_BYTES = 64 * 2 ** 20   # automatic block size: about this many bytes of fields per block
MAX_BLOCK_TIMES = 64         # ... and at most this many times (progress, balance over workers)


def with_computed_tisr(ds: xr.Dataset, chunk: int | tuple[int, ...] = 1) -> xr.Dataset:
    """`ds` plus a lazy ``toa_incident_solar_radiation`` computed analytically
    (`aeris.data.forcings`, 1-h accumulation ending at each time) when the store lacks it.
    `chunk`: times per dask chunk, or the chunk sizes (1: a block of times computes exactly
    its own fields)."""
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


def open_config_store(cfg: DataConfig, time_chunks: int | tuple[int, ...] | None = None) -> xr.Dataset:
    """The configured store with just the configured variables and levels (lazy); a missing
    ``toa_incident_solar_radiation`` forcing is computed analytically. time_chunks: dask chunks
    along time (None: the store's own)."""
    ds = open_store(cfg.path, time_chunks=time_chunks)
    if "toa_incident_solar_radiation" in {canonical_name(v) for v in cfg.forcings}:
        ds = with_computed_tisr(ds, 1 if time_chunks is None else time_chunks)
    variables = [*cfg.surface, *cfg.atmospheric, *cfg.forcings, *cfg.static]
    ds = select_variables(ds, variables, str(cfg.path))
    return select_levels(ds, cfg.levels, str(cfg.path)) if cfg.atmospheric else ds


_OPEN: dict[str, xr.Dataset] = {}
_OPEN_LOCK = threading.Lock()


class ConfigSource:
    """The store of a data config, opened on first use in each process (each Dask worker) and
    cached there; picklable (only the config travels). A local path is made absolute first,
    so that workers started elsewhere on a shared file system find it. time_chunks: dask
    chunks along time, matching the job's blocks so that a block is one read per variable."""

    def __init__(self, cfg: DataConfig, time_chunks: int | tuple[int, ...] | None = None,
                 times: np.ndarray | None = None):
        path = cfg.path if is_remote(cfg.path) else Location(cfg.path).url
        self.cfg = replace(cfg, path=path)
        self.time_chunks = time_chunks
        # the times the client saw: a worker whose store differs (another file system, a store
        # rewritten since) refuses to work on it, and a changed store is opened anew
        self.fingerprint = None if times is None else times_fingerprint(times)
        keys = ("path", "surface", "atmospheric", "levels", "forcings", "static")
        self.key = json.dumps({k: asdict(self.cfg)[k] for k in keys}
                              | {"chunks": time_chunks, "times": self.fingerprint}, sort_keys=True)

    def dataset(self) -> xr.Dataset:
        with _OPEN_LOCK:
            ds = _OPEN.get(self.key)
            if ds is None:
                ds = open_config_store(self.cfg, self.time_chunks)
                if self.fingerprint is not None and "time" in ds.coords:
                    got = times_fingerprint(ds["time"].values)
                    if got != self.fingerprint:
                        raise DataError(f"{self.cfg.path} seen from this worker has other times "
                                        f"({ds.sizes['time']}) than the client saw: the same store must be "
                                        f"readable under the same path on every worker")
                if len(_OPEN) >= 8:  # a long-lived worker serving many jobs: keep the recent ones
                    _OPEN.pop(next(iter(_OPEN)))
                _OPEN[self.key] = ds
            return ds


def times_fingerprint(times: np.ndarray) -> str:
    """A hash of a time axis (ns)."""
    return hashlib.sha256(np.asarray(times, dtype="datetime64[ns]").astype(np.int64).tobytes()).hexdigest()


class DatasetSource:
    """An already opened dataset (for in-process runs: it is not shipped to other processes)."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds

    def dataset(self) -> xr.Dataset:
        return self.ds

    def __reduce__(self):
        raise DataError("an opened dataset cannot be sent to Dask workers: run on a data config "
                        "(compute_and_save_stats / prepare), or with scheduler 'serial'")


def bad_data_message(what: str, channel: str, time) -> str:
    """The error of a NaN/inf field: `what` (e.g. ``"state "``), channel, variable, level and time."""
    return (f"NaN/inf in {what}{describe_channel(channel)} at time "
            f"{np.datetime_as_string(np.datetime64(time, 'ns'), unit='h')} (set data.fill_nan_with_min for "
            f"variables with NaNs such as sst over land, or data.on_bad_data=skip to leave such times out)")


def missing_message(gaps: np.ndarray, times: np.ndarray, where: str) -> str:
    """The error of times missing from the store's time grid (the first few of them)."""
    step = np.diff(np.unique(times)).min().astype("timedelta64[m]")
    shown = ", ".join(np.datetime_as_string(gaps[:5], unit="h"))
    return (f"time(s) missing from the store in {where} at its step of {step}: {shown}"
            f"{' ...' if gaps.size > 5 else ''} ({gaps.size} in all); set data.on_bad_data=skip to leave "
            f"them out (recorded as missing_times)")


def describe_channel(channel: str) -> str:
    """``'z500'`` -> ``"channel 'z500' (geopotential at 500 hPa)"``."""
    name, level = parse_channel(channel)
    return f"channel {channel!r} ({name}{f' at {level} hPa' if level is not None else ''})"


def read_channels(ds: xr.Dataset, channels: Sequence[str], time_index=None,
                  fill: Sequence[str] = ()) -> list[np.ndarray]:
    """The fields of `channels` at `time_index` (positions along ``time``; None for static
    channels), one array per channel: (T, n_lat, n_lon), or (n_lat, n_lon) for static ones.

    One synchronous dask computation over the variables involved (each store chunk read once);
    the variables in `fill` have the NaNs of each 2-D field replaced by its minimum.
    """
    groups: dict[str, list[tuple[int, int | None]]] = {}
    for k, ch in enumerate(channels):
        name, level = parse_channel(ch)
        groups.setdefault(name, []).append((k, level))
    fill = {canonical_name(v) for v in fill}
    lazy, meta = [], []
    for name, members in groups.items():
        if name not in ds.data_vars:
            raise DataError(f"{describe_channel(channels[members[0][0]])}: variable {name!r} missing; "
                            f"the store has {sorted(ds.data_vars)}")
        da = ds[name]
        if time_index is None:
            if "time" in da.dims:
                raise DataError(f"static {describe_channel(channels[members[0][0]])} has a time dimension")
        else:
            if "time" not in da.dims:
                raise DataError(f"{describe_channel(channels[members[0][0]])} has no time dimension")
            da = da.isel(time=_as_slice(time_index))
        levels = [lv for _, lv in members]
        have = [int(v) for v in da["level"].values] if "level" in da.dims else []
        for k, lv in members:
            if lv is None and have:
                raise DataError(f"{describe_channel(channels[k])}: {name} has levels {have}; name one "
                                f"(e.g. {channels[k]}{have[0]})")
            if lv is not None and lv not in have:
                raise DataError(f"{describe_channel(channels[k])}: level {lv} hPa missing; "
                                f"{name} has levels {have}")
        if have:
            da = da.sel(level=sorted(set(levels)))
        want = (("time",) if time_index is not None else ()) + (("level",) if "level" in da.dims else ()) \
            + ("latitude", "longitude")
        if set(da.dims) != set(want):
            raise DataError(f"variable {name!r} has dims {da.dims}, expected {want}")
        da = da.transpose(*want)
        lazy.append(da.data)
        meta.append((name, members, [int(v) for v in da["level"].values] if "level" in da.dims else None))
    values = dask.compute(*lazy, scheduler="sync")
    out: list[np.ndarray | None] = [None] * len(channels)
    for (name, members, have), x in zip(meta, values):
        x = np.asarray(x)
        if name in fill and np.issubdtype(x.dtype, np.floating):
            with warnings.catch_warnings():  # an all-NaN field stays NaN: reported as a NaN field
                warnings.simplefilter("ignore", RuntimeWarning)
                m = np.nanmin(x, axis=(-2, -1), keepdims=True)
            x = np.where(np.isnan(x), m, x)
        for k, lv in members:
            out[k] = x[..., have.index(lv), :, :] if have is not None else x
    return out


def _as_slice(index):
    """A run of consecutive positions as a slice (dask slices cheaply; it gathers an index array
    through a shuffle), anything else unchanged."""
    if isinstance(index, slice):
        return index
    index = np.asarray(index, dtype=np.int64)
    if index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        return slice(int(index[0]), int(index[0]) + index.size)
    return index


def bad_times(fields: Sequence[np.ndarray], channels: Sequence[str]) -> dict[int, str]:
    """Position along time -> the first channel whose field there has a NaN or inf."""
    out: dict[int, str] = {}
    for ch, x in zip(channels, fields):
        ok = np.isfinite(x).all(axis=(-2, -1))
        for t in np.nonzero(~np.atleast_1d(ok))[0]:
            out.setdefault(int(t), ch)
    return dict(sorted(out.items()))


def check_times(times: np.ndarray, where: str) -> None:
    """`DataError` unless the store's times strictly increase (blocks are runs of positions)."""
    times = np.asarray(times, dtype="datetime64[ns]")
    bad = np.nonzero(np.diff(times) <= np.timedelta64(0, "ns"))[0]
    if bad.size:
        t = np.datetime_as_string(times[bad[0] + 1], unit="h")
        raise DataError(f"{where}: times must strictly increase; time {t} (position {bad[0] + 1}) repeats or "
                        f"goes back")


def missing_times(times: np.ndarray) -> np.ndarray:
    """The points of the store's time grid (its smallest spacing, from its first to its last
    time) that the store lacks."""
    times = np.unique(np.asarray(times, dtype="datetime64[ns]"))
    if times.size < 3:
        return np.array([], dtype="datetime64[ns]")
    step = np.diff(times).min()
    grid = np.arange(times[0], times[-1] + step, step)
    return np.setdiff1d(grid, times)


def stored_time_chunk(ds: xr.Dataset) -> int:
    """Times per chunk of the store (the largest dask chunk along time of a stored variable; 1
    when nothing is chunked along time)."""
    sizes = [max(ds[v].chunks[ds[v].dims.index("time")]) for v in ds.data_vars
             if "time" in ds[v].dims and ds[v].chunks and "aeris.data.forcings" not in str(ds[v].attrs.get("source"))]
    return int(max(sizes)) if sizes else 1


def auto_block_times(n_channels: int, n_lat: int, n_lon: int, itemsize: int = 4, chunk: int = 1) -> int:
    """Times per block: about `BLOCK_BYTES` of fields, at most `MAX_BLOCK_TIMES` (1 at 0.25
    deg), rounded to a multiple of the store's time `chunk` (a block reads whole chunks)."""
    per_time = max(1, n_channels * n_lat * n_lon * itemsize)
    n = int(min(MAX_BLOCK_TIMES, max(1, BLOCK_BYTES // per_time)))
    chunk = max(1, int(chunk))
    return max(chunk, n // chunk * chunk)


def time_blocks(start: int, stop: int, block_times: int) -> list[tuple[int, int]]:
    """[(a, b)] cutting positions start..stop-1 at the multiples of `block_times` (the blocks
    of a job line up with the chunks `block_chunks` gives, whatever range the job covers)."""
    if block_times < 1:
        raise DataError(f"block_times must be >= 1, got {block_times}")
    edges = sorted({start, stop, *range((start // block_times + 1) * block_times, stop, block_times)})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def block_chunks(n: int, block_times: int, head: int = 0) -> tuple[int, ...]:
    """Dask chunk sizes along a time axis of `n` positions for blocks of `block_times`: one chunk
    per block, or, with `head` > 0, the block's first `head` times as a chunk of their own (the
    partners t + dt that the previous block's pairs read, without reading the whole block)."""
    edges = set(range(0, n, block_times)) | {n}
    if 0 < head < block_times:
        edges |= {e + head for e in range(0, n, block_times) if e + head < n}
    edges = sorted(edges)
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


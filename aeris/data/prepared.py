"""The prepared training store: one zarr v3 store that ANY SWiPe layout reads its windows from.

`prepare(cfg, window)` turns the configured ERA5-like store into a zarr v3 group:

    state    (time, channel, H, W)   float32  prognostic channels, config order
    forcing  (time, channel, H, W)   float32  time-varying forcings (config.forcings order)
    static   (channel, H, W)         float32  static fields (config.static order)
    time     (time,)                 int64    ns since 1970-01-01
    latitude (H,), longitude (W,)    float64  the MODEL grid (row dropped per drop_lat_row)

Values are STANDARDISED, z = (x - mean) / std with the statistics of `aeris.data.stats`
(recorded in the attrs, so the store is self-contained; physical values are
``z * std + mean``). Standardising once here makes a training read a pure gather, and float32
keeps a relative precision of ~1e-7 of std, finer than float32 physical values of fields with
a large mean such as geopotential.

Chunks are (1, all channels, th, tw) tiles with (th, tw) = half a window by default
(a window QUADRANT), inside one zarr v3 shard per time step (1, C, H, W). A rank of any layout
(strided windows, sequence pieces of 1, 2 or 4 quadrants, shifted frames) reads only the
tiles that hold its tokens, with byte-range reads of the shard (see `PreparedStore.read`).

The attrs record the source, channels, grid, window, tile and statistics; `prepare` refuses
to reuse a store whose record differs from what the config asks (pass ``overwrite=True``).
Written atomically: built under a temporary name, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from tqdm.auto import tqdm
from zarr.storage import LocalStore, WrapperStore

from aeris.data.config import DataConfig
from aeris.data.lexicon import canonical_name
from aeris.data.normalize import safe_std
from aeris.data.stats import (
    channel_sets, compute_and_save_stats, load_stats, open_config_store, stats_for, stats_path,
)
from aeris.data.store import (
    DataError, drop_row, fill_nan_with_min, is_remote, model_grid, model_latitudes, select_channels,
    select_period,
)

__all__ = ["prepare", "ensure_prepared", "prepared_path", "PreparedStore", "IOCounter", "expected_record",
           "record_differences", "FORMAT"]

FORMAT = "aeris-prepared/1"
# record keys that must agree for a prepared store to be reused (window/tile only by `prepare`)
_CONFIG_KEYS = ("source", "channels", "forcing_channels", "static_channels", "drop_lat_row",
                "dt_hours", "fill_nan_with_min")


def prepared_path(cfg: DataConfig) -> str:
    """``cfg.prepared`` or ``<cfg.path minus .zarr>.prepared.zarr``."""
    if cfg.prepared:
        return cfg.prepared
    if is_remote(cfg.path):
        raise DataError(f"the store {cfg.path} is remote: set data.prepared to a local path")
    base = str(cfg.path).rstrip("/")
    for suffix in (".zarr", ".nc", ".nc4"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + ".prepared.zarr"


def _source_id(path: str) -> str:
    return str(path) if is_remote(path) else str(Path(path).resolve())


def _periods_range(cfg: DataConfig) -> list[str]:
    """[earliest start, latest end] of the train/val/test periods."""
    starts = [p[0] for p in (cfg.train_period, cfg.val_period, cfg.test_period) if p]
    ends = [p[1] for p in (cfg.train_period, cfg.val_period, cfg.test_period) if p]
    mask_start = min(np.datetime64(s, "ns") for s in starts)
    mask_end = max((np.datetime64(e, "ns"), e) for e in ends)[1]
    return [str(mask_start), mask_end]


def expected_record(cfg: DataConfig, stats: xr.Dataset | None = None) -> dict:
    """The part of a prepared store's record that `cfg` (and the statistics) determine."""
    prog, forc, stat = channel_sets(cfg)
    rec = {"source": _source_id(cfg.path), "channels": prog, "forcing_channels": forc,
           "static_channels": stat, "drop_lat_row": cfg.drop_lat_row, "dt_hours": int(cfg.dt_hours),
           "fill_nan_with_min": sorted(canonical_name(v) for v in cfg.fill_nan_with_min)}
    if stats is not None:
        rec["stats"] = _stats_record(stats, prog, forc + stat)
    return rec


def _stats_record(stats: xr.Dataset, prog: list[str], others: list[str]) -> dict:
    out = {}
    p = stats_for(stats, prog, need_diff=True)
    for i, c in enumerate(prog):
        out[c] = {k: float(p[k][i]) for k in ("mean", "std", "diff_mean", "diff_std")}
    o = stats_for(stats, others)
    for i, c in enumerate(others):
        out[c] = {"mean": float(o["mean"][i]), "std": float(o["std"][i])}
    return out


def record_differences(recorded: dict, expected: dict) -> list[str]:
    """Human-readable differences between a store's record and what is expected ([] = same)."""
    diffs = []
    for k, want in expected.items():
        got = recorded.get(k)
        if k == "stats":
            if not isinstance(got, dict) or sorted(got) != sorted(want):
                diffs.append("stats: different channels")
                continue
            for c in want:
                for s, v in want[c].items():
                    g = got[c].get(s)
                    if g is None or not np.isclose(g, v, rtol=1e-9, atol=0.0):
                        diffs.append(f"stats[{c}][{s}]: recorded {g}, expected {v}")
            continue
        if isinstance(want, tuple):
            want = list(want)
        if got != want:
            diffs.append(f"{k}: recorded {got!r}, expected {want!r}")
    return diffs


# ---- I/O counting and the reader -------------------------------------------------------------
class IOCounter:
    """Bytes and requests read from a store (chunk data and shard indexes, not metadata)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0

    def reset(self) -> None:
        self.bytes = 0
        self.requests = 0

    def add(self, buf) -> None:
        if buf is not None:
            self.bytes += len(buf)
            self.requests += 1


class _CountingStore(WrapperStore):
    """A zarr store wrapper that counts what is read (used by tests and the loader benchmark)."""

    def __init__(self, store, counter: IOCounter):
        super().__init__(store)
        self.counter = counter

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if not key.endswith("zarr.json"):
            self.counter.add(buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for b in bufs:
            self.counter.add(b)
        return bufs


class PreparedStore:
    """Read access to a prepared store; picklable (re-opens in DataLoader workers)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not Path(self.path).exists():
            raise DataError(f"prepared store not found: {self.path} (build it with `aeris data prepare`)")
        self.io = IOCounter()
        self._group = None
        self._raw: dict[str, bool] = {}
        self._arrays: dict = {}
        attrs = dict(self.group.attrs)
        if attrs.get("format") != FORMAT:
            raise DataError(f"{self.path} is not a prepared store of format {FORMAT} "
                            f"(found {attrs.get('format')!r})")
        self.record: dict = attrs
        self.times = np.asarray(self.group["time"][:], dtype=np.int64).astype("datetime64[ns]")
        self.latitudes = np.asarray(self.group["latitude"][:], dtype=np.float64)
        self.longitudes = np.asarray(self.group["longitude"][:], dtype=np.float64)

    @property
    def group(self):
        if self._group is None:
            store = _CountingStore(LocalStore(self.path, read_only=True), self.io)
            self._group = zarr.open_group(store, mode="r")
        return self._group

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_group"] = None  # zarr handles do not cross processes; re-open lazily
        state["_arrays"] = {}
        return state

    def array(self, name: str):
        """The zarr array `name` (handle cached: opening one reads its metadata)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    @property
    def channels(self) -> list[str]:
        return list(self.record["channels"])

    @property
    def forcing_channels(self) -> list[str]:
        return list(self.record["forcing_channels"])

    @property
    def static_channels(self) -> list[str]:
        return list(self.record["static_channels"])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.record["grid"])

    @property
    def window(self) -> tuple[int, int]:
        return tuple(self.record["window"])

    @property
    def tile(self) -> tuple[int, int]:
        return tuple(self.record["tile"])

    def time_index(self, times) -> np.ndarray:
        """Indices of `times` in the store; a `DataError` names the missing ones."""
        times = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
        idx = np.searchsorted(self.times, times)
        idx = np.minimum(idx, max(len(self.times) - 1, 0))
        ok = (len(self.times) > 0) & (self.times[idx] == times) if len(self.times) else np.zeros(times.shape, bool)
        if not np.all(ok):
            missing = [str(t) for t in times[~ok][:5]]
            raise DataError(f"time(s) {missing} not in the prepared store {self.path} "
                            f"({self.times[0] if len(self.times) else '-'} .. "
                            f"{self.times[-1] if len(self.times) else '-'})")
        return idx

    def read(self, name: str, time_index: Sequence[int] | None, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Orthogonal read: array `name` at the given times, all channels, rows x cols.

        Only the chunks intersecting rows x cols are fetched (byte ranges of each shard).
        Returns (n_times, C, len(rows), len(cols)) or (C, len(rows), len(cols)) for static.
        (`read_tiles` is the fast path for uncompressed stores.)
        """
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        arr = self.array(name)
        if time_index is None:
            return arr.get_orthogonal_selection((slice(None), rows, cols))
        return arr.get_orthogonal_selection((np.asarray(time_index, dtype=np.int64), slice(None), rows, cols))

    def raw_layout(self, name: str) -> bool:
        """True when `name` is stored as uncompressed little-endian float32 shards with the index
        at the end (zarr v3 sharding spec), so inner chunks can be read by plain byte ranges."""
        if name not in self._raw:
            from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
            arr = self.array(name)
            codecs = arr.metadata.codecs
            shards = (arr.shape[0], *self.grid) if arr.ndim == 3 else (1, arr.shape[1], *self.grid)
            inner = codecs[0] if len(codecs) == 1 else None
            ok = (isinstance(inner, ShardingCodec)
                  and len(inner.codecs) == 1 and isinstance(inner.codecs[0], BytesCodec)
                  and str(getattr(inner.codecs[0].endian, "value", "")) == "little"
                  and [type(c) for c in inner.index_codecs] == [BytesCodec, Crc32cCodec]
                  and str(inner.index_location.value) == "end"
                  and np.dtype(arr.dtype) == np.float32 and tuple(arr.shards) == shards)
            self._raw[name] = bool(ok)
        return self._raw[name]

    def read_tiles(self, name: str, time_index: Sequence[int] | None, tiles: np.ndarray,
                   tile_rows: np.ndarray, tile_cols: np.ndarray) -> np.ndarray:
        """Read whole chunk tiles (ty, tx) by byte ranges of the shard files (uncompressed stores).

        The result has the layout of `read` with rows = tiles rows `tile_rows` expanded, cols
        likewise; positions of tiles not asked for are left as NaN.
        """
        arr = self.array(name)
        th, tw = self.tile
        C = arr.shape[-3]
        ny, nx = self.grid[0] // th, self.grid[1] // tw
        chunk_bytes = C * th * tw * 4
        ry = {int(t): i for i, t in enumerate(tile_rows)}
        cx = {int(t): i for i, t in enumerate(tile_cols)}
        steps = [None] if time_index is None else [int(t) for t in np.atleast_1d(time_index)]
        out = np.empty((len(steps), C, len(tile_rows) * th, len(tile_cols) * tw), dtype=np.float32)
        flat = tiles[:, 0] * nx + tiles[:, 1]
        tile_y = np.asarray([ry[int(t)] for t in tiles[:, 0]], dtype=np.int64)
        tile_x = np.asarray([cx[int(t)] for t in tiles[:, 1]], dtype=np.int64)
        buf = np.empty((len(tile_rows), len(tile_cols), C, th, tw), dtype=np.float32)
        for k, t in enumerate(steps):
            buf.fill(np.nan)
            key = arr.metadata.encode_chunk_key((0, 0, 0) if t is None else (t, 0, 0, 0))
            path = os.path.join(self.path, name, *key.split("/"))
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                index_bytes = ny * nx * 16 + 4
                index = np.frombuffer(os.pread(f.fileno(), index_bytes, size - index_bytes)[:-4], dtype="<u8")
                self.io.bytes += index_bytes
                self.io.requests += 1
                index = index.reshape(ny * nx, 2)
                order = np.argsort(flat, kind="stable")
                # coalesce runs of consecutive chunks stored back to back into one read each
                runs, run = [], [order[0]] if len(order) else []
                for j in order[1:]:
                    prev = run[-1]
                    if (flat[j] == flat[prev] + 1 and index[flat[prev], 0] != 2 ** 64 - 1
                            and index[flat[j], 0] == index[flat[prev], 0] + index[flat[prev], 1]):
                        run.append(j)
                    else:
                        runs.append(run)
                        run = [j]
                if run:
                    runs.append(run)
                for run in runs:
                    first = flat[run[0]]
                    off = int(index[first, 0])
                    if off == 2 ** 64 - 1:
                        continue  # never written: stays NaN
                    sizes = index[flat[run], 1]
                    if np.any(sizes != chunk_bytes):
                        raise DataError(f"{path}: chunk sizes {sorted(set(sizes.tolist()))}, expected {chunk_bytes}")
                    nbytes = chunk_bytes * len(run)
                    data = np.frombuffer(os.pread(f.fileno(), nbytes, off), dtype="<f4")
                    buf[tile_y[run], tile_x[run]] = data.reshape(len(run), C, th, tw)
                    self.io.bytes += nbytes
                    self.io.requests += 1
            # tile-major buffer -> (C, rows, cols) in one transpose
            out[k] = buf.transpose(2, 0, 3, 1, 4).reshape(C, len(tile_rows) * th, len(tile_cols) * tw)
        return out[0] if time_index is None else out

    def check(self, expected: dict) -> None:
        diffs = record_differences(self.record, expected)
        if diffs:
            raise DataError(f"the prepared store {self.path} was built with a different configuration: "
                            + "; ".join(diffs) + " (rebuild it: `aeris data prepare --overwrite`)")


# ---- building --------------------------------------------------------------------------------
def _codecs(compressor: str):
    if compressor == "none":
        return None
    if compressor == "zstd":
        return [zarr.codecs.ZstdCodec(level=1)]
    raise DataError(f"compressor must be 'none' or 'zstd', got {compressor!r}")


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis] = -1
    return ((x.astype(np.float64) - mean.reshape(shape)) / safe_std(std).reshape(shape)).astype(np.float32)


def _check_finite(block: np.ndarray, channels: list[str], times: np.ndarray | None, what: str) -> None:
    bad = ~np.isfinite(block)
    if bad.any():
        idx = np.argwhere(bad)[0]
        if times is None:
            raise DataError(f"NaN/inf in {what} channel {channels[idx[0]]!r}")
        raise DataError(f"NaN/inf in {what} channel {channels[idx[1]]!r} at time "
                        f"{np.datetime_as_string(times[idx[0]], unit='h')} (set data.fill_nan_with_min "
                        f"for variables with NaNs such as sst over land)")


def prepare(cfg: DataConfig, window: Sequence[int], *, tile: Sequence[int] | None = None,
            overwrite: bool = False, compressor: str = "none", times_per_write: int = 8,
            progress: bool = True) -> Path:
    """Build (or reuse) the prepared store of `cfg` for model window ``(ws_h, ws_w)``; returns its path.

    Statistics come from `stats_path(cfg)` (computed over the training period when missing).
    The store holds every source time between the earliest period start and the latest period
    end. An existing store is reused when its record matches; otherwise `DataError` (or rebuilt
    with ``overwrite=True``).
    """
    window = (int(window[0]), int(window[1]))
    tile = (window[0] // 2, window[1] // 2) if tile is None else (int(tile[0]), int(tile[1]))
    if min(tile) < 1 or window[0] % tile[0] or window[1] % tile[1]:
        raise DataError(f"tile {tile} must divide the window {window}")
    out = Path(prepared_path(cfg))
    spath = Path(stats_path(cfg))
    stats = load_stats(spath) if spath.exists() else load_stats(compute_and_save_stats(cfg))
    expected = expected_record(cfg, stats) | {"window": list(window), "tile": list(tile)}

    prog, forc, stat = channel_sets(cfg)
    ds = open_config_store(cfg)
    n_lat, n_lon = ds.sizes["latitude"], ds.sizes["longitude"]
    H, W = model_grid(n_lat, n_lon, cfg.drop_lat_row, window)
    times_all = ds["time"].values.astype("datetime64[ns]")
    keep = np.nonzero(select_period(times_all, _periods_range(cfg)))[0]
    if keep.size == 0:
        raise DataError(f"no time of {cfg.path} lies in the configured periods {_periods_range(cfg)}")
    times = times_all[keep]

    if out.exists():
        if not overwrite:
            try:
                existing = PreparedStore(out)
            except DataError as e:
                raise DataError(f"{out} exists but is not a usable prepared store ({e}); "
                                f"use overwrite=True") from e
            diffs = record_differences(existing.record, expected)
            if not np.array_equal(existing.times, times):
                diffs.append(f"times: recorded {len(existing.times)} from {existing.times[0]}, "
                             f"expected {len(times)} from {times[0]}")
            if diffs:
                raise DataError(f"the prepared store {out} was built with a different configuration: "
                                + "; ".join(diffs) + " (rebuild with overwrite=True / --overwrite)")
            return out

    fill = {canonical_name(v) for v in cfg.fill_nan_with_min}
    src = ds.assign({v: fill_nan_with_min(ds[v]) for v in fill if v in ds.data_vars})
    srec = expected["stats"]
    codecs = _codecs(compressor)
    raw = codecs is None  # uncompressed shards are written directly (zarr's per-chunk encode is slow)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        group = zarr.open_group(LocalStore(str(tmp)), mode="w", zarr_format=3)
        record = expected | {
            "format": FORMAT, "grid": [H, W], "source_grid": [n_lat, n_lon], "normalised": True,
            "stats_file": str(spath), "compressor": compressor, "levels": [int(v) for v in cfg.levels],
            "time_range": [str(times[0]), str(times[-1])], "n_times": int(len(times)),
            # the periods the store was built for: a split reaching outside them must not
            # silently lose samples (ForecastDataset checks)
            "periods_range": _periods_range(cfg),
            "synthetic": "synthetic" in json.dumps(ds.attrs, default=str).lower(),
            "computed_forcings": [v for v in ds.data_vars
                                  if "aeris.data.forcings" in str(ds[v].attrs.get("source", ""))],
        }
        _coord(group, "time", times.astype(np.int64), ("time",),
               {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"})
        _coord(group, "latitude", model_latitudes(ds["latitude"].values, cfg.drop_lat_row), ("latitude",),
               {"units": "degrees_north"})
        _coord(group, "longitude", ds["longitude"].values.astype(np.float64), ("longitude",),
               {"units": "degrees_east"})
        dims = ("time", "channel", "latitude", "longitude")
        for name, chans in (("state", prog), ("forcing", forc)):
            arr = group.create_array(
                name, shape=(len(times), len(chans), H, W), dtype="float32",
                chunks=(1, max(len(chans), 1), *tile), shards=(1, max(len(chans), 1), H, W),
                compressors=codecs, fill_value=np.nan, dimension_names=dims)
            arr.attrs["channels"] = chans
        sarr = group.create_array(
            "static", shape=(len(stat), H, W), dtype="float32", chunks=(max(len(stat), 1), *tile),
            shards=(max(len(stat), 1), H, W), compressors=codecs, fill_value=np.nan,
            dimension_names=("channel", "latitude", "longitude"))
        sarr.attrs["channels"] = stat

        if stat:
            sfields = select_channels(src, stat).transpose("channel", "latitude", "longitude")
            block = drop_row(np.asarray(sfields.values), cfg.drop_lat_row)
            block = _standardise(block, _col(srec, stat, "mean"), _col(srec, stat, "std"), 0)
            _check_finite(block, stat, None, "static")
            _write(sarr, None, block, tile, raw)
        pstack = select_channels(src, prog) if prog else None
        fstack = select_channels(src, forc) if forc else None
        step = max(1, int(times_per_write))
        for a in tqdm(range(0, len(times), step), desc=f"prepare {out.name}", unit="block",
                      disable=not progress):
            sel = keep[a:a + step]
            for name, stack, chans in (("state", pstack, prog), ("forcing", fstack, forc)):
                if stack is None:
                    continue
                block = drop_row(np.asarray(stack.isel(time=sel).values), cfg.drop_lat_row)
                block = _standardise(block, _col(srec, chans, "mean"), _col(srec, chans, "std"), 1)
                _check_finite(block, chans, times[a:a + step], name)
                _write(group[name], a, block, tile, raw)
        group.attrs.update(record)
        if out.exists():  # overwrite: swap in the new store, then remove the old one
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def ensure_prepared(cfg: DataConfig, window: Sequence[int], *, progress: bool = True) -> Path:
    """The prepared store of `cfg`: an existing one as it is (a `ForecastDataset` checks that it
    matches `cfg`, and may read it in another window's token order), else built by `prepare`
    for ``window``."""
    path = Path(prepared_path(cfg))
    return path if path.exists() else prepare(cfg, window, progress=progress)


def _write(arr, start: int | None, block: np.ndarray, tile: tuple[int, int], raw: bool) -> None:
    """Write float32 `block` ((n, C, H, W) at times start.. or (C, H, W) for static) into `arr`."""
    if not raw:
        if start is None:
            arr[:] = block
        else:
            arr[start:start + len(block)] = block
        return
    root = Path(arr.store_path.store.root) / arr.path
    fields = [(None, block)] if start is None else [(start + k, b) for k, b in enumerate(block)]
    for t, field in fields:
        key = arr.metadata.encode_chunk_key((0, 0, 0) if t is None else (t, 0, 0, 0))
        path = root.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_raw_shard(field, tile))


def encode_raw_shard(field: np.ndarray, tile: tuple[int, int]) -> bytes:
    """One uncompressed zarr v3 shard of a (C, H, W) float32 field with inner chunks (C, th, tw).

    Sharding spec: the inner chunks' little-endian C-order bytes in C order of the chunk grid,
    then the index ((offset, nbytes) uint64 per chunk, same order) and its crc32c (index
    location "end"). Equal to what zarr writes for our metadata (checked by the tests).
    """
    import google_crc32c
    C, H, W = field.shape
    th, tw = tile
    ny, nx = H // th, W // tw
    tiles = np.ascontiguousarray(
        np.asarray(field, dtype="<f4").reshape(C, ny, th, nx, tw).transpose(1, 3, 0, 2, 4))
    chunk_bytes = C * th * tw * 4
    offsets = np.arange(ny * nx, dtype=np.uint64) * np.uint64(chunk_bytes)
    index = np.stack([offsets, np.full(ny * nx, chunk_bytes, dtype=np.uint64)], 1).astype("<u8").tobytes()
    crc = np.array([google_crc32c.value(index)], dtype="<u4").tobytes()
    return tiles.tobytes() + index + crc


def _col(srec: dict, chans: list[str], key: str) -> np.ndarray:
    return np.array([srec[c][key] for c in chans], dtype=np.float64)


def _coord(group, name: str, values: np.ndarray, dims: tuple[str, ...], attrs: dict) -> None:
    arr = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                             compressors=None, dimension_names=dims)
    arr[:] = values
    arr.attrs.update(attrs)

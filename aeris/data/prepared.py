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
(a window QUADRANT; ``data.tile``, or `aeris.data.tiling.piece_tile` of the run's sequence
pieces), inside one zarr v3 shard per time step (1, C, H, W). A rank of any layout
(strided windows, sequence pieces, shifted frames) reads only the tiles that hold its tokens,
with byte-range reads of the shard (see `PreparedStore.read`); tiles that hold one piece each
make that exactly its tokens.

The attrs record the source, channels, grid, window, tile and statistics; `prepare` refuses
to reuse a store whose record differs from what the config asks (pass ``overwrite=True``).

Building runs in blocks of times on a Dask cluster (docs/data.md, "Preparing ERA5 on a cluster"):
each task (`prepare_block`) reads its block from the source (local or an fsspec URL),
standardises it, writes the whole shards of its times (no two tasks write one shard), and only
then marks the block complete in the progress folder ``.<name>.progress`` beside the store. A
build that stops is resumed by the next call with the same configuration: complete blocks
are skipped. The record is written last, so a store without it is not a prepared store; a
local store is built under ``.<name>.partial`` and renamed into place, a store at a URL is
built in place (object stores have no rename). The result does not depend on the number of
workers: it is the bytes of the one-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.storage import LocalStore, WrapperStore

from aeris.data.cluster import Cluster
from aeris.data.config import DataConfig
from aeris.data.lexicon import canonical_name
from aeris.data.location import Location
from aeris.data.normalize import safe_std
from aeris.data.source import (
    ConfigSource, auto_block_times, bad_data_message, bad_times, block_chunks, check_times, describe_channel,
    missing_message, missing_times, read_channels, stored_time_chunk, time_blocks, times_fingerprint,
)
from aeris.data.stats import (
    channel_sets, compute_and_save_stats, load_stats, stats_exists, stats_for, stats_path,
)
from aeris.data.store import DataError, drop_row, is_remote, model_grid, model_latitudes, select_period
from aeris.data.tiling import chunk_tile

__all__ = ["prepare", "ensure_prepared", "prepared_path", "PreparedStore", "IOCounter", "expected_record",
           "record_differences", "read_prepared_record", "prepare_block", "PrepareJob", "write_shard",
           "shard_key", "encode_raw_shard", "raw_shard_parts", "index_runs", "FORMAT", "PLAN_FORMAT"]

FORMAT = "aeris-prepared/1"
PLAN_FORMAT = "aeris-prepare-plan/1"   # the plan of a build in progress (resuming checks it)
# record keys that must agree for a prepared store to be reused (window/tile only by `prepare`)
# up to this many unwanted index entries (16 bytes each) between two wanted ones are read through
# rather than in another request
INDEX_GAP = 256
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
    """Bytes and requests read from a store (chunk data and shard indexes, not metadata); the
    reading threads of a prefetching trainer update it together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        self.requests = 0

    def reset(self) -> None:
        with self._lock:
            self.bytes = 0
            self.requests = 0

    def count(self, nbytes: int, requests: int = 1) -> None:
        with self._lock:
            self.bytes += int(nbytes)
            self.requests += requests

    def add(self, buf) -> None:
        if buf is not None:
            self.count(len(buf))

    def __getstate__(self):
        return {"bytes": self.bytes, "requests": self.requests}

    def __setstate__(self, state) -> None:
        self.__init__()
        self.bytes, self.requests = state["bytes"], state["requests"]


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
        likewise; positions of tiles not asked for are left as NaN. Of each shard's index only
        the entries of the asked tiles are read (runs less than `INDEX_GAP` entries apart in one
        read): a rank holding a small part of the field does not read the whole index.
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
        order = np.argsort(flat, kind="stable")
        runs_of_index = index_runs(flat)
        index_bytes = ny * nx * 16 + 4
        index = np.empty((ny * nx, 2), dtype="<u8")
        for k, t in enumerate(steps):
            buf.fill(np.nan)
            key = arr.metadata.encode_chunk_key((0, 0, 0) if t is None else (t, 0, 0, 0))
            path = os.path.join(self.path, name, *key.split("/"))
            with open(path, "rb") as f:
                index_at = os.fstat(f.fileno()).st_size - index_bytes
                for a, b in runs_of_index:
                    raw = os.pread(f.fileno(), (b - a) * 16, index_at + a * 16)
                    index[a:b] = np.frombuffer(raw, dtype="<u8").reshape(b - a, 2)
                    self.io.count(len(raw))
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
                    self.io.count(nbytes)
            # tile-major buffer -> (C, rows, cols) in one transpose
            out[k] = buf.transpose(2, 0, 3, 1, 4).reshape(C, len(tile_rows) * th, len(tile_cols) * tw)
        return out[0] if time_index is None else out

    def check(self, expected: dict) -> None:
        diffs = record_differences(self.record, expected)
        if diffs:
            raise DataError(f"the prepared store {self.path} was built with a different configuration: "
                            + "; ".join(diffs) + " (rebuild it: `aeris data prepare --overwrite`)")


def index_runs(tile_ids: np.ndarray, gap: int | None = None) -> list[tuple[int, int]]:
    """The ranges [a, b) of shard index entries `read_tiles` reads for the flat tile ids asked:
    runs of them with at most ``gap`` (default `INDEX_GAP`) unwanted entries between two."""
    wanted = np.unique(np.asarray(tile_ids, dtype=np.int64))
    cuts = np.nonzero(np.diff(wanted) > (INDEX_GAP if gap is None else gap) + 1)[0] + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(wanted, cuts) if len(r)]


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


def _standardise_into(out: np.ndarray, x: np.ndarray, mean: float, std: float) -> None:
    """out[...] = float32((float64(x) - mean) / std): the arithmetic of `_standardise`, one
    channel at a time (a float64 copy of one channel, not of the block)."""
    s = float(safe_std(np.array([std]))[0])
    np.divide(np.subtract(x, np.float64(mean), dtype=np.float64), s, out=out, casting="same_kind",
              dtype=np.float64)


@dataclass
class PrepareJob:
    """What every block task of `prepare` needs (sent to the workers once)."""

    source: ConfigSource
    build: Location              # the zarr group being written
    progress: Location           # plan.json, skeleton.done, blocks/<start>-<stop>.done|.skipped.json
    prog: list[str]
    forc: list[str]
    fill: list[str]
    keep: np.ndarray             # positions (in the source) of the store's times
    times: np.ndarray            # the store's times before any skip
    drop_lat_row: str
    tile: tuple[int, int]
    raw: bool                    # uncompressed: shards written directly
    mean: dict                   # array name -> per-channel mean (float64)
    std: dict
    on_bad_data: str = "error"
    skeleton: str = ""           # the id of the store's skeleton (zarr handles of another are stale)


_ARRAYS: dict[tuple[str, str, str], object] = {}
_ARRAYS_LOCK = threading.Lock()


def _zarr_array(job: PrepareJob, name: str):
    """The zarr array `name` of the store being built, opened once per process and skeleton."""
    with _ARRAYS_LOCK:
        key = (job.build.url, name, job.skeleton)
        if key not in _ARRAYS:
            if len(_ARRAYS) >= 16:
                _ARRAYS.pop(next(iter(_ARRAYS)))
            _ARRAYS[key] = zarr.open_array(store=job.build.zarr_store(), path=name, mode="r+")
        return _ARRAYS[key]


def shard_key(name: str, t: int | None) -> str:
    """The object holding time step `t` of array `name` (``None``: the static array's one shard)."""
    return f"{name}/c/0/0/0" if t is None else f"{name}/c/{int(t)}/0/0/0"


def write_shard(job: PrepareJob, name: str, t: int | None, field: np.ndarray) -> None:
    """Write the whole shard of time `t` (or the static one) of array `name`: a float32 (C, H, W)."""
    if job.raw:
        job.build.child(shard_key(name, t)).write_bytes(raw_shard_parts(field, job.tile), atomic=False)
    elif t is None:
        _zarr_array(job, name)[:] = field
    else:
        _zarr_array(job, name)[t:t + 1] = field[None]


def _block_fields(job: PrepareJob, ds: xr.Dataset, name: str, chans: list[str], sel: np.ndarray,
                  seconds: dict) -> np.ndarray:
    """Standardised float32 (T, C, H, W) of `chans` at source positions `sel`."""
    t0 = time.perf_counter()
    fields = read_channels(ds, chans, sel, job.fill)
    t1 = time.perf_counter()
    seconds["source_bytes"] += sum(int(x.nbytes) for x in fields)
    first = drop_row(fields[0], job.drop_lat_row)
    out = np.empty((len(sel), len(chans), *first.shape[-2:]), dtype=np.float32)
    for c, x in enumerate(fields):
        _standardise_into(out[:, c], drop_row(x, job.drop_lat_row), job.mean[name][c], job.std[name][c])
    seconds["read"] += t1 - t0
    seconds["standardise"] += time.perf_counter() - t1
    return out


def prepare_block(job: PrepareJob, block: tuple[int, int]) -> dict:
    """Read, standardise, check and write the store's times ``block = (start, stop)``; then mark
    the block complete (after all its shards are written). Returns the skipped times and the
    seconds spent reading, standardising and writing."""
    a, b = block
    ds = job.source.dataset()
    sel = job.keep[a:b]
    seconds = {"read": 0.0, "standardise": 0.0, "write": 0.0, "source_bytes": 0}
    fields, bad = {}, {}
    for name, chans in (("state", job.prog), ("forcing", job.forc)):
        if not chans:
            continue
        fields[name] = out = _block_fields(job, ds, name, chans, sel, seconds)
        for k, ch in bad_times([out[:, c] for c in range(len(chans))], chans).items():
            bad.setdefault(k, (name, ch))
    if bad and job.on_bad_data != "skip":
        k, (name, ch) = next(iter(sorted(bad.items())))
        raise DataError(bad_data_message(f"{name} ", ch, job.times[a + k]))
    t0 = time.perf_counter()
    for k in range(len(sel)):
        if k not in bad:
            for name, out in fields.items():
                write_shard(job, name, a + k, out[k])
    skipped = [[a + k, f"{np.datetime64(job.times[a + k], 'ns')}: NaN/inf in {name} {describe_channel(ch)}"]
               for k, (name, ch) in sorted(bad.items())]
    marker = job.progress.child(f"blocks/{a:010d}-{b:010d}" + (".skipped.json" if skipped else ".done"))
    marker.write_bytes(json.dumps(skipped).encode() if skipped else b"")
    seconds["write"] += time.perf_counter() - t0
    source_bytes = seconds.pop("source_bytes")
    return {"block": [a, b], "skipped": skipped, "seconds": seconds, "source_bytes": int(source_bytes),
            "written_bytes": int(sum(f[0].nbytes for f in fields.values()) * (len(sel) - len(bad)))}


def _done_blocks(progress: Location) -> tuple[set[int], dict[int, list]]:
    """Positions of the store's times in complete blocks, and the skipped ones among them."""
    done: set[int] = set()
    skipped: dict[int, list] = {}
    folder = progress.child("blocks")
    for name in folder.listdir():
        if name.startswith(".") or not (name.endswith(".done") or name.endswith(".skipped.json")):
            continue
        a, b = (int(v) for v in name.split(".", 1)[0].split("-"))
        done.update(range(a, b))
        if name.endswith(".skipped.json"):
            for pos, reason in folder.child(name).read_json():
                skipped[int(pos)] = [int(pos), reason]
    return done, skipped


def prepare(cfg: DataConfig, window: Sequence[int], *, tile: Sequence[int] | None = None,
            overwrite: bool = False, compressor: str = "none", block_times: int | None = None,
            progress: bool = True, scheduler: str | None = None, workers: int | None = None,
            client=None, cluster: Cluster | None = None, report: dict | None = None,
            times_per_write: int | None = None) -> Path | str:
    """Build (or reuse, or resume) the prepared store of `cfg` for model window ``(ws_h, ws_w)``,
    chunked in ``tile`` (default `aeris.data.tiling.chunk_tile`: ``data.tile``, else a quadrant).

    Statistics come from `stats_path(cfg)` (computed over the training period when missing).
    The store holds every source time between the earliest period start and the latest period
    end. An existing store is reused when its record matches; otherwise `DataError` (or rebuilt
    with ``overwrite=True``). An interrupted build of the same configuration is resumed: the
    blocks already complete are skipped.

    The blocks run on ``scheduler`` / ``workers`` (defaults ``cfg.scheduler`` /
    ``cfg.workers``; see `aeris.data.cluster.Cluster`), on an existing Dask `client`, or on a
    `cluster`. block_times: times per block (default ``cfg.block_times``; 0 = automatic).
    report: a dict filled with what this call did (blocks run and skipped as complete, bytes
    read and written, seconds per stage summed over the tasks, wall seconds of the blocks).
    Returns the store's path (a str for a URL). times_per_write: the former name of block_times.
    """
    if block_times is None and times_per_write is not None:
        block_times = times_per_write
    window = (int(window[0]), int(window[1]))
    tile = chunk_tile(cfg, window) if tile is None else (int(tile[0]), int(tile[1]))
    if min(tile) < 1 or window[0] % tile[0] or window[1] % tile[1]:
        raise DataError(f"tile {tile} must divide the window {window}")
    codecs = _codecs(compressor)
    own = cluster is None
    cluster = cluster or Cluster(scheduler or cfg.scheduler, cfg.workers if workers is None else workers,
                                 client=client)
    try:
        return _prepare(cfg, window, tile, overwrite, compressor, codecs,
                        cfg.block_times if block_times is None else int(block_times), progress, cluster,
                        {} if report is None else report)
    finally:
        if own:
            cluster.close()


def _prepare(cfg, window, tile, overwrite, compressor, codecs, block_times, progress, cluster,
             report: dict) -> Path | str:
    out = Location(prepared_path(cfg))
    spath = stats_path(cfg)
    if not stats_exists(spath):
        compute_and_save_stats(cfg, cluster=cluster, progress=progress)
    stats = load_stats(spath)
    expected = expected_record(cfg, stats) | {"window": list(window), "tile": list(tile)}

    prog, forc, stat = channel_sets(cfg)
    source = ConfigSource(cfg)
    ds = source.dataset()
    n_lat, n_lon = ds.sizes["latitude"], ds.sizes["longitude"]
    H, W = model_grid(n_lat, n_lon, cfg.drop_lat_row, window)
    if H % tile[0] or W % tile[1]:
        raise DataError(f"model grid {H}x{W} is not divisible by the tile {tile[0]}x{tile[1]}")
    times_all = ds["time"].values.astype("datetime64[ns]")
    check_times(times_all, str(cfg.path))
    periods = _periods_range(cfg)
    keep = np.nonzero(select_period(times_all, periods))[0]
    if keep.size == 0:
        raise DataError(f"no time of {cfg.path} lies in the configured periods {periods}")
    times = times_all[keep]
    gaps = missing_times(times)
    if gaps.size and cfg.on_bad_data != "skip":
        raise DataError(missing_message(gaps, times, f"the periods {periods}"))

    final = _read_prepared_record(out)
    if final is not None and not overwrite:
        diffs = record_differences(final[0], expected)
        skipped = [s.split(": ", 1)[0] for s in final[0].get("skipped_times", [])]
        if skipped and cfg.on_bad_data != "skip":
            diffs.append(f"built with data.on_bad_data=skip: {len(skipped)} time(s) skipped ({skipped[:3]}...)")
        want = np.setdiff1d(times, np.asarray(skipped, dtype="datetime64[ns]"))
        if not np.array_equal(final[1], want):
            diffs.append(f"times: recorded {len(final[1])} from {final[1][0] if len(final[1]) else '-'}, "
                         f"expected {len(want)} from {want[0] if len(want) else '-'}")
        if diffs:
            raise DataError(f"the prepared store {out} was built with a different configuration: "
                            + "; ".join(diffs) + " (rebuild with overwrite=True / --overwrite)")
        partial = out.sibling(f".{out.name}.partial")
        stale = out.sibling(f".{out.name}.progress")
        if stale.exists() and (out.remote or not partial.exists()):
            stale.remove()   # the store is complete: its build stopped just before this cleanup
        report.update(reused=True, blocks_run=0)
        return _result(out)
    if final is None and out.exists() and not overwrite and not out.remote:
        raise DataError(f"{out} exists but is not a usable prepared store (no {FORMAT} record); "
                        f"use overwrite=True / --overwrite")

    record = expected | {
        "format": FORMAT, "grid": [H, W], "source_grid": [n_lat, n_lon], "normalised": True,
        "stats_file": str(spath), "compressor": compressor, "levels": [int(v) for v in cfg.levels],
        "time_range": [str(times[0]), str(times[-1])], "n_times": int(len(times)),
        # the periods the store was built for: a split reaching outside them must not
        # silently lose samples (ForecastDataset checks)
        "periods_range": periods,
        "synthetic": "synthetic" in json.dumps(ds.attrs, default=str).lower(),
        "computed_forcings": [v for v in ds.data_vars
                              if "aeris.data.forcings" in str(ds[v].attrs.get("source", ""))],
        "missing_times": [str(t) for t in gaps], "skipped_times": [],
    }
    build = out if out.remote else out.sibling(f".{out.name}.partial")
    prog_loc = out.sibling(f".{out.name}.progress")
    srec = expected["stats"]
    job = PrepareJob(
        source=source, build=build, progress=prog_loc, prog=prog, forc=forc,
        fill=sorted({canonical_name(v) for v in cfg.fill_nan_with_min}), keep=keep, times=times,
        drop_lat_row=cfg.drop_lat_row, tile=tile, raw=codecs is None,
        mean={"state": _col(srec, prog, "mean"), "forcing": _col(srec, forc, "mean")},
        std={"state": _col(srec, prog, "std"), "forcing": _col(srec, forc, "std")},
        on_bad_data=cfg.on_bad_data)
    bt = block_times or auto_block_times(max(len(prog) + len(forc), 1), n_lat, n_lon,
                                         chunk=stored_time_chunk(ds))
    k0 = int(keep[0])  # keep is a run of positions: blocks line up with the source's chunks
    blocks_all = [(a - k0, b - k0) for a, b in time_blocks(k0, k0 + len(times), bt)]
    job.source = ConfigSource(cfg, time_chunks=block_chunks(len(times_all), bt), times=times_all)
    plan = json.loads(json.dumps({"format": PLAN_FORMAT, "out": out.url, "build": build.url, "record": record,
                                  "times_sha256": times_fingerprint(times)}, default=str))
    _start_or_resume(job, plan, overwrite, out)
    mark = prog_loc.child("skeleton.done")
    if mark.exists():
        job.skeleton = mark.read_bytes().decode()
    else:
        build.remove()
        job.skeleton = uuid.uuid4().hex
        _skeleton(job, ds, record, codecs, stat, srec, H, W)
        mark.write_bytes(job.skeleton.encode())

    done, skipped = _done_blocks(prog_loc)
    blocks = [blk for blk in blocks_all if not set(range(*blk)) <= done]
    n_blocks = len(blocks_all)
    t0 = time.perf_counter()
    results = cluster.run(prepare_block, job, blocks, desc=f"prepare {out.name}", progress=progress,
                          done=n_blocks - len(blocks))
    wall = time.perf_counter() - t0
    for r in results:
        for pos, reason in r["skipped"]:
            skipped[int(pos)] = [int(pos), reason]
    _finalise(job, record, sorted(skipped.values()), out, build)
    prog_loc.remove()
    report.update(reused=False, block_times=bt, blocks=n_blocks, blocks_run=len(blocks),
                  blocks_resumed=n_blocks - len(blocks), wall_s=wall,
                  source_bytes=sum(r["source_bytes"] for r in results),
                  written_bytes=sum(r["written_bytes"] for r in results),
                  seconds={k: sum(r["seconds"][k] for r in results) for k in ("read", "standardise", "write")},
                  skipped_times=[r for _, r in sorted(skipped.values())])
    return _result(out)


def _result(out: Location) -> Path | str:
    return out.url if out.remote else Path(out.url)


def _start_or_resume(job: PrepareJob, plan: dict, overwrite: bool, out: Location) -> None:
    """Resume an interrupted build of the same plan; refuse one of another plan (or, with
    overwrite, discard it); else start afresh, the plan written first, so that everything
    written later belongs to it. overwrite never resumes: it rebuilds from nothing."""
    plan_loc = job.progress.child("plan.json")
    old = plan_loc.read_json() if plan_loc.exists() else None
    if old == plan and not overwrite:
        return
    if old is not None and not overwrite:
        diffs = record_differences(old.get("record", {}), plan["record"])
        if old.get("times_sha256") != plan["times_sha256"]:
            diffs.append("times differ")
        raise DataError(f"an interrupted `aeris data prepare` of {out} for another configuration is at "
                        f"{job.progress} ({'; '.join(diffs) or 'another plan'}): rerun with --overwrite "
                        f"to discard it")
    if job.build == out and out.exists() and not (overwrite or old is not None):
        raise DataError(f"{out} exists but is not a usable prepared store (no {FORMAT} record); "
                        f"use overwrite=True / --overwrite")
    job.progress.remove()
    job.build.remove()   # ours: the partial build, or at a URL the store being rebuilt in place
    plan_loc.write_json(plan)


def _skeleton(job: PrepareJob, ds: xr.Dataset, record: dict, codecs, stat: list[str], srec: dict,
              H: int, W: int) -> None:
    """The group, its coordinates, the empty state/forcing arrays and the static fields."""
    group = zarr.open_group(job.build.zarr_store(), mode="w", zarr_format=3)
    n = len(job.times)
    _coord(group, "time", job.times.astype(np.int64), ("time",),
           {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"})
    _coord(group, "latitude", model_latitudes(ds["latitude"].values, job.drop_lat_row), ("latitude",),
           {"units": "degrees_north"})
    _coord(group, "longitude", ds["longitude"].values.astype(np.float64), ("longitude",),
           {"units": "degrees_east"})
    dims = ("time", "channel", "latitude", "longitude")
    for name, chans in (("state", job.prog), ("forcing", job.forc)):
        arr = group.create_array(
            name, shape=(n, len(chans), H, W), dtype="float32",
            chunks=(1, max(len(chans), 1), *job.tile), shards=(1, max(len(chans), 1), H, W),
            compressors=codecs, fill_value=np.nan, dimension_names=dims)
        arr.attrs["channels"] = chans
        if arr.metadata.encode_chunk_key((3, 0, 0, 0)) != shard_key(name, 3).split("/", 1)[1]:
            raise DataError(f"unexpected zarr chunk key encoding {arr.metadata.chunk_key_encoding}")
    sarr = group.create_array(
        "static", shape=(len(stat), H, W), dtype="float32", chunks=(max(len(stat), 1), *job.tile),
        shards=(max(len(stat), 1), H, W), compressors=codecs, fill_value=np.nan,
        dimension_names=("channel", "latitude", "longitude"))
    sarr.attrs["channels"] = stat
    if stat:
        fields = read_channels(ds, stat, None, job.fill)
        block = np.stack([drop_row(np.asarray(x), job.drop_lat_row) for x in fields])
        block = _standardise(block, _col(srec, stat, "mean"), _col(srec, stat, "std"), 0)
        for c, ch in enumerate(stat):
            if not np.isfinite(block[c]).all():
                raise DataError(f"NaN/inf in static {describe_channel(ch)} (a static field cannot be skipped; "
                                f"list its variable in data.fill_nan_with_min if NaNs are expected)")
        write_shard(job, "static", None, block)


def _finalise(job: PrepareJob, record: dict, skipped: list, out: Location, build: Location) -> None:
    """Leave out the skipped times, then write the record (the store's last write) and, for a
    local store, rename the finished build into place."""
    positions = [int(p) for p, _ in skipped]
    kept = np.delete(job.times, positions)
    names = [n for n, chans in (("state", job.prog), ("forcing", job.forc)) if chans]
    if positions:
        _compact(job, names, positions)
    group = zarr.open_group(build.zarr_store(), mode="r+")
    if positions:
        if group["time"].shape[0] != kept.size:
            _coord(group, "time", kept.astype(np.int64), ("time",),
                   {"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"}, overwrite=True)
        for name in ("state", "forcing"):
            arr = group[name]
            if arr.shape[0] != kept.size:
                arr.resize((kept.size, *arr.shape[1:]))
    if kept.size == 0:
        raise DataError("every time of the store was skipped as bad data")
    final = record | {"skipped_times": [r for _, r in skipped], "n_times": int(kept.size),
                      "time_range": [str(kept[0]), str(kept[-1])]}
    group.attrs.update(final)
    if build == out:
        return
    if out.exists():  # overwrite: swap in the new store, then remove the old one
        old = out.sibling(f".{out.name}.old-{os.getpid()}")
        out.move_to(old)
        build.move_to(out)
        old.remove()
    else:
        build.move_to(out)


def _compact(job: PrepareJob, names: list[str], positions: list[int]) -> None:
    """Close the gaps of the skipped times: the shards after the first one move down (through a
    staging folder, in two phases each marked when done, so an interrupted move resumes)."""
    n = len(job.times)
    gone = set(positions)
    new = np.cumsum([0 if i in gone else 1 for i in range(n)]) - 1
    first = min(positions)
    a_done, b_done = job.progress.child("compact-a.done"), job.progress.child("compact-b.done")
    if b_done.exists():
        return
    if not a_done.exists():
        for i in range(first, n):
            for name in names:
                src = job.build.child(shard_key(name, i))
                if i in gone:
                    src.remove()
                elif src.exists():
                    src.move_to(job.build.child(f"{name}/staged/{int(new[i])}"))
        a_done.write_bytes(b"")
    for name in names:
        staged = job.build.child(f"{name}/staged")
        for j in staged.listdir():
            if j.isdigit():
                staged.child(j).move_to(job.build.child(shard_key(name, int(j))))
        staged.remove()
        if not job.build.remote:  # the emptied folders of the moved shards
            for i in range(int(new[-1]) + 1, n):
                shutil.rmtree(Path(job.build.url) / name / "c" / str(i), ignore_errors=True)
    b_done.write_bytes(b"")


def _read_prepared_record(out: Location) -> tuple[dict, np.ndarray] | None:
    """(record, times) of a complete prepared store at `out`; None when there is none."""
    if not out.child("zarr.json").exists():
        return None
    try:
        meta = out.child("zarr.json").read_json()
        if meta.get("attributes", {}).get("format") != FORMAT:
            return None
        group = zarr.open_group(out.zarr_store(read_only=True), mode="r")
        times = np.asarray(group["time"][:], dtype=np.int64).astype("datetime64[ns]")
        return dict(group.attrs), times
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{out} exists but cannot be read as a prepared store ({e}); use "
                        f"overwrite=True / --overwrite") from e


def read_prepared_record(path: str | os.PathLike) -> dict:
    """The record (attributes) of the complete prepared store at `path` (local path or URL)."""
    got = _read_prepared_record(Location(path))
    if got is None:
        raise DataError(f"no complete prepared store at {path}")
    return got[0]


def ensure_prepared(cfg: DataConfig, window: Sequence[int], *, progress: bool = True,
                    scheduler: str | None = None, workers: int | None = None,
                    tile: Sequence[int] | None = None) -> Path:
    """The prepared store of `cfg`: an existing one as it is (a `ForecastDataset` checks that it
    matches `cfg`, and may read it in another window's token order or tiles), else built by
    `prepare` for ``window`` and ``tile`` (an interrupted build is resumed). Training reads a
    local store."""
    target = prepared_path(cfg)
    if is_remote(target):
        raise DataError(f"data.prepared is a URL ({target}): training reads the prepared store from a "
                        f"file system; copy it to a local or shared path and set data.prepared to it")
    path = Path(target)
    return path if path.exists() else Path(prepare(cfg, window, tile=tile, progress=progress,
                                                   scheduler=scheduler, workers=workers))


def raw_shard_parts(field: np.ndarray, tile: tuple[int, int]) -> list:
    """The bytes of `encode_raw_shard` as buffers written one after the other: the tiles
    (one reordering copy), the index and its crc32c."""
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
    return [memoryview(tiles).cast("B"), index, crc]


def encode_raw_shard(field: np.ndarray, tile: tuple[int, int]) -> bytes:
    """One uncompressed zarr v3 shard of a (C, H, W) float32 field with inner chunks (C, th, tw).

    Sharding spec: the inner chunks' little-endian C-order bytes in C order of the chunk grid,
    then the index ((offset, nbytes) uint64 per chunk, same order) and its crc32c (index
    location "end"). Equal to what zarr writes for our metadata (checked by the tests).
    """
    return b"".join(bytes(p) for p in raw_shard_parts(field, tile))


def _col(srec: dict, chans: list[str], key: str) -> np.ndarray:
    return np.array([srec[c][key] for c in chans], dtype=np.float64)


def _coord(group, name: str, values: np.ndarray, dims: tuple[str, ...], attrs: dict,
           overwrite: bool = False) -> None:
    arr = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                             compressors=None, dimension_names=dims, overwrite=overwrite)
    arr[:] = values
    arr.attrs.update(attrs)

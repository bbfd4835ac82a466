"""The WeatherBench2-style forecast zarr store, written region by region, resumable.

Layout (what `aeris evaluate` and the tracker read through `aeris.data.store.open_store`):

    <variable>(time, prediction_timedelta, number, level, latitude, longitude)   atmospheric
    <variable>(time, prediction_timedelta, number, latitude, longitude)          surface
    time = INITIALISATION time, prediction_timedelta = lead, number = ensemble member

WB2 long variable names and lexicon units, float32, the source store's grid (the polar row the
network does not see is padded back by the writer's caller). One chunk = one init x one lead x
one member batch x all levels x the whole field, so every (init, member batch, lead) region is
exactly one chunk per variable: regions are written independently (also by different ranks)
and never partially overlap.

Safety and resumption
---------------------
* The skeleton (metadata, coordinates, no data) is built under a temporary name and renamed.
  Its metadata is consolidated into the root ``zarr.json`` (readers open it consolidated);
  data writes add chunks only, so the consolidated metadata stays exact.
* ``attrs["aeris_request"]`` holds the JSON of the request (checkpoint, inits, steps, members,
  seed, sampler, ...). Opening an existing store with the SAME request resumes it; a different
  request is refused unless ``overwrite=True`` (which replaces the store).
* Progress: after the data of a region is written, ``<parent>/.<store name>.progress/<unit>.json``
  (beside the store: zarr warns about foreign files inside it; cleared when a store is created) records the last completed step of that (init, member batch) unit (temp file + rename). A
  killed run resumes from the last recorded step; the state it continues from is read back
  from the store (the rollout carries exactly the float32 fields it writes, so the continued
  run is bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aeris.data.lexicon import lookup, parse_channel

__all__ = ["StoreSpec", "ForecastStore", "ForecastStoreError", "variable_layout", "REQUEST_ATTR",
           "progress_dir", "read_request"]

REQUEST_ATTR = "aeris_request"


def progress_dir(path: str | os.PathLike) -> Path:
    """The folder beside the store that holds its per-unit progress records."""
    p = Path(path)
    return p.with_name(f".{p.name}.progress")


class ForecastStoreError(RuntimeError):
    """An output store that cannot be used for this request (exists, differs, malformed)."""


def variable_layout(channels: list[str]) -> tuple[dict[str, list[int]], list[int]]:
    """Channels -> ({variable: channel indices}, levels).

    Surface variables map to one channel index; atmospheric ones to one index per level, in
    the order of the returned (shared) level list. Every atmospheric variable must have the
    same levels (the WB2 layout has one ``level`` dim).
    """
    groups: dict[str, dict[int | None, int]] = {}
    for i, ch in enumerate(channels):
        name, level = parse_channel(ch)
        groups.setdefault(name, {})[level] = i
    levels: list[int] | None = None
    out: dict[str, list[int]] = {}
    for name, by_level in groups.items():
        if None in by_level:
            out[name] = [by_level[None]]
            continue
        lv = list(by_level)
        if levels is None:
            levels = lv
        elif sorted(lv) != sorted(levels):
            raise ForecastStoreError(f"atmospheric variable {name!r} has levels {lv}, others {levels}: "
                                     f"the WB2 layout needs one shared level list")
        out[name] = [by_level[lev] for lev in levels]
    return out, list(levels or [])


@dataclass
class StoreSpec:
    """What the store holds: coordinates, channels, chunking and descriptive attributes."""

    inits: np.ndarray             # datetime64[ns] (n_init,)
    leads: np.ndarray             # timedelta64[ns] (n_lead,)
    members: list[int]
    channels: list[str]
    latitudes: np.ndarray         # the SOURCE grid (descending)
    longitudes: np.ndarray
    chunk_members: int
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inits = np.asarray(self.inits, dtype="datetime64[ns]")
        self.leads = np.asarray(self.leads, dtype="timedelta64[ns]")
        self.members = [int(m) for m in self.members]
        if self.chunk_members < 1:
            raise ForecastStoreError(f"chunk_members must be >= 1, got {self.chunk_members}")
        self.variables, self.levels = variable_layout(self.channels)


class ForecastStore:
    """An open forecast store: region writes, read-back of a state, per-unit progress."""

    def __init__(self, path: str | os.PathLike, spec: StoreSpec):
        import zarr
        self.path = Path(path)
        self.spec = spec
        self.group = zarr.open_group(str(self.path), mode="r+")

    # ---- creation ------------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: str | os.PathLike, spec: StoreSpec, request: dict,
                         overwrite: bool = False) -> tuple["ForecastStore", bool]:
        """Open the store for `request`: (store, resumed). See the module docstring for the rules."""
        path = Path(path)
        req = json.loads(json.dumps(request, sort_keys=True, default=str))
        if path.exists() and not overwrite:
            old = read_request(path)
            if old is None:
                raise ForecastStoreError(f"{path} exists and is not an aeris forecast store: refusing to "
                                         f"overwrite it (use --overwrite / forecast.overwrite=true)")
            if old != req:
                diff = sorted(k for k in set(old) | set(req) if old.get(k) != req.get(k))
                raise ForecastStoreError(
                    f"{path} holds a different forecast request (differs in {diff}): refusing to "
                    f"overwrite it (use --overwrite / forecast.overwrite=true, or another output path)")
            return cls(path, spec), True
        _write_skeleton(path, spec, req)
        return cls(path, spec), False

    # ---- data ---------------------------------------------------------------------------------
    def write(self, init_index: int, member_start: int, lead_index: int, fields: np.ndarray) -> None:
        """fields (B, C, n_lat, n_lon) in the spec's channel order -> the region
        (init, lead, members member_start .. member_start + B)."""
        fields = np.asarray(fields, dtype=np.float32)
        B = fields.shape[0]
        want = (len(self.spec.channels), len(self.spec.latitudes), len(self.spec.longitudes))
        if fields.ndim != 4 or fields.shape[1:] != want:
            raise ForecastStoreError(f"fields must be (members, {want[0]}, {want[1]}, {want[2]}), "
                                     f"got {fields.shape}")
        sl = slice(member_start, member_start + B)
        for name, idx in self.spec.variables.items():
            block = fields[:, idx]  # (B, n_idx, lat, lon)
            if name in self._surface_names():
                block = block[:, 0]
            self.group[name][init_index, lead_index, sl] = block

    def read(self, init_index: int, member_start: int, n_members: int, lead_index: int) -> np.ndarray:
        """Inverse of `write`: (B, C, n_lat, n_lon) float32."""
        sl = slice(member_start, member_start + n_members)
        out = np.empty((n_members, len(self.spec.channels), len(self.spec.latitudes),
                        len(self.spec.longitudes)), dtype=np.float32)
        for name, idx in self.spec.variables.items():
            block = np.asarray(self.group[name][init_index, lead_index, sl])
            if name in self._surface_names():
                block = block[:, None]
            out[:, idx] = block
        return out

    def _surface_names(self) -> set[str]:
        return {n for n in self.spec.variables if lookup(n).kind != "atmospheric"}

    # ---- progress -----------------------------------------------------------------------------
    def _progress_file(self, unit: str) -> Path:
        return progress_dir(self.path) / f"{unit}.json"

    def completed_step(self, unit: str) -> int:
        """Last completed rollout step of `unit` (-1 = nothing written; 0 = initial condition)."""
        p = self._progress_file(unit)
        if not p.exists():
            return -1
        return int(json.loads(p.read_text())["step"])

    def mark(self, unit: str, step: int) -> None:
        """Record that `unit` is complete up to `step` (after its data is written)."""
        p = self._progress_file(unit)
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"step": int(step)}))
        os.replace(tmp, p)

    def progress(self) -> dict[str, int]:
        d = progress_dir(self.path)
        if not d.is_dir():
            return {}
        return {p.stem: int(json.loads(p.read_text())["step"]) for p in sorted(d.glob("*.json"))}


def read_request(path: str | os.PathLike) -> dict | None:
    """The request recorded in an existing store (None if it is not an aeris forecast store)."""
    meta = Path(path) / "zarr.json"
    if not meta.exists():
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, json.JSONDecodeError):
        return None
    raw = attrs.get(REQUEST_ATTR)
    return json.loads(raw) if isinstance(raw, str) else None


def _write_skeleton(path: Path, spec: StoreSpec, request: dict) -> None:
    """Metadata and coordinates (no data: unwritten chunks read as NaN), atomically."""
    import dask.array as da
    import xarray as xr

    n_i, n_l, n_m = len(spec.inits), len(spec.leads), len(spec.members)
    H, W = len(spec.latitudes), len(spec.longitudes)
    cm = min(spec.chunk_members, n_m)
    data_vars, encoding = {}, {}
    for name, idx in spec.variables.items():
        var = lookup(name)
        if var.kind == "atmospheric":
            dims = ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")
            shape, chunks = (n_i, n_l, n_m, len(spec.levels), H, W), (1, 1, cm, len(spec.levels), H, W)
        else:
            dims = ("time", "prediction_timedelta", "number", "latitude", "longitude")
            shape, chunks = (n_i, n_l, n_m, H, W), (1, 1, cm, H, W)
        arr = da.full(shape, np.nan, dtype=np.float32, chunks=chunks)
        data_vars[name] = xr.Variable(dims, arr, {"units": var.units, "long_name": var.long_name})
        encoding[name] = {"chunks": chunks}
    coords = {
        "time": ("time", spec.inits, {"long_name": "initialisation time"}),
        "prediction_timedelta": ("prediction_timedelta", spec.leads, {"long_name": "lead time"}),
        "number": ("number", np.asarray(spec.members, dtype=np.int64), {"long_name": "ensemble member"}),
        "latitude": ("latitude", np.asarray(spec.latitudes, dtype=np.float64), {"units": "degrees_north"}),
        "longitude": ("longitude", np.asarray(spec.longitudes, dtype=np.float64), {"units": "degrees_east"}),
    }
    if spec.levels:
        coords["level"] = ("level", np.asarray(spec.levels, dtype=np.int64), {"units": "hPa"})
    encoding["time"] = {"units": "hours since 1970-01-01", "dtype": "int64"}
    encoding["prediction_timedelta"] = {"units": "hours", "dtype": "int64"}
    attrs = {k: (v if isinstance(v, (str, int, float)) else json.dumps(v, default=str))
             for k, v in spec.attrs.items()}
    attrs[REQUEST_ATTR] = json.dumps(request, sort_keys=True)
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)

    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(progress_dir(path), ignore_errors=True)  # stale records of a removed store
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        # consolidated metadata: a reader gets every array's metadata in one read (remote
        # stores); region writes only add chunks, so the skeleton's metadata is final here
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata")
            ds.to_zarr(str(tmp), compute=False, zarr_format=3, consolidated=True, encoding=encoding, mode="w")
        if path.exists():  # overwrite: swap in the new skeleton, then remove the old store
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

"""Open any ERA5-like store and bring it to the project's canonical layout (docs/data.md, "Store canonicalisation").

`open_store` is the one place where reanalysis / forecast stores are opened. It returns a lazy
(dask-backed) ``xr.Dataset`` with

* WB2 long variable names (GRIB short names ``z``/``t2m``/... renamed via the lexicon; a
  level-less ``z`` is ``geopotential_at_surface``);
* canonical coordinate names (``lat``/``isobaricInhPa``/``valid_time``/``realization`` ...
  renamed via ``lexicon.COORD_ALIASES``);
* latitude descending (90 -> -90), longitude ascending in [0, 360), level in integer hPa,
  time datetime64[ns];
* dims in the canonical order ``time, prediction_timedelta, number, ..., level, latitude,
  longitude`` whatever order the store has;
* units checked against the lexicon, with explicit conversions for a few known cases
  (geopotential in m / gpm -> m2 s-2 times g0, degC -> K, hPa -> Pa, g/kg -> kg/kg).

A deterministic store whose ``number`` dim has size 1 (GRIB/CDS downloads) is squeezed.

Also here: `validate` (missing variables, NaN fields, grid shape -> `DataError` naming
them), the model-grid helpers `drop_row` / `pad_row` / `model_grid`, `select_channels`,
`select_period` and `fill_nan_with_min`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data.lexicon import COORD_ALIASES, VARIABLES, LexiconError, canonical_name, parse_channel
from aeris.data.timeaxis import decode_time

__all__ = [
    "DataError", "open_store", "canonicalize", "validate", "select_channels", "select_period", "period_bounds",
    "drop_row", "pad_row", "model_grid", "model_latitudes", "fill_nan_with_min", "is_remote",
    "CANONICAL_DIM_ORDER", "G0", "select_variables", "select_levels", "check_protocol",
]

G0 = 9.80665  # standard gravity [m s-2] (WMO), geopotential = G0 * geopotential height
CANONICAL_DIM_ORDER = ("time", "prediction_timedelta", "number", ..., "level", "latitude", "longitude")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")


class DataError(ValueError):
    """Data that cannot be used as asked: missing variable/level/time, NaNs, wrong grid, bad units."""


# ---- opening ---------------------------------------------------------------------------------
def is_remote(path: str | os.PathLike) -> bool:
    """True for fsspec URLs other than local files (gs://, s3://, https://, ...)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def check_protocol(url: str) -> None:
    """`DataError` naming the package to install when the fsspec filesystem of `url` is missing."""
    import fsspec
    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        pkg = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}.get(protocol)
        hint = f" (pip install {pkg})" if pkg else ""
        raise DataError(f"cannot open {url!r}: the fsspec filesystem for {protocol}:// is not "
                        f"installed{hint}: {e}") from e
    except ValueError as e:
        raise DataError(f"cannot open {url!r}: unknown protocol {protocol!r}") from e


def _is_zarr(path: str) -> bool:
    p = path.rstrip("/")
    if p.endswith(".zarr"):
        return True
    if p.lower().endswith(_NETCDF_SUFFIXES):
        return False
    if not is_remote(p):
        return Path(p).is_dir()
    return True


def _open_raw(path: str, time_chunks=None) -> xr.Dataset:
    if is_remote(path):
        check_protocol(path)
    elif not Path(path.removeprefix("file://")).exists():
        raise DataError(f"store not found: {path}")
    try:
        ds = _open_chunked(path, {})
        if time_chunks is None:
            return ds
        # dask chunks along time as asked (e.g. one per block of a parallel job: one read per
        # variable and block); the store's own chunks along the other dims
        dims = [d for d in ds.dims if d == "time" or COORD_ALIASES.get(str(d).lower()) == "time"]
        if not dims:
            return ds
        ds.close()
        return _open_chunked(path, {dims[0]: time_chunks})
    except DataError:
        raise
    except Exception as e:  # the backends raise many types; name the store in one error
        raise DataError(f"cannot open store {path!r}: {type(e).__name__}: {e}") from e


def _open_chunked(path: str, chunks: dict) -> xr.Dataset:
    if _is_zarr(path):
        # chunks={} keeps the store's own chunks (lazy dask arrays, one task per chunk);
        # an unconsolidated store is normal here (zarr v3 has no consolidation standard)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*separate the stored chunks", category=UserWarning)
            return xr.open_zarr(path, chunks=chunks, decode_timedelta=True)
    if is_remote(path):
        import fsspec
        return xr.open_dataset(fsspec.open(path).open(), chunks=chunks, decode_timedelta=True)
    return xr.open_dataset(path, chunks=chunks, decode_timedelta=True)


def open_store(path_or_url: str | os.PathLike, variables: Sequence[str] | None = None,
               levels: Sequence[int] | None = None, member: int | None = None, *,
               time_chunks: int | tuple[int, ...] | None = None) -> xr.Dataset:
    """Open a zarr (v2/v3) or netCDF store, local or fsspec URL, in the canonical layout (lazy).

    variables: names or aliases to keep (None = all); a missing one is a `DataError`.
    levels: pressure levels [hPa] selected BY VALUE; a missing one is a `DataError`.
    member: select this ``number`` (ensemble member) and drop the dim.
    time_chunks: dask chunks along time (an int or the sizes; None = the store's own chunks).
    """
    ds = canonicalize(_open_raw(str(path_or_url), time_chunks))
    ds.attrs.setdefault("source", str(path_or_url))
    if member is not None:
        if "number" not in ds.dims:
            raise DataError(f"member={member} asked but {path_or_url} has no ensemble dim 'number'")
        ds = ds.sel(number=member, drop=True)
    if variables is not None:
        ds = select_variables(ds, variables, str(path_or_url))
    if levels is not None:
        ds = select_levels(ds, levels, str(path_or_url))
    return ds


def select_variables(ds: xr.Dataset, variables: Iterable[str], where: str) -> xr.Dataset:
    names = []
    for v in variables:
        try:
            names.append(canonical_name(v))
        except LexiconError:
            names.append(v)
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise DataError(f"{where}: missing variable(s) {missing}; the store has {sorted(ds.data_vars)}")
    return ds[names]


def select_levels(ds: xr.Dataset, levels: Iterable[int], where: str) -> xr.Dataset:
    levels = [int(lv) for lv in levels]
    if "level" not in ds.dims:
        if any("level" in ds[v].dims for v in ds.data_vars):  # pragma: no cover - defensive
            raise DataError(f"{where}: inconsistent level dimension")
        return ds
    have = [int(lv) for lv in ds["level"].values]
    missing = [lv for lv in levels if lv not in have]
    if missing:
        raise DataError(f"{where}: missing pressure level(s) {missing} hPa; the store has {have}")
    return ds.sel(level=levels)


# ---- canonicalisation ------------------------------------------------------------------------
def canonicalize(ds: xr.Dataset) -> xr.Dataset:
    """Names, orientation, dim order and units of any ERA5-like dataset -> canonical (lazy)."""
    ds = _rename_coords(ds)
    ds = decode_time(ds, error=DataError)  # integer/CF/cftime time axes (docs/data.md, "Checking a store")
    ds = _rename_variables(ds)
    if "number" in ds.dims and ds.sizes["number"] == 1 and "prediction_timedelta" not in ds.dims:
        ds = ds.isel(number=0, drop=True)
    elif "number" in ds.coords and "number" not in ds.dims:
        ds = ds.drop_vars("number")  # a scalar member label of a deterministic store
    for scalar in [c for c in ("prediction_timedelta",) if c in ds.coords and c not in ds.dims]:
        ds = ds.drop_vars(scalar)
    ds = _orient(ds)
    ds = ds.transpose(*CANONICAL_DIM_ORDER, missing_dims="ignore")
    for name in list(ds.data_vars):
        ds[name] = _convert_units(ds[name], name)
    return ds


def _rename_coords(ds: xr.Dataset) -> xr.Dataset:
    present = set(ds.variables) | set(ds.dims)
    renames: dict[str, str] = {}
    drops: list[str] = []
    for name in sorted(present, key=lambda n: (n not in ds.dims, n)):  # dims first: they win
        if name in ds.data_vars:
            continue
        target = COORD_ALIASES.get(name.lower())
        if target is None or target == name:
            continue
        if target in present or target in renames.values():
            if name in ds.dims:
                raise DataError(f"dimension {name!r} and {target!r} both present: ambiguous {target}")
            drops.append(name)  # e.g. cfgrib's valid_time coord beside its time dim
            continue
        renames[name] = target
    return ds.drop_vars(drops).rename(renames)


def _rename_variables(ds: xr.Dataset) -> xr.Dataset:
    renames: dict[str, str] = {}
    for name in ds.data_vars:
        try:
            target = canonical_name(name)
        except LexiconError:
            continue  # unknown variables pass through untouched
        if target == "geopotential" and "level" not in ds[name].dims:
            target = "geopotential_at_surface"  # GRIB 'z' on the surface = orography
        if target in renames.values() or (target != name and target in ds.data_vars):
            raise DataError(f"variables {name!r} and another both map to {target!r}")
        if target != name:
            renames[name] = target
    return ds.rename(renames)


def _orient(ds: xr.Dataset) -> xr.Dataset:
    if "latitude" in ds.dims:
        lat = ds["latitude"].values
        if lat.size > 1 and not np.all(np.diff(lat) < 0):
            ds = ds.sortby("latitude", ascending=False)
    if "longitude" in ds.dims:
        lon = ds["longitude"].values.astype(np.float64)
        wrapped = np.mod(lon, 360.0)
        if not np.array_equal(wrapped, lon):
            ds = ds.assign_coords(longitude=("longitude", wrapped, ds["longitude"].attrs))
        if lon.size > 1 and not np.all(np.diff(ds["longitude"].values) > 0):
            ds = ds.sortby("longitude")
        if np.unique(ds["longitude"].values).size != ds.sizes["longitude"]:
            raise DataError("longitude has duplicate values after wrapping to [0, 360) "
                            "(both -180 and 180 present?)")
    if "level" in ds.coords:
        lev = ds["level"]
        values = lev.values.astype(np.float64)
        if str(lev.attrs.get("units", "")).strip().lower() == "pa" or (values.size and values.max() > 1100):
            values = values / 100.0  # Pa -> hPa
        ds = ds.assign_coords(level=(lev.dims, np.rint(values).astype(np.int64), {"units": "hPa"}))
    if "time" in ds.coords and np.issubdtype(ds["time"].dtype, np.datetime64):
        if ds["time"].dtype != np.dtype("datetime64[ns]"):
            ds = ds.assign_coords(time=ds["time"].values.astype("datetime64[ns]"))
    return ds


def _unit_key(units: str) -> str:
    """Normalise a unit string: 'm**2 s**-2', 'm2 s-2', 'm^2/s^2' -> 'm2s-2'."""
    u = units.strip().lower().replace("**", "").replace("^", "").replace(" ", "").replace(".", "")
    u = re.sub(r"/([a-z]+)(\d*)", lambda m: f"{m.group(1)}-{m.group(2) or '1'}", u)
    return u


_DIMENSIONLESS = {"", "1", "(0-1)", "0-1", "dimensionless", "fraction", "~"}
# (canonical unit key, given unit key) -> (scale, offset): value_canonical = value * scale + offset
_CONVERSIONS = {
    ("m2s-2", "m"): (G0, 0.0), ("m2s-2", "gpm"): (G0, 0.0), ("m2s-2", "m1"): (G0, 0.0),
    ("k", "degc"): (1.0, 273.15), ("k", "c"): (1.0, 273.15), ("k", "degreesc"): (1.0, 273.15),
    ("k", "celsius"): (1.0, 273.15),
    ("pa", "hpa"): (100.0, 0.0), ("pa", "mb"): (100.0, 0.0), ("pa", "mbar"): (100.0, 0.0),
    ("kgkg-1", "gkg-1"): (1e-3, 0.0),
}
_SYNONYMS = {"ms-1": {"ms-1", "m/s"}, "k": {"k", "kelvin"}, "kgkg-1": {"kgkg-1", "1"},
             "jm-2": {"jm-2"}, "pa": {"pa"}, "m2s-2": {"m2s-2"}}


def _convert_units(da: xr.DataArray, name: str) -> xr.DataArray:
    var = VARIABLES.get(name)
    if var is None or "units" not in da.attrs:
        return da  # unknown variable or no units recorded: nothing to check against
    want, got = _unit_key(var.units), _unit_key(str(da.attrs["units"]))
    if want == "(0-1)":
        ok = got in _DIMENSIONLESS
    else:
        ok = got == want or got in _SYNONYMS.get(want, set())
    if ok:
        return da
    conv = _CONVERSIONS.get((want, got))
    if conv is None:
        raise DataError(f"variable {name!r} has units {da.attrs['units']!r}, expected {var.units!r} "
                        f"(no known conversion)")
    scale, offset = conv
    out = da * scale + offset if offset else da * scale
    out.attrs = {**da.attrs, "units": var.units,
                 "converted_from": f"{da.attrs['units']} (x{scale:g} + {offset:g})"}
    return out.astype(da.dtype) if np.issubdtype(da.dtype, np.floating) else out


# ---- validation ------------------------------------------------------------------------------
def validate(ds: xr.Dataset, variables: Sequence[str], levels: Sequence[int] | None = None,
             times: Sequence | np.ndarray | None = None, grid: tuple[int, int] | None = None,
             allow_nan: Sequence[str] = ()) -> None:
    """Raise `DataError` naming what is wrong: a missing variable/level/time, a grid of the wrong
    shape (expected vs got), or a NaN in a field (variable, time and level of the first one).

    The NaN check reads the data (over `times` only when given): call it on what you will use.
    Variables in `allow_nan` are not NaN-checked (e.g. sst over land, filled later).
    """
    names = [canonical_name(v) for v in variables]
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise DataError(f"missing variable(s) {missing}; the store has {sorted(ds.data_vars)}")
    if levels is not None and any(VARIABLES[n].kind == "atmospheric" for n in names):
        select_levels(ds, levels, "store")
    if grid is not None:
        got = (ds.sizes.get("latitude", 0), ds.sizes.get("longitude", 0))
        if tuple(got) != tuple(grid):
            raise DataError(f"wrong grid: expected {grid[0]}x{grid[1]} (latitude x longitude), "
                            f"got {got[0]}x{got[1]}")
    if "latitude" in ds.dims and ds.sizes["latitude"] > 1 and not np.all(np.diff(ds["latitude"].values) < 0):
        raise DataError("latitude must be descending (90 -> -90); open the store with open_store")
    sub = ds[names]
    if times is not None:
        times = pd.DatetimeIndex(np.atleast_1d(np.asarray(times, dtype="datetime64[ns]")))
        have = pd.DatetimeIndex(ds["time"].values)
        absent = times.difference(have)
        if len(absent):
            raise DataError(f"missing time(s) {[str(t) for t in absent[:5]]}"
                            f"{' ...' if len(absent) > 5 else ''} ({len(absent)} in all)")
        sub = sub.sel(time=times)
    if levels is not None and "level" in sub.dims:
        sub = sub.sel(level=[int(lv) for lv in levels])
    allowed = {canonical_name(v) for v in allow_nan}
    for name in names:
        if name in allowed:
            continue
        da = sub[name]
        spatial = [d for d in ("latitude", "longitude") if d in da.dims]
        bad = da.isnull().any(dim=spatial).compute() if spatial else da.isnull().compute()
        if bool(bad.any()):
            _raise_nan(name, bad)


def _raise_nan(name: str, bad: xr.DataArray) -> None:
    idx = np.argwhere(np.asarray(bad.values).reshape(bad.shape))
    first = dict(zip(bad.dims, idx[0])) if idx.size else {}
    parts = [f"variable {name!r}"]
    if "time" in first:
        parts.append(f"time {np.datetime_as_string(bad['time'].values[first['time']], unit='h')}")
    if "level" in first:
        parts.append(f"level {int(bad['level'].values[first['level']])} hPa")
    raise DataError(f"NaN in field: {', '.join(parts)} ({len(idx)} field(s) with NaNs in all)")


# ---- model grid ------------------------------------------------------------------------------
def _row_index(which: str) -> int:
    if which == "first":
        return 0
    if which == "last":
        return -1
    raise DataError(f"drop_lat_row must be 'first', 'last' or 'none', got {which!r}")


def drop_row(field, which: str = "last", axis: int = -2):
    """Drop the first/last latitude row (axis -2 by default): (..., H+1, W) -> (..., H, W).

    Works on numpy arrays and torch tensors; ``which="none"`` returns the field unchanged.
    """
    if which == "none":
        return field
    n = field.shape[axis]
    keep = slice(1, n) if _row_index(which) == 0 else slice(0, n - 1)
    index = [slice(None)] * field.ndim
    index[axis] = keep
    return field[tuple(index)]


def pad_row(field, which: str = "last", mode: str = "copy", axis: int = -2):
    """Inverse shape of `drop_row`: (..., H, W) -> (..., H+1, W).

    mode="copy" fills the restored row with its neighbour (the adjacent model-grid row: a
    nearest-neighbour value for the pole, the convention of the original AERIS output);
    mode="nan" fills it with NaN (metrics then skip it). numpy arrays and torch tensors.
    """
    if which == "none":
        return field
    if mode not in ("copy", "nan"):
        raise DataError(f"pad_row mode must be 'copy' or 'nan', got {mode!r}")
    first = _row_index(which) == 0
    index = [slice(None)] * field.ndim
    index[axis] = slice(0, 1) if first else slice(field.shape[axis] - 1, None)
    row = field[tuple(index)]
    if mode == "nan":
        row = row * float("nan")
    parts = (row, field) if first else (field, row)
    try:
        import torch
        if isinstance(field, torch.Tensor):
            return torch.cat(parts, dim=axis)
    except ImportError:  # pragma: no cover
        pass
    return np.concatenate(parts, axis=axis)


def model_grid(n_lat: int, n_lon: int, drop_lat_row: str = "last",
               window: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) the network sees for a source grid of n_lat x n_lon; checks divisibility by the window."""
    H = n_lat - (0 if drop_lat_row == "none" else 1)
    if drop_lat_row != "none":
        _row_index(drop_lat_row)
    W = n_lon
    if window is not None:
        wh, ww = (int(window[0]), int(window[1]))
        if H % wh or W % ww:
            raise DataError(
                f"model grid {H}x{W} (source {n_lat}x{n_lon}, drop_lat_row={drop_lat_row!r}) is not "
                f"divisible by the window {wh}x{ww}")
    return H, W


def model_latitudes(latitude: np.ndarray, drop_lat_row: str = "last") -> np.ndarray:
    """Latitudes [deg] of the model-grid rows (source latitudes with the dropped row removed)."""
    return np.asarray(drop_row(np.asarray(latitude, dtype=np.float64)[:, None], drop_lat_row))[:, 0]


# ---- selection helpers -----------------------------------------------------------------------
def select_channels(ds: xr.Dataset, channels: Sequence[str]) -> xr.DataArray:
    """Stack lexicon channels (``'t2m'``, ``'z500'``, ...) in the given order.

    Returns a lazy DataArray (..., channel, latitude, longitude) named "fields" (leading dims
    are the store's, e.g. time, or time, prediction_timedelta, number). Static channels are
    broadcast over the leading dims of the others.
    """
    arrays = []
    for ch in channels:
        name, level = parse_channel(ch)
        if name not in ds.data_vars:
            raise DataError(f"channel {ch!r}: variable {name!r} missing; the store has {sorted(ds.data_vars)}")
        da = ds[name]
        if level is not None:
            if "level" not in da.dims or level not in [int(v) for v in da["level"].values]:
                have = [int(v) for v in da["level"].values] if "level" in da.dims else []
                raise DataError(f"channel {ch!r}: level {level} hPa missing; {name} has levels {have}")
            da = da.sel(level=level, drop=True)
        arrays.append(da.drop_vars([c for c in da.coords if c not in da.dims]).rename(None))
    lead = [d for d in ("time", "prediction_timedelta", "number") if any(d in a.dims for a in arrays)]
    if lead:
        template = next(a for a in arrays if all(d in a.dims for d in lead))
        arrays = [a if all(d in a.dims for d in lead) else a.broadcast_like(template) for a in arrays]
    out = xr.concat(arrays, dim=pd.Index(list(channels), name="channel"), coords="minimal",
                    compat="override", join="exact")
    return out.transpose(*CANONICAL_DIM_ORDER[:3], ..., "channel", "latitude", "longitude",
                         missing_dims="ignore").rename("fields")


def period_bounds(period: Sequence[str]) -> tuple[np.datetime64, np.datetime64]:
    """(start, end) of ``[start, end]`` in ns; a date-only end (YYYY-MM-DD) includes that whole day."""
    if len(period) != 2:
        raise DataError(f"a period is [start, end], got {period!r}")
    for v in period:
        if len(str(v).strip()) < 10:
            raise DataError(f"period {list(period)}: give full dates or times (YYYY-MM-DD[THH:MM]), got {v!r}")
    start = np.datetime64(pd.Timestamp(period[0]), "ns")
    end_ts = pd.Timestamp(period[1])
    if len(str(period[1]).strip()) == 10:  # a date: the whole day counts
        end_ts = end_ts + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    end = np.datetime64(end_ts, "ns")
    if end < start:
        raise DataError(f"period {list(period)} ends before it starts")
    return start, end


def select_period(times: np.ndarray, period: Sequence[str] | None) -> np.ndarray:
    """Boolean mask of `times` inside ``[start, end]`` (see `period_bounds`)."""
    times = np.asarray(times, dtype="datetime64[ns]")
    if period is None:
        return np.ones(times.shape, dtype=bool)
    start, end = period_bounds(period)
    return (times >= start) & (times <= end)


def fill_nan_with_min(da: xr.DataArray) -> xr.DataArray:
    """NaNs of each 2-D field replaced by that field's minimum (e.g. sst over land; docs/data.md, "Channels and network inputs")."""
    spatial = [d for d in ("latitude", "longitude") if d in da.dims]
    return da.fillna(da.min(dim=spatial, skipna=True))

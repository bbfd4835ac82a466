"""Decode the time axis of odd real extracts to ``datetime64[ns]`` (docs/data.md, "Checking a store").

Stores met in the wild keep their times in several ways; `decode_time` turns every one it can
read into ``datetime64[ns]`` and names the coordinate when it cannot:

* ``datetime64`` of any unit (cast to ns);
* numbers with CF units, ``"<unit> since <date>"``, on the coordinate or, for extracts that put
  them there, on the group (``time_units`` / ``time:units`` / a ``units`` with ``since``), with
  an optional ``calendar`` (the same places); ``noleap`` / ``365_day``, ``all_leap`` /
  ``366_day`` and ``julian`` dates keep their labels (2020-08-31 stays 2020-08-31), and a
  ``360_day`` date that no real calendar has (February 30) is an error;
* numbers in CDO's absolute format, ``"day as %Y%m%d.%f"`` (the fraction is of the day);
* ``cftime`` objects (xarray's decoding of a non-standard calendar), ISO strings.

A time dimension without coordinate values, numbers without units, units that cannot be
parsed and missing values (NaT) are errors of the type the caller passes (`aeris.data.store`
passes its ``DataError``: this module sits below it and imports nothing from it). A store
without any time coordinate is returned unchanged (static fields); `require_time` is the check
for callers that need times.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data.lexicon import COORD_ALIASES

__all__ = ["decode_time", "require_time", "time_names", "TIME_UNIT_ATTRS", "TIME_CALENDAR_ATTRS"]

# where an extract keeps the units / calendar of its time axis when not on the coordinate
TIME_UNIT_ATTRS = ("time_units", "time:units", "units")
TIME_CALENDAR_ATTRS = ("time_calendar", "time:calendar", "calendar")
_ABSOLUTE = re.compile(r"^\s*(day|days|hour|hours|minute|minutes|second|seconds)\s+as\s+(%\S+)\s*$", re.I)
_SINCE = re.compile(r"^\s*\w+\s+since\s+\S.*$", re.I)
_ABSOLUTE_SECONDS = {"day": 86400, "hour": 3600, "minute": 60, "second": 1}


def time_names(ds: xr.Dataset) -> list[str]:
    """The names of `ds` that hold the time axis: ``time`` and its aliases (``valid_time``)."""
    present = set(ds.variables) | set(ds.dims)
    return sorted(n for n in present if COORD_ALIASES.get(str(n).lower()) == "time")


def decode_time(ds: xr.Dataset, *, error: type[Exception] = ValueError) -> xr.Dataset:
    """`ds` with its time coordinate(s) as ``datetime64[ns]`` (module docstring); `error` is raised,
    naming the coordinate, for what cannot be read. Idempotent, lazy data untouched."""
    for name in time_names(ds):
        if name not in ds.variables:
            raise error(f"dimension {name!r} has no coordinate values: the store lacks the {name!r} variable "
                        f"(times as datetime64, or numbers with units such as 'hours since 1900-01-01')")
        var = ds[name]
        values = np.asarray(var.values)
        decoded = _decode_values(name, values, var.attrs, var.encoding, ds.attrs, error)
        if decoded is values:
            continue
        nat = np.isnat(decoded)
        if nat.any():
            pos = np.flatnonzero(nat.ravel())
            raise error(f"coordinate {name!r} has {pos.size} missing value(s) (NaT) at position(s) "
                        f"{pos[:5].tolist()}{' ...' if pos.size > 5 else ''}")
        attrs = {k: v for k, v in var.attrs.items() if k not in ("units", "calendar")}
        units = _attr(var.attrs, ds.attrs, TIME_UNIT_ATTRS, name, since_only=True)
        if units and not np.issubdtype(values.dtype, np.datetime64):
            attrs["decoded_from"] = str(units)
        ds = ds.assign_coords({name: (var.dims, decoded.reshape(values.shape), attrs)})
    return ds


def require_time(ds: xr.Dataset, where: str, *, error: type[Exception] = ValueError) -> np.ndarray:
    """The decoded ``time`` values (datetime64[ns]) of `ds`; `error` naming `where` when it has none."""
    ds = decode_time(ds, error=error)
    if "time" not in ds.coords:
        dims = sorted(str(d) for d in ds.dims)
        raise error(f"{where}: no 'time' coordinate (dims {dims}): a reanalysis store needs a time axis "
                    f"(datetime64, or numbers with units such as 'hours since 1900-01-01')")
    return np.asarray(ds["time"].values, dtype="datetime64[ns]")


def _attr(own: dict, group: dict, keys: tuple[str, ...], name: str, since_only: bool = False):
    """An attribute of the coordinate (``units``/``calendar``), else of the group under one of `keys`."""
    key = keys[-1]
    if own.get(key) not in (None, ""):
        return own[key]
    for k in (*keys[:-1], f"{name}_{key}", f"{name}:{key}"):
        if group.get(k) not in (None, ""):
            return group[k]
    value = group.get(key)
    if value not in (None, "") and (not since_only or _SINCE.match(str(value)) or _ABSOLUTE.match(str(value))):
        return value
    return None


def _decode_values(name: str, values: np.ndarray, attrs: dict, encoding: dict, group: dict,
                   error: type[Exception]) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        if values.dtype == np.dtype("datetime64[ns]"):
            return values
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                return values.astype("datetime64[ns]")
        except (OverflowError, RuntimeWarning, ValueError) as e:
            raise error(f"coordinate {name!r}: {values.dtype} times outside the datetime64[ns] range "
                        f"(1678..2261): {e}") from None
    if np.issubdtype(values.dtype, np.timedelta64):
        raise error(f"coordinate {name!r} holds time differences ({values.dtype}), not dates: a forecast "
                    f"lead belongs in 'prediction_timedelta'")
    if values.dtype == object or values.dtype.kind in "US":
        return _from_objects(name, values, error)
    if values.dtype.kind not in "iuf":
        raise error(f"coordinate {name!r} has values of type {values.dtype}: expected datetime64 or numbers "
                    f"with units such as 'hours since 1900-01-01'")
    units = _attr(attrs, group, TIME_UNIT_ATTRS, name, since_only=True)
    calendar = _attr(attrs, group, TIME_CALENDAR_ATTRS, name) or encoding.get("calendar") or "standard"
    if units is None:
        raise error(f"coordinate {name!r} holds {values.dtype} numbers without units: give it a CF 'units' "
                    f"attribute (e.g. 'hours since 1900-01-01', optionally a 'calendar'), or store "
                    f"datetime64 values")
    units = str(units)
    m = _ABSOLUTE.match(units)
    if m:
        return _absolute(name, values, m.group(1).lower().rstrip("s"), m.group(2), error)
    if not _SINCE.match(units):
        raise error(f"coordinate {name!r}: cannot read units {units!r}: expected '<unit> since <date>' "
                    f"(e.g. 'hours since 1900-01-01') or 'day as %Y%m%d.%f'")
    probe = xr.Dataset(coords={"t": ("t", values.ravel(), {"units": units, "calendar": str(calendar)})})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.asarray(xr.decode_cf(probe)["t"].values)
    except Exception as e:  # xarray/cftime raise several types for bad units or calendars
        raise error(f"coordinate {name!r}: cannot decode units {units!r} with calendar {str(calendar)!r}: "
                    f"{_first_sentence(e)}") from None
    if not np.issubdtype(out.dtype, np.datetime64):
        out = _from_objects(name, out, error, calendar=str(calendar))
    return out.astype("datetime64[ns]").reshape(values.shape)


def _first_sentence(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0].rstrip(".")


def _from_objects(name: str, values: np.ndarray, error: type[Exception], calendar: str | None = None) -> np.ndarray:
    """cftime objects (by their labels), datetimes or ISO strings -> datetime64[ns]."""
    flat = values.ravel()
    out = np.empty(flat.shape, dtype="datetime64[ns]")
    for i, v in enumerate(flat):
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        try:
            if hasattr(v, "calendar") and hasattr(v, "year") and not isinstance(v, pd.Timestamp):
                # a cftime date: keep its label (noleap 2020-08-31 -> 2020-08-31); no real date for
                # a 360-day calendar's February 30
                ts = pd.Timestamp(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
            elif isinstance(v, str):
                ts = pd.Timestamp(v.strip().removesuffix("Z"))
            else:
                ts = pd.Timestamp(v)
        except (ValueError, TypeError, OverflowError) as e:
            cal = getattr(v, "calendar", None) or calendar
            label = v.isoformat() if hasattr(v, "calendar") and hasattr(v, "isoformat") else repr(v)
            raise error(f"coordinate {name!r}: value {label} at position {i} is not a date that datetime64 can "
                        f"hold{f' (calendar {cal!r})' if cal else ''}: {e}") from None
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        out[i] = np.datetime64(ts, "ns") if not pd.isna(ts) else np.datetime64("NaT", "ns")
    return out.reshape(values.shape)


def _absolute(name: str, values: np.ndarray, unit: str, fmt: str, error: type[Exception]) -> np.ndarray:
    """CDO's absolute time axis: ``20200801.25`` with ``day as %Y%m%d.%f`` is 2020-08-01T06."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise error(f"coordinate {name!r} has missing values in its absolute ('{unit} as {fmt}') time axis")
    base_fmt = fmt.removesuffix(".%f")
    whole = np.floor(flat)
    frac = flat - whole if fmt.endswith(".%f") else np.zeros_like(flat)
    try:
        dates = pd.to_datetime([str(int(w)) for w in whole], format=base_fmt)
    except (ValueError, TypeError) as e:
        raise error(f"coordinate {name!r}: cannot read {flat[:1].tolist()} as '{unit} as {fmt}': {e}") from None
    # to the second: a float fraction of 1/24 day is not exact, a store's times are
    seconds = np.rint(frac * _ABSOLUTE_SECONDS[unit]).astype(np.int64).astype("timedelta64[s]")
    out = dates.values.astype("datetime64[ns]") + seconds.astype("timedelta64[ns]")
    return out.reshape(values.shape)

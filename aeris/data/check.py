"""Scan a store for bad data, field by field and time by time (docs/data.md, "Checking a store").

`check_store(path_or_dataset)` (``aeris data check STORE``) opens a store through `open_store`
(or canonicalises an opened dataset), decodes its time axis (`aeris.data.timeaxis`), and then
reads it lazily, one block of times after the other, reporting with the variable, level and time:

* ``nan``: a 2-D field with NaNs (not for the variables whose NaNs are expected, e.g. sst over
  land: ``allow_nan``, by default ``data.fill_nan_with_min``); ``all_nan``: a field that is NaN
  everywhere (always a problem); ``inf``: infinite values;
* ``constant``: a field whose finite values are all equal (max == min);
* ``out_of_range``: values outside the variable's plausible bounds in its lexicon units
  (`aeris.data.lexicon`'s ``valid_min`` / ``valid_max``, e.g. 2 m temperature 150..350 K,
  mean sea level pressure 85,000..110,000 Pa);
* ``flipped_latitude``: fields stored upside down. For consecutive times the mean squared
  difference to the neighbour, ``d``, and to the latitude-reversed neighbour, ``d_rev``, are
  computed; ``d_rev < FLIP_RATIO * d`` is a flip between the two times. Counting the flips
  along time gives each time an orientation, and the times in the minority orientation are
  reported (a flipped day is one run; its interior times are flipped against each other's
  neighbours too). Only on a latitude grid symmetric about the equator;
* the time axis: ``duplicate_time``, ``unsorted_time`` (a time before its predecessor),
  ``missing_time`` (a hole in the grid of the most common step) and ``irregular_step`` (a step
  that is no multiple of it); the distinct steps are in ``CheckReport.steps``;
* ``unreadable``: a chunk that cannot be read or decoded (a truncated or corrupt file), named by
  variable and time.

What keeps a store from being checked at all (it cannot be opened, a coordinate is missing or
cannot be decoded, a variable has dims the project cannot use, a time-less store) is a
`DataError` naming the problem. `CheckReport.exit_code` is 0 for a clean store, 1 for problems
found, 2 for unreadable chunks.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.config import DataConfig
from aeris.data.lexicon import VARIABLES, LexiconError, canonical_name, parse_channel
from aeris.data.store import DataError, canonicalize, open_store, select_variables
from aeris.data.timeaxis import decode_time

__all__ = ["check_store", "CheckReport", "Finding", "KINDS", "FLIP_RATIO", "BLOCK_BYTES", "MAX_BLOCK_TIMES",
           "variable_bounds", "channel_bounds", "exclude_mask"]

FLIP_RATIO = 0.5             # d_rev < FLIP_RATIO * d: the field flipped between two consecutive times
BLOCK_BYTES = 64 * 2 ** 20   # a block of times holds about this many bytes of fields ...
MAX_BLOCK_TIMES = 64         # ... and at most this many times
_ALLOWED_DIMS = ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")

# kind -> what it means; also the order of the table
KINDS = {
    "unreadable": "a chunk that cannot be read or decoded (truncated or corrupt file)",
    "duplicate_time": "a time that appears more than once",
    "unsorted_time": "a time earlier than the one before it",
    "missing_time": "a hole in the regular time grid",
    "irregular_step": "a time step that is no multiple of the store's usual step",
    "all_nan": "a field that is NaN everywhere",
    "nan": "a field with NaN values",
    "inf": "a field with infinite values",
    "out_of_range": "values outside the variable's plausible bounds",
    "constant": "a field whose values are all equal",
    "flipped_latitude": "a field stored upside down (latitude reversed)",
}
_FIELD_KINDS = ("unreadable", "all_nan", "nan", "inf", "out_of_range", "constant", "flipped_latitude")


@dataclass(frozen=True)
class Finding:
    """One problem: its kind (`KINDS`), where (variable, level [hPa], time, other coordinates such
    as a forecast lead or member) and what (detail)."""

    kind: str
    variable: str | None
    level: int | None
    time: str | None
    detail: str
    where: dict = field(default_factory=dict)


@dataclass
class CheckReport:
    """The findings of `check_store` on one store."""

    source: str
    variables: list[str]
    n_times: int
    time_range: list[str] | None
    steps: dict[str, int]
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        """0 clean, 1 problems found, 2 unreadable chunks."""
        if any(f.kind == "unreadable" for f in self.findings):
            return 2
        return 1 if self.findings else 0

    def counts(self) -> dict[str, int]:
        """Findings per kind (kinds with none left out), in table order."""
        out = {k: sum(f.kind == k for f in self.findings) for k in KINDS}
        return {k: n for k, n in out.items() if n}

    def bad_times(self) -> list[str]:
        """The times with a bad field (not the time-axis findings): candidates for
        ``data.exclude_times``."""
        return sorted({f.time for f in self.findings if f.kind in _FIELD_KINDS and f.time})

    def to_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "exit_code": self.exit_code,
                "variables": list(self.variables), "n_times": self.n_times, "time_range": self.time_range,
                "steps": dict(self.steps), "counts": self.counts(), "bad_times": self.bad_times(),
                "notes": list(self.notes), "findings": [asdict(f) for f in self.findings]}

    def write_json(self, path: str | os.PathLike) -> Path:
        """The report as JSON (atomic write)."""
        text = json.dumps(self.to_dict(), indent=1)
        return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))

    def table(self, max_rows: int = 40) -> str:
        """A readable summary: one row per kind, variable, level (and lead/member), with its times."""
        steps = ", ".join(f"{s} x {n}" for s, n in self.steps.items()) or "-"
        span = f" ({self.time_range[0]} .. {self.time_range[1]})" if self.time_range else ""
        lines = [f"store: {self.source}",
                 f"checked: {len(self.variables)} variable(s), {self.n_times} time(s){span}; steps: {steps}"]
        lines += [f"note: {n}" for n in self.notes]
        if self.ok:
            lines.append("no problems found")
            return "\n".join(lines)
        groups: dict[tuple, list[Finding]] = {}
        for f in self.findings:
            groups.setdefault((f.kind, f.variable or "", -1 if f.level is None else f.level,
                               json.dumps(f.where, sort_keys=True)), []).append(f)
        order = list(KINDS)
        rows = sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2], kv[0][3]))
        header = f"{'kind':<17} {'variable':<32} {'level':>5}  {'times':<44} detail"
        lines += ["", header, "-" * len(header)]
        for (kind, var, lev, where), fs in rows[:max_rows]:
            times = sorted(f.time for f in fs if f.time)
            when = ("-" if not times else times[0] if len(times) == 1
                    else f"{times[0]} .. {times[-1]} ({len(times)})")
            extra = "".join(f" {k}={v}" for k, v in json.loads(where).items())
            lines.append(f"{kind:<17} {var or '-':<32} {'-' if lev < 0 else lev:>5}  {when:<44} "
                         f"{fs[0].detail}{extra}")
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more row(s): write them all with --json")
        counts = ", ".join(f"{k} {n}" for k, n in self.counts().items())
        lines += ["", f"{len(self.findings)} problem(s): {counts}"]
        bad = self.bad_times()
        if bad and len(bad) <= 20:
            lines.append(f"to leave the bad times out of training: data.exclude_times=[{', '.join(bad)}]")
        elif bad:
            lines.append(f"{len(bad)} times with bad fields (listed as bad_times with --json; "
                         f"leave them out of training with data.exclude_times)")
        return "\n".join(lines)


# ---- bounds and exclusions (also used by the loader) -----------------------------------------
def variable_bounds(name: str) -> tuple[float, float]:
    """(valid_min, valid_max) of a variable in its lexicon units; (-inf, inf) where unknown."""
    var = VARIABLES.get(name)
    if var is None:
        try:
            var = VARIABLES[canonical_name(name)]
        except LexiconError:
            return -np.inf, np.inf
    lo = -np.inf if var.valid_min is None else float(var.valid_min)
    hi = np.inf if var.valid_max is None else float(var.valid_max)
    return lo, hi


def channel_bounds(channel: str) -> tuple[float, float]:
    """(valid_min, valid_max) of a channel's variable (``'t2m'`` -> (150, 350)); (-inf, inf) where unknown."""
    try:
        return variable_bounds(parse_channel(channel)[0])
    except LexiconError:
        return -np.inf, np.inf


def exclude_mask(times: np.ndarray, entries: Sequence[str], what: str = "data.exclude_times") -> np.ndarray:
    """Boolean mask of `times` named by `entries`: ISO times (``2020-08-02T06:00``, exactly that
    time) or dates (``2020-08-02``: the whole day). A `DataError` names an entry that is no time."""
    times = np.asarray(times, dtype="datetime64[ns]")
    mask = np.zeros(times.shape, dtype=bool)
    for entry in entries:
        text = str(entry).strip()
        try:
            ts = pd.Timestamp(text)
        except (ValueError, TypeError):
            ts = None
        if ts is None or pd.isna(ts) or len(text) < 10:
            raise DataError(f"{what}: cannot read {entry!r} as an ISO time (e.g. 2020-08-02T06:00, or a "
                            f"date 2020-08-02 for the whole day)")
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        start = np.datetime64(ts, "ns")
        if len(text) == 10:  # a date: the whole day
            mask |= (times >= start) & (times < start + np.timedelta64(1, "D"))
        else:
            mask |= times == start
    return mask


# ---- the scan -------------------------------------------------------------------------------
def _iso(t) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "ns"), unit="m"))


def _fmt_step(step: np.timedelta64) -> str:
    td = pd.Timedelta(step)
    s = int(td.total_seconds())
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s and s % 60 == 0:
        return f"{s // 60}min"
    return f"{td.total_seconds():g}s"


@dataclass
class _Fields:
    """One variable: its lazy array (time?, K, lat, lon) and the labels of its K fields."""

    name: str
    da: xr.DataArray
    labels: list[dict]
    timed: bool
    bounds: tuple[float, float]
    allow_nan: bool
    units: str


def _fields(name: str, da: xr.DataArray, allow: set[str]) -> _Fields:
    others = [d for d in da.dims if d not in ("time", "latitude", "longitude")]
    timed = "time" in da.dims
    order = (["time"] if timed else []) + others + ["latitude", "longitude"]
    da = da.transpose(*order)
    values = [da[d].values if d in da.coords else np.arange(da.sizes[d]) for d in others]
    labels = []
    for combo in itertools.product(*values):
        lab = {}
        for d, v in zip(others, combo):
            if d == "level":
                lab[d] = int(v)
            elif np.issubdtype(np.asarray(v).dtype, np.timedelta64):
                lab[d] = _fmt_step(np.timedelta64(v, "ns"))
            else:
                lab[d] = v.item() if hasattr(v, "item") else v
        labels.append(lab)
    var = VARIABLES.get(name)
    return _Fields(name, da, labels or [{}], timed, variable_bounds(name), name in allow,
                   var.units if var else str(da.attrs.get("units", "")))


def _structure(ds: xr.Dataset, names: list[str], explicit: bool, source: str) -> tuple[list[str], list[str]]:
    """(variables to scan, notes); a `DataError` listing what keeps the store from being checked."""
    problems, notes, keep = [], [], []
    if not explicit and not any("time" in ds[n].dims for n in names):
        dims = {n: list(ds[n].dims) for n in names[:4]}
        raise DataError(f"{source}: no variable has a 'time' dim (dims {dims}{' ...' if len(names) > 4 else ''}): "
                        f"a reanalysis store needs a time axis (to check static fields only, name them with "
                        f"variables=)")
    for coord in ("latitude", "longitude"):
        if coord not in ds.dims:
            dims = {v: list(ds[v].dims) for v in names[:4]}
            problems.append(f"no {coord!r} dimension (variables have dims {dims})")
        elif coord not in ds.coords:
            problems.append(f"dimension {coord!r} has no coordinate values")
    if "latitude" in ds.coords:
        lat = np.asarray(ds["latitude"].values, dtype=np.float64)
        if lat.size and (not np.all(np.isfinite(lat)) or np.abs(lat).max() > 90.0):
            problems.append(f"latitude values outside [-90, 90] ({np.nanmin(lat):g} .. {np.nanmax(lat):g})")
    for name in names:
        da = ds[name]
        if not (np.issubdtype(da.dtype, np.number) or da.dtype == bool):
            if explicit:
                problems.append(f"variable {name!r} holds {da.dtype} values, not numbers")
            else:
                notes.append(f"variable {name!r} ({da.dtype}) skipped: not numeric")
            continue
        if "latitude" not in da.dims or "longitude" not in da.dims:
            if explicit or name in VARIABLES:
                problems.append(f"variable {name!r} has dims {tuple(da.dims)}: no latitude x longitude field")
            else:
                notes.append(f"variable {name!r} {tuple(da.dims)} skipped: not a latitude x longitude field")
            continue
        odd = [d for d in da.dims if d not in _ALLOWED_DIMS]
        if odd:
            problems.append(f"variable {name!r} has dims {tuple(da.dims)}: unknown dim(s) {odd} "
                            f"(expected a subset of {_ALLOWED_DIMS})")
            continue
        var = VARIABLES.get(name)
        if var is not None:
            if var.kind == "atmospheric" and "level" not in da.dims:
                problems.append(f"variable {name!r} is a pressure-level variable but has no 'level' dim "
                                f"(dims {tuple(da.dims)})")
                continue
            if var.kind != "atmospheric" and "level" in da.dims:
                problems.append(f"variable {name!r} is a {var.kind} variable but has a 'level' dim")
                continue
            if var.kind == "static" and "time" in da.dims:
                problems.append(f"variable {name!r} is a static field but has a 'time' dim (dims "
                                f"{tuple(da.dims)}); keep one time of it")
                continue
            if var.kind != "static" and "time" not in da.dims:
                problems.append(f"variable {name!r} varies in time but has no 'time' dim (dims {tuple(da.dims)})")
                continue
        keep.append(name)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems in all)" if len(problems) > 5 else "")
        raise DataError(f"{source}: cannot check the store: {shown}")
    if not keep:
        raise DataError(f"{source}: no latitude x longitude field to check (variables {names})")
    return keep, notes


def _time_findings(times: np.ndarray) -> tuple[list[Finding], dict[str, int]]:
    out: list[Finding] = []
    if times.size == 0:
        return out, {}
    uniq, counts = np.unique(times, return_counts=True)
    for t, n in zip(uniq[counts > 1], counts[counts > 1]):
        pos = np.flatnonzero(times == t)
        out.append(Finding("duplicate_time", None, None, _iso(t), f"appears {n} times (positions {pos[:5].tolist()})"))
    back = np.flatnonzero(np.diff(times) < np.timedelta64(0, "ns")) + 1
    for p in back:
        out.append(Finding("unsorted_time", None, None, _iso(times[p]),
                           f"position {p} comes after {_iso(times[p - 1])}"))
    if uniq.size < 2:
        return out, {}
    steps = np.diff(uniq)
    values, n = np.unique(steps, return_counts=True)
    distinct = {_fmt_step(v): int(c) for v, c in sorted(zip(values, n), key=lambda vc: -vc[1])}
    usual = values[np.argmax(n)]  # the most common step
    for j in np.flatnonzero(steps != usual):
        a, b, s = uniq[j], uniq[j + 1], steps[j]
        if s % usual == np.timedelta64(0, "ns"):
            for t in np.arange(a + usual, b, usual):
                out.append(Finding("missing_time", None, None, _iso(t),
                                   f"missing from the {_fmt_step(usual)} grid (between {_iso(a)} and {_iso(b)})"))
        else:
            out.append(Finding("irregular_step", None, None, _iso(b),
                               f"step {_fmt_step(s)} after {_iso(a)} (usual step {_fmt_step(usual)}; steps: "
                               f"{', '.join(f'{k} x {c}' for k, c in distinct.items())})"))
    return out, distinct


def _block_size(fields: list[_Fields], n_times: int, block_times: int) -> int:
    if block_times > 0:
        return int(block_times)
    per_time = sum(len(f.labels) * f.da.sizes["latitude"] * f.da.sizes["longitude"] * f.da.dtype.itemsize
                   for f in fields if f.timed) or 1
    n = int(min(MAX_BLOCK_TIMES, max(1, BLOCK_BYTES // per_time)))
    chunk = max([max(f.da.chunks[0]) for f in fields if f.timed and f.da.chunks] or [1])
    if chunk * per_time <= 8 * BLOCK_BYTES:  # read whole chunks, unless a chunk is huge (netCDF)
        n = max(chunk, n // chunk * chunk)
    return max(1, min(n, n_times))


def _msd(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Mean squared difference over the pixels finite in both, per field; NaN where none is."""
    diff = b.astype(np.float64) - a
    ok = np.isfinite(diff)
    sq = np.where(ok, diff * diff, 0.0).sum(axis=(-2, -1))
    n = ok.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sq / np.maximum(n, 1), np.nan)


def _field_findings(f: _Fields, x: np.ndarray, times: list[str | None]) -> list[Finding]:
    """Findings of the fields x (T, K, H, W) at `times` (None for a static variable)."""
    out: list[Finding] = []
    npix = x.shape[-1] * x.shape[-2]
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    finite = np.isfinite(x)
    n_nan = np.isnan(x).sum(axis=(-2, -1))
    n_fin = finite.sum(axis=(-2, -1))
    n_inf = npix - n_fin - n_nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        xm = np.where(finite, x, np.nan)
        mn, mx = np.nanmin(xm, axis=(-2, -1)), np.nanmax(xm, axis=(-2, -1))
    lo, hi = f.bounds
    n_out = (finite & ((x < lo) | (x > hi))).sum(axis=(-2, -1))
    units = f" {f.units}" if f.units else ""
    bad = (n_fin == 0) | ((n_nan > 0) & (not f.allow_nan)) | (n_inf > 0) | (n_out > 0) | ((n_fin > 0) & (mn == mx))
    for t, k in zip(*np.nonzero(bad)):
        lab = dict(f.labels[k])
        level = lab.pop("level", None)

        def add(kind: str, detail: str) -> None:
            out.append(Finding(kind, f.name, level, times[t], detail, lab))

        if n_nan[t, k] == npix:
            add("all_nan", f"all {npix} values NaN")
        elif n_nan[t, k] and not f.allow_nan:
            add("nan", f"{n_nan[t, k]} of {npix} values NaN")
        if n_inf[t, k]:
            add("inf", f"{n_inf[t, k]} of {npix} values infinite")
        if n_out[t, k]:
            add("out_of_range", f"{n_out[t, k]} value(s) outside [{lo:g}, {hi:g}]{units} "
                                f"(min {mn[t, k]:.6g}, max {mx[t, k]:.6g})")
        if n_fin[t, k] and mn[t, k] == mx[t, k]:
            add("constant", f"every finite value is {mn[t, k]:.6g}{units}")
    return out


def _unreadable(e: Exception) -> str:
    text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
    return f"cannot read or decode its chunk (truncated or corrupt file?): {type(e).__name__}: {text}"


def _read(f: _Fields, a: int, b: int, times: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, list[Finding]]:
    """Times a..b-1 of `f` as (T, K, H, W), which of them could be read, and a finding for each
    time that cannot (a truncated chunk raises whatever its codec raises)."""
    n = b - a if f.timed else 1
    shape = (n, len(f.labels), f.da.sizes["latitude"], f.da.sizes["longitude"])
    try:
        x = np.asarray((f.da.isel(time=slice(a, b)) if f.timed else f.da).values)
        return x.reshape(shape), np.ones(n, dtype=bool), []
    except Exception as e:
        if not f.timed:
            return None, np.zeros(1, dtype=bool), [Finding("unreadable", f.name, None, None, _unreadable(e))]
        block_error = e
    x = np.full(shape, np.nan, dtype=np.float64 if f.da.dtype.itemsize > 4 else np.float32)
    ok = np.ones(n, dtype=bool)
    bad = []
    for j in range(n):  # which times: one read each (only after a failure)
        try:
            x[j] = np.asarray(f.da.isel(time=a + j).values).reshape(shape[1:])
        except Exception as e:
            ok[j] = False
            bad.append(Finding("unreadable", f.name, None, _iso(times[a + j]), _unreadable(e)))
    if not bad:  # the block failed, no single time does: name the block
        ok[:] = False
        bad.append(Finding("unreadable", f.name, None, _iso(times[a]),
                           f"times {_iso(times[a])} .. {_iso(times[b - 1])}: {_unreadable(block_error)}"))
    return (x if ok.any() else None), ok, bad


def _flip_findings(f: _Fields, d_same: np.ndarray, d_rev: np.ndarray, times: np.ndarray) -> list[Finding]:
    """Orientation of every time from the flips between consecutive times; the minority is reported."""
    out: list[Finding] = []
    n = d_same.shape[0]
    with np.errstate(invalid="ignore"):
        flip = (d_rev < FLIP_RATIO * d_same) & (d_same > 0)
    state = np.cumsum(flip, axis=0) % 2  # (T, K): orientation relative to the first time
    for k in range(state.shape[1]):
        s = state[:, k]
        n1 = int(s.sum())
        if n1 == 0:
            continue
        minority = s == (1 if n1 <= n - n1 else 0)
        lab = dict(f.labels[k])
        level = lab.pop("level", None)
        runs = np.split(np.flatnonzero(minority), np.flatnonzero(np.diff(np.flatnonzero(minority)) > 1) + 1)
        for run in runs:
            edge = [j for j in (run[0], run[-1] + 1) if 0 < j < n and flip[j, k]]
            ratio = max(d_rev[j, k] / d_same[j, k] for j in edge) if edge else np.nan
            for j in run:
                out.append(Finding(
                    "flipped_latitude", f.name, level, _iso(times[j]),
                    f"latitude reversed against the rest of the store (a run of {run.size} time(s); at its "
                    f"edges the reversed neighbour is {ratio:.2g}x as far as the neighbour)", lab))
    return out


def check_store(path_or_dataset: str | os.PathLike | xr.Dataset, *, variables: Sequence[str] | None = None,
                progress: bool = True, allow_nan: Sequence[str] | None = None,
                block_times: int = 0) -> CheckReport:
    """Scan a store (a path or URL for `open_store`, or an opened dataset) for bad data.

    variables: names or aliases to check (None = every latitude x longitude field); a missing
    one is a `DataError`. allow_nan: variables whose partial NaNs are expected (None =
    ``DataConfig().fill_nan_with_min``). block_times: times read per block (0 = about
    `BLOCK_BYTES`, whole store chunks). Returns the `CheckReport`; a store that cannot be checked
    at all is a `DataError` (module docstring).
    """
    if isinstance(path_or_dataset, xr.Dataset):
        ds = canonicalize(path_or_dataset)
        source = "<dataset>"
    else:
        source = str(path_or_dataset)
        ds = open_store(source)
    ds = decode_time(ds, error=DataError)
    explicit = variables is not None
    if explicit:
        ds = select_variables(ds, variables, source)
    names = [str(v) for v in ds.data_vars]
    if not names:
        raise DataError(f"{source}: the store has no data variables")
    names, notes = _structure(ds, names, explicit, source)
    allow = set()
    for v in DataConfig().fill_nan_with_min if allow_nan is None else allow_nan:
        try:
            allow.add(canonical_name(v))
        except LexiconError:
            allow.add(v)
    fields = [_fields(n, ds[n], allow) for n in names]
    timed = [f for f in fields if f.timed]
    if timed:
        if "time" not in ds.coords:  # pragma: no cover - decode_time refuses a time dim without values
            raise DataError(f"{source}: dimension 'time' has no coordinate values")
        if ds["time"].dims != ("time",):
            raise DataError(f"{source}: coordinate 'time' has dims {ds['time'].dims}, expected ('time',)")
        times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
    else:  # static fields named explicitly (`_structure` refuses a time-less store otherwise)
        times = np.array([], dtype="datetime64[ns]")
    findings, steps = _time_findings(times)
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    symmetric = lat.size > 1 and np.allclose(lat, -lat[::-1], atol=1e-6 * max(1.0, np.abs(lat).max()))
    if timed and not symmetric:
        notes.append("latitude grid not symmetric about the equator: latitude-flip check skipped")

    n_t = times.size
    size = _block_size(fields, n_t, block_times) if timed else 1
    blocks = [(a, min(a + size, n_t)) for a in range(0, n_t, size)]
    static = [f for f in fields if not f.timed]
    bar = tqdm(total=len(blocks) + bool(static), desc="check", unit="block", disable=not progress, leave=False)
    try:
        for f in static:
            x, _, bad = _read(f, 0, 1, times)
            findings += bad
            if x is not None:
                findings += _field_findings(f, x, [None])
        if static:
            bar.update(1)
        dist = {f.name: (np.full((n_t, len(f.labels)), np.nan), np.full((n_t, len(f.labels)), np.nan))
                for f in timed}
        last: dict[str, np.ndarray | None] = {f.name: None for f in timed}
        for a, b in blocks:
            labels = [_iso(t) for t in times[a:b]]
            for f in timed:
                x, ok, bad = _read(f, a, b, times)
                findings += bad
                if x is None:
                    last[f.name] = None
                    continue
                findings += _field_findings(f, x[ok], [t for t, good in zip(labels, ok) if good])
                if symmetric:
                    prev = last[f.name]
                    seq = x if prev is None else np.concatenate([prev[None], x])
                    start = a + 1 if prev is None else a  # position of the later time of the first pair
                    if seq.shape[0] > 1:
                        dist[f.name][0][start:b] = _msd(seq[1:], seq[:-1])
                        dist[f.name][1][start:b] = _msd(seq[1:], seq[:-1, ..., ::-1, :])
                last[f.name] = x[-1]
            bar.update(1)
    finally:
        bar.close()
    if symmetric:
        for f in timed:
            findings += _flip_findings(f, *dist[f.name], times)
    span = [_iso(times.min()), _iso(times.max())] if n_t else None
    return CheckReport(source, names, int(n_t), span, steps, findings, notes)

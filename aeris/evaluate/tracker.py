"""Tropical-cyclone tracker: a re-implementation of TempestExtremes DetectNodes + StitchNodes.

Semantics follow docs/evaluation.md, "Cyclone tracker" (the published ERA5 configuration is the default,
see `aeris.evaluate.config`); variables and commands are written in the TempestExtremes
command language of `aeris.evaluate.commands`.

Equivalence: distances, merge, closed contours, outputs and stitching reproduce TempestExtremes'
arithmetic and algorithms (docs/evaluation.md, "Distances as TempestExtremes computes them" and
"Cyclone tracker"): fields are read in single precision, node coordinates and outputs carry
the digits TE writes to its node file, and a storm that merges into another keeps the shared
node (StitchNodes' path generation).

Resolution: the defaults are meant for 0.25-1 degree grids (ERA5 / WB2 / AI forecasts).
On coarse grids (e.g. 2.8125 degrees, 65x128) the radii still apply in degrees: the MSL
contour (200 Pa within 5.5 degrees) spans ~2 cells and the warm-core pivot search (1 degree)
reduces to the node itself, so only storms whose depression and warm core are resolved by
the grid pass (detection rates measured per grid:
docs/evaluation.md, "Detection on the synthetic reanalysis"); 10 m winds on such grids are
much weaker than observed.

Outputs are tidy DataFrames, one row per node: ``track_id, init, member, time, lead_h, lat,
lon, <outputs>`` (msl [Pa], wind [m/s], zs [m] with the default outputs). Truth-store tracks
have ``init`` = NaT, ``member`` = -1 and ``lead_h`` = NaN. Longitudes are in [0, 360).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.lexicon import lookup
from aeris.evaluate.commands import (COMPARISONS, G0, ClosedContour, Expr, Leaf, OutputSpec, Threshold,
                                     TrackerError, parse_closed_contours, parse_expr, parse_outputs,
                                     parse_thresholds)
from aeris.evaluate.config import DetectConfig, StitchConfig, TrackConfig
from aeris.evaluate.contours import (LatLonGrid, chord_sq, closed_contour, deg_to_rad, grid_radians,
                                     local_minima, te_arc_deg, te_cos_angle, te_node_coordinate,
                                     te_output_value, te_unit_vectors, window_reduce)

__all__ = ["G0", "Leaf", "Expr", "parse_expr", "ClosedContour", "OutputSpec", "Threshold",
           "parse_closed_contours", "parse_outputs", "parse_thresholds", "required_leaves",
           "detect_nodes", "output_radius", "stitch_segments", "stitch_paths", "stitch_nodes",
           "track_truth", "track_forecast", "track_store", "is_forecast_store", "write_tracks",
           "read_tracks", "TRACK_COLUMNS", "TrackerError"]

TRACK_COLUMNS = ["track_id", "init", "member", "time", "lead_h", "lat", "lon"]


def required_leaves(cfg: DetectConfig) -> set[Leaf]:
    """Every stored field the detection needs."""
    exprs = [parse_expr(cfg.searchbymin or cfg.searchbymax)]
    exprs += [c.var for c in parse_closed_contours(cfg.closedcontourcmd)]
    exprs += [o.var for o in parse_outputs(cfg.outputcmd)]
    return set().union(*(e.leaves() for e in exprs))


# ---- DetectNodes -----------------------------------------------------------------------------
def _merge(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, mergedist: float) -> np.ndarray:
    """Keep-mask of DetectNodes' merge: drop a candidate if another within `mergedist` degrees
    is strictly deeper (smaller `values`); not transitive. `lat`, `lon`: the candidates' grid
    coordinates in degrees. As in TE, "within" is a chord test on the unit vectors of the grid
    radians: ``chord^2 <= (2 sin(0.5 mergedist / 180 pi))^2``
    (docs/evaluation.md, "Distances as TempestExtremes computes them"); the k-d tree only
    proposes pairs (padded radius), the exact sum decides."""
    values = np.asarray(values)
    keep = np.ones(values.size, dtype=bool)
    if mergedist <= 0 or values.size < 2:
        return keep
    xyz = te_unit_vectors(grid_radians(lat), grid_radians(lon))
    chord = 2.0 * math.sin(0.5 * mergedist / 180.0 * math.pi)
    pairs = cKDTree(xyz).query_pairs(chord * (1.0 + 1e-9) + 1e-15, output_type="ndarray")
    if pairs.size:
        a, b = pairs[:, 0], pairs[:, 1]
        near = chord_sq(xyz[a], xyz[b]) <= chord * chord
        a, b = a[near], b[near]
        keep[b[values[a] < values[b]]] = False
        keep[a[values[b] < values[a]]] = False
    return keep


def output_radius(dist: float, grid: LatLonGrid, adapt: bool = True) -> float:
    """Output search radius: `dist`, widened to 1.6 grid spacings when `adapt` and dist > 0
    (on a 2.8125-degree grid a 2-degree radius holds only the centre cell)."""
    if adapt and dist > 0:
        return max(dist, 1.6 * max(grid.dlat, grid.dlon))
    return dist


def detect_nodes(fields: Mapping[Leaf, np.ndarray], grid: LatLonGrid, cfg: DetectConfig) -> pd.DataFrame:
    """DetectNodes on one time step.

    `fields` maps each required Leaf (see `required_leaves`) to a (lat, lon) array on `grid`;
    expressions are evaluated in the fields' precision (the stores are read as float32, as
    TE reads them). Steps, in order: candidates = points with no strictly lower 4-neighbour
    (of the search variable, negated for searchbymax); latitude/longitude limits; merge
    within `mergedist`; closed-contour tests; outputs. Returns columns lat, lon (as TE writes
    them: 6 decimals, longitude in [0, 360)), i, j and the output names (as TE writes them:
    7 significant digits), candidates in grid order (row-major, TE's order).
    """
    by_max = bool(cfg.searchbymax)
    search = parse_expr(cfg.searchbymax if by_max else cfg.searchbymin).evaluate(fields)
    if search.shape != grid.shape:
        raise TrackerError(f"search field has shape {search.shape}, grid is {grid.shape}")
    key = -search if by_max else search
    ii, jj = np.nonzero(local_minima(key, wrap_lon=grid.wraps))
    lat, lon = grid.lat[ii], grid.lon[jj] % 360.0
    sel = np.ones(ii.size, dtype=bool)
    if cfg.minlat is not None:
        sel &= lat >= cfg.minlat
    if cfg.maxlat is not None:
        sel &= lat <= cfg.maxlat
    if cfg.minlon is not None and cfg.maxlon is not None and cfg.minlon > cfg.maxlon:
        sel &= (lon >= cfg.minlon % 360) | (lon <= cfg.maxlon % 360)   # window across 0 E
    else:
        if cfg.minlon is not None:
            sel &= lon >= cfg.minlon % 360
        if cfg.maxlon is not None:
            sel &= lon <= cfg.maxlon % 360
    ii, jj = ii[sel], jj[sel]
    keep = _merge(key[ii, jj], grid.lat[ii], grid.lon[jj], cfg.mergedist)
    ii, jj = ii[keep], jj[keep]

    contours = parse_closed_contours(cfg.closedcontourcmd)
    cfields = [c.var.evaluate(fields) for c in contours]
    passed = np.ones(ii.size, dtype=bool)
    for k in range(ii.size):
        for c, f in zip(contours, cfields):
            if not closed_contour(f, grid, int(ii[k]), int(jj[k]), c.delta, c.dist, c.minmaxdist):
                passed[k] = False
                break
    ii, jj = ii[passed], jj[passed]

    out = pd.DataFrame({"lat": te_node_coordinate(grid.lat_rad[ii]),
                        "lon": te_node_coordinate(grid.lon_rad[jj]) % 360.0, "i": ii, "j": jj})
    for name, spec in zip(cfg.output_names, parse_outputs(cfg.outputcmd)):
        f = spec.var.evaluate(fields)
        dist = output_radius(spec.dist, grid, cfg.adapt_to_grid)
        out[name] = np.array([te_output_value(window_reduce(f, grid, int(a), int(b), dist, spec.op))
                              for a, b in zip(ii, jj)], dtype=float)
    return out


# ---- StitchNodes -----------------------------------------------------------------------------
def _passes(track: pd.DataFrame, th: Threshold) -> bool:
    if th.column not in track:
        raise TrackerError(f"threshold column {th.column!r} is not a node column: {list(track.columns)}")
    ok = COMPARISONS[th.op](track[th.column].to_numpy(dtype=float), th.value)
    if th.count == "all":
        return bool(ok.all())
    if th.count == "first":
        return bool(ok[0])
    if th.count == "last":
        return bool(ok[-1])
    return int(ok.sum()) >= th.count


def stitch_segments(nodes: pd.DataFrame, cfg: StitchConfig) -> np.ndarray:
    """TE's ``GeneratePathSegmentsSetBasic``: the successor of every node (-1 = none).

    `nodes` must be sorted by time. For each node, the later node times within `maxgap_h`
    are tried in order (times without nodes do not exist here); at each, the node nearest by
    TE's k-d-tree chord is taken and linked if its great-circle distance (TE's
    ``GreatCircleDistance_Deg`` of the coordinates read back with ``DegToRad``) is within
    `range` degrees, else the next time is tried. Several nodes may link to the same one.
    Exact ties in the chord go to the first node of the time (TE: k-d tree order).
    """
    succ = np.full(len(nodes), -1)
    if nodes.empty:
        return succ
    times = nodes["time"].to_numpy(dtype="datetime64[ns]")
    if np.any(np.diff(times) < np.timedelta64(0, "ns")):
        raise TrackerError("stitch_segments needs nodes sorted by time")
    utimes, start = np.unique(times, return_index=True)
    stop = np.append(start[1:], len(nodes))
    lat = deg_to_rad(nodes["lat"].to_numpy(float))
    lon = deg_to_rad(nodes["lon"].to_numpy(float))
    xyz = te_unit_vectors(lat, lon)
    maxgap = np.timedelta64(int(round(cfg.maxgap_h * 3600)), "s")
    for ti in range(len(utimes) - 1):
        todo = np.arange(start[ti], stop[ti])
        for tj in range(ti + 1, len(utimes)):
            if utimes[tj] - utimes[ti] > maxgap or todo.size == 0:
                break
            cand = np.arange(start[tj], stop[tj])
            # kd_nearest3: sum of (node - query)^2 over x, y, z
            nearest = cand[np.argmin(chord_sq(xyz[cand][None, :, :], xyz[todo][:, None, :]), axis=1)]
            deg = te_arc_deg(te_cos_angle(lat[todo], lon[todo], lat[nearest], lon[nearest]), "deg")
            hit = deg <= cfg.range
            succ[todo[hit]] = nearest[hit]
            todo = todo[~hit]
    return succ


def stitch_paths(succ: np.ndarray) -> list[list[int]]:
    """TE's ``GeneratePathsBasic`` on the successors of nodes in (time, candidate) order.

    Nodes are visited in order; a node whose outgoing link is still unused starts a path,
    which follows the links, using each up. A path that reaches a node whose outgoing link an
    earlier path has already used keeps that node as its last: a storm that merges into
    another ends on the shared node, which belongs to both paths. A node without a link
    starts no path (paths have at least 2 nodes).
    """
    succ = np.asarray(succ)
    unused = succ >= 0
    paths = []
    for n in range(succ.size):
        if not unused[n]:
            continue
        path, cur = [n], n
        while True:
            nxt = int(succ[cur])
            unused[cur] = False
            path.append(nxt)
            if not unused[nxt]:
                break
            cur = nxt
        paths.append(path)
    return paths


def stitch_nodes(nodes: pd.DataFrame, cfg: StitchConfig) -> pd.DataFrame:
    """StitchNodes (TE's default mode) on the nodes of one time series (column ``time``).

    Links (`stitch_segments`), paths (`stitch_paths`: a node shared by merging storms is on
    both paths), then the filters: duration (last - first time) >= `mintime_h` and each
    threshold on at least its count of nodes (`all`, `first`, `last` also accepted), on the
    node values as TE reads them from its node file. Within a time nodes keep their order
    (TE's candidate order). Returns the kept paths' nodes with an integer ``track_id``
    (0, 1, ... in TE's path order: by first time, then candidate); a shared node appears once
    per path holding it.
    """
    if nodes.empty:
        return nodes.assign(track_id=pd.Series(dtype=int))
    nodes = nodes.sort_values("time", kind="stable").reset_index(drop=True)
    times = nodes["time"].to_numpy(dtype="datetime64[ns]")
    thresholds = parse_thresholds(cfg.thresholdcmd)
    mintime = np.timedelta64(int(round(cfg.mintime_h * 3600)), "s")
    kept, tid = [], 0
    for path in stitch_paths(stitch_segments(nodes, cfg)):
        if times[path[-1]] - times[path[0]] < mintime:
            continue
        track = nodes.iloc[path]
        if all(_passes(track, th) for th in thresholds):
            kept.append(track.assign(track_id=tid))
            tid += 1
    if not kept:
        return nodes.iloc[:0].assign(track_id=pd.Series(dtype=int))
    return pd.concat(kept, ignore_index=True)


# ---- stores ----------------------------------------------------------------------------------
def is_forecast_store(ds: xr.Dataset) -> bool:
    """A WB2 forecast store has a ``prediction_timedelta`` dimension (time = initialisation)."""
    return "prediction_timedelta" in ds.dims


def _grid_of(ds: xr.Dataset) -> LatLonGrid:
    for c in ("latitude", "longitude"):
        if c not in ds.coords:
            raise TrackerError(f"store has no {c!r} coordinate (canonical layout expected); "
                               f"coords: {list(ds.coords)}")
    return LatLonGrid(ds["latitude"].values, ds["longitude"].values)


def _static_leaves(leaves: Iterable[Leaf], ds: xr.Dataset, static: xr.Dataset | None,
                   grid: LatLonGrid) -> dict[Leaf, np.ndarray]:
    """Fields without a time dimension (e.g. surface geopotential), from the store or `static`."""
    out = {}
    for leaf in leaves:
        if lookup(leaf.name).kind != "static":
            continue
        src = ds if leaf.name in ds else static
        if src is None or leaf.name not in src:
            raise TrackerError(f"tracker needs static field {leaf.name!r}: not in the store"
                               + ("" if static is None else " nor in the static dataset"))
        da = src[leaf.name]
        da = da.isel({d: 0 for d in da.dims if d not in ("latitude", "longitude")})
        da = da.sel(latitude=grid.lat, longitude=grid.lon, method="nearest")
        out[leaf] = _single(da.transpose("latitude", "longitude").values, leaf.scale)
    return out


def _single(values: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A field in single precision, as TempestExtremes loads every variable (scaled in double,
    then rounded: a stored surface height in metres)."""
    if scale == 1.0:
        return np.asarray(values, dtype=np.float32)
    return (np.asarray(values, dtype=np.float64) * scale).astype(np.float32)


def _check_leaves(ds: xr.Dataset, leaves: Iterable[Leaf]) -> None:
    for leaf in leaves:
        if lookup(leaf.name).kind == "static":
            continue
        if leaf.name not in ds:
            raise TrackerError(f"tracker needs variable {leaf.name!r}, not in the store "
                               f"(variables: {sorted(ds.data_vars)})")
        if leaf.level is not None:
            levels = ds[leaf.name]["level"].values if "level" in ds[leaf.name].dims else []
            if leaf.level not in set(int(v) for v in levels):
                raise TrackerError(f"tracker needs {leaf.name!r} at {leaf.level} hPa; "
                                   f"store levels: {list(map(int, levels))}")


def _step_leaves(block: xr.Dataset, leaves: Iterable[Leaf]) -> dict[Leaf, np.ndarray]:
    """Dynamic fields of one step from an already-loaded block with dims (level?, lat, lon)."""
    out = {}
    for leaf in leaves:
        if lookup(leaf.name).kind == "static":
            continue
        da = block[leaf.name]
        if leaf.level is not None:
            da = da.sel(level=leaf.level)
        out[leaf] = _single(da.transpose("latitude", "longitude").values, leaf.scale)
    return out


def _subset(ds: xr.Dataset, leaves: Iterable[Leaf]) -> xr.Dataset:
    names = sorted({lf.name for lf in leaves if lookup(lf.name).kind != "static"})
    levels = sorted({lf.level for lf in leaves if lf.level is not None})
    sub = ds[names]
    if levels and "level" in sub.dims:
        sub = sub.sel(level=levels)
    return sub


def _detect_series(sub: xr.Dataset, tdim: str, grid: LatLonGrid, leaves, static_fields,
                   cfg: DetectConfig, block: int, desc: str, progress: bool) -> list[pd.DataFrame]:
    """DetectNodes over dimension `tdim` of `sub`, loading `block` steps at a time."""
    frames = []
    n = sub.sizes[tdim]
    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for a in range(0, n, block):
            chunk = sub.isel({tdim: slice(a, a + block)}).load()
            for k in range(chunk.sizes[tdim]):
                step = chunk.isel({tdim: k})
                fields = {**static_fields, **_step_leaves(step, leaves)}
                df = detect_nodes(fields, grid, cfg)
                df.insert(0, "step", a + k)
                frames.append(df)
                bar.update(1)
    return frames


def track_truth(ds: xr.Dataset, cfg: TrackConfig | None = None, static: xr.Dataset | None = None,
                stitch: StitchConfig | None = None, block: int = 16,
                progress: bool = True) -> pd.DataFrame:
    """Detect and stitch tracks on a truth store (canonical layout, dims time, [level], lat, lon).

    Uses ``cfg.stitch`` (the published setting) unless `stitch` is given.
    """
    cfg = cfg or TrackConfig()
    stitch = stitch or cfg.stitch
    grid = _grid_of(ds)
    leaves = required_leaves(cfg.detect)
    _check_leaves(ds, leaves)
    static_fields = _static_leaves(leaves, ds, static, grid)
    sub = _subset(ds, leaves)
    frames = _detect_series(sub, "time", grid, leaves, static_fields, cfg.detect, block,
                            "detect", progress)
    nodes = pd.concat(frames, ignore_index=True)
    nodes["time"] = ds["time"].values[nodes["step"].to_numpy(int)] if len(nodes) else \
        pd.Series(dtype="datetime64[ns]")
    tracks = stitch_nodes(nodes.drop(columns="step"), stitch)
    tracks["init"] = pd.NaT
    tracks["member"] = -1
    tracks["lead_h"] = np.nan
    return _tidy(tracks)


def _members(ds: xr.Dataset) -> tuple[xr.Dataset, np.ndarray]:
    if "realization" in ds.dims:
        ds = ds.rename({"realization": "number"})
    if "number" not in ds.dims:
        ds = ds.expand_dims(number=[0])
    return ds, ds["number"].values


def track_forecast(ds: xr.Dataset, cfg: TrackConfig | None = None, static: xr.Dataset | None = None,
                   stitch: StitchConfig | None = None, progress: bool = True) -> pd.DataFrame:
    """Detect and stitch tracks in a forecast store (WB2 layout: time = init,
    prediction_timedelta, number), for every init and member separately.

    Uses ``cfg.stitch_forecast`` (relaxed) unless `stitch` is given. Static fields (surface
    geopotential) come from the store or from `static` (e.g. the truth store).
    """
    cfg = cfg or TrackConfig()
    stitch = stitch or cfg.stitch_forecast
    if not is_forecast_store(ds):
        raise TrackerError("not a forecast store: no 'prediction_timedelta' dimension")
    ds, members = _members(ds)
    grid = _grid_of(ds)
    leaves = required_leaves(cfg.detect)
    _check_leaves(ds, leaves)
    static_fields = _static_leaves(leaves, ds, static, grid)
    sub = _subset(ds, leaves)
    leads = ds["prediction_timedelta"].values.astype("timedelta64[ns]")
    inits = ds["time"].values.astype("datetime64[ns]")
    out, next_id = [], 0
    runs = [(i, m) for i in range(inits.size) for m in range(members.size)]
    for i, m in tqdm(runs, desc="track forecast", disable=not progress):
        series = sub.isel(time=i, number=m)
        frames = _detect_series(series, "prediction_timedelta", grid, leaves, static_fields,
                                cfg.detect, leads.size, "detect", False)
        nodes = pd.concat(frames, ignore_index=True)
        steps = nodes["step"].to_numpy(int)
        nodes["time"] = inits[i] + leads[steps]
        nodes["lead_h"] = leads[steps] / np.timedelta64(1, "h")
        tracks = stitch_nodes(nodes.drop(columns="step"), stitch)
        if tracks.empty:
            continue
        tracks["track_id"] += next_id
        next_id = int(tracks["track_id"].max()) + 1
        tracks["init"] = inits[i]
        tracks["member"] = int(members[m])
        out.append(tracks)
    if not out:
        return _tidy(pd.DataFrame(columns=TRACK_COLUMNS + list(cfg.detect.output_names)))
    return _tidy(pd.concat(out, ignore_index=True))


def track_store(ds: xr.Dataset, cfg: TrackConfig | None = None, static: xr.Dataset | None = None,
                progress: bool = True) -> pd.DataFrame:
    """`track_forecast` for a forecast store, else `track_truth`."""
    if is_forecast_store(ds):
        return track_forecast(ds, cfg, static=static, progress=progress)
    return track_truth(ds, cfg, static=static, progress=progress)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["init"] = pd.to_datetime(df["init"])
    df["time"] = pd.to_datetime(df["time"])
    df["track_id"] = df["track_id"].astype(int)
    df["member"] = df["member"].astype(int)
    df["lead_h"] = df["lead_h"].astype(float)
    rest = [c for c in df.columns if c not in TRACK_COLUMNS and c not in ("i", "j")]
    df = df[TRACK_COLUMNS + rest + [c for c in ("i", "j") if c in df.columns]]
    return df.sort_values(["init", "member", "track_id", "time"], na_position="first",
                          kind="stable").reset_index(drop=True)


# ---- files -----------------------------------------------------------------------------------

def write_table(df: pd.DataFrame, path: str | os.PathLike, dim: str = "record") -> Path:
    """Write a tidy table atomically: ``.csv`` as CSV, ``.nc`` as netCDF (one `dim` dimension)."""
    path = Path(path)
    if path.suffix == ".csv":
        atomic_write(path, lambda p: df.to_csv(p, index=False))
    elif path.suffix in (".nc", ".nc4"):
        ds = xr.Dataset.from_dataframe(df.reset_index(drop=True).rename_axis(dim))
        for v in ds.data_vars:  # netCDF cannot store python objects
            if ds[v].dtype == object:
                ds[v] = ds[v].astype(str)
        atomic_write(path, lambda p: ds.to_netcdf(p))
    else:
        raise ValueError(f"table path must end in .csv or .nc, got {path}")
    return path


def write_tracks(tracks: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Tracks to CSV or netCDF (by suffix), atomically."""
    return write_table(tracks, path)


def read_tracks(path: str | os.PathLike) -> pd.DataFrame:
    """Read tracks written by `write_tracks` (CSV or netCDF) with their dtypes restored."""
    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path, parse_dates=["init", "time"])
    else:
        with xr.open_dataset(path) as ds:
            df = ds.to_dataframe().reset_index(drop=True)
    return _tidy(df)

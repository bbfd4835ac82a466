"""Sphere geometry and grid operations for the cyclone tracker, in TempestExtremes' arithmetic.

All angles are given in degrees. Grids are regular latitude/longitude grids given by their
1-D coordinate vectors (any latitude order); longitude wraps when the grid covers the
circle. The 4-neighbour graph of a grid point is N, S, E, W (TempestExtremes' order: the
previous row, the next row, the next column, the previous column): longitude wraps, no
neighbours across the poles (docs/evaluation.md, "Cyclone tracker").

Distances (docs/evaluation.md, "Distances as TempestExtremes computes them"): the tracker
measures great-circle angles exactly as TempestExtremes does, so that a point lying on a
radius falls on the same side:

* grid coordinates are converted to radians as TE's ``SimpleGrid`` does (``deg * (pi / 180)``),
  node coordinates read back by StitchNodes as ``DegToRad`` does (``deg * pi / 180``);
* the cosine of the angle is the spherical law of cosines in TE's order of operations,
  ``sin(lat1) sin(lat2) + cos(lat1) cos(lat2) cos(lon2 - lon1)``, clamped (>= 1 is 0,
  <= -1 is 180 degrees);
* the angle in degrees is ``(180 / pi) * acos(c)`` in the closed-contour test
  (``HasClosedContour``) and ``acos(c) * 180 / pi`` everywhere else (``GreatCircleDistance_Deg``).

Sines, cosines and arc cosines that decide a comparison come from the C library (Python's
``math``), as in TE: numpy's vectorised ``arccos`` may differ in the last bit, and is used only
where the result is farther than 1e-9 (relative) from the radius it is compared with.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field as dc_field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["EARTH_RADIUS_KM", "DEG_PER_RAD", "grid_radians", "deg_to_rad", "rad_to_deg",
           "te_cos_angle", "te_arc_deg", "great_circle_deg", "great_circle_km",
           "initial_bearing_deg", "to_unit_vectors", "from_unit_vectors", "te_unit_vectors",
           "chord_sq", "LatLonGrid", "local_minima", "local_extremum", "closed_contour",
           "window_reduce", "te_node_coordinate", "te_output_value"]

EARTH_RADIUS_KM = 6371.0
DEG_PER_RAD = 180.0 / math.pi   # TE's "180.0 / M_PI" (folded by the compiler: one rounding)
_NEAR = 1e-9                    # relative distance to a radius below which acos is taken from libm


# ---- TempestExtremes' arithmetic -----------------------------------------------------------
def _libm(fn, x) -> np.ndarray:
    """`fn` (a ``math`` function, i.e. the C library's) applied element by element."""
    x = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(fn, x.ravel().tolist()), dtype=np.float64, count=x.size).reshape(x.shape)


def grid_radians(deg) -> np.ndarray:
    """Grid coordinates in radians as TE's SimpleGrid converts them: ``deg *= M_PI / 180.0``."""
    return np.asarray(deg, dtype=np.float64) * (math.pi / 180.0)


def deg_to_rad(deg) -> np.ndarray:
    """TE's ``DegToRad``: ``deg * M_PI / 180.0`` (StitchNodes reading node coordinates)."""
    return np.asarray(deg, dtype=np.float64) * math.pi / 180.0


def rad_to_deg(rad) -> np.ndarray:
    """TE's ``RadToDeg``: ``rad * 180.0 / M_PI``."""
    return np.asarray(rad, dtype=np.float64) * 180.0 / math.pi


def te_cos_angle(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Cosine of the angle between points given in RADIANS, in TE's order of operations:
    ``sin(lat1) * sin(lat2) + cos(lat1) * cos(lat2) * cos(lon2 - lon1)`` (C-library trig,
    IEEE double without fused multiply-add); broadcasts. Meant for small arrays."""
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                   for v in (lat1, lon1, lat2, lon2)))
    return (_libm(math.sin, lat1) * _libm(math.sin, lat2)
            + _libm(math.cos, lat1) * _libm(math.cos, lat2) * _libm(math.cos, lon2 - lon1))


def te_arc_deg(cos_angle, style: str = "deg", near: float | None = None) -> np.ndarray:
    """TE's angle in degrees from the cosine of the angle (see the module docstring).

    style "deg": ``GreatCircleDistance_Deg`` (c >= 1 -> 0, c <= -1 -> pi, ``acos(c) * 180 / pi``);
    style "contour": ``HasClosedContour`` (c >= 1 -> 0, c <= -1 -> 180, ``(180 / pi) * acos(c)``).
    With `near` = None every arc cosine comes from the C library; otherwise numpy's is used
    and only the values within 1e-9 (relative) of `near` are recomputed with the C library,
    which is all a comparison with `near` needs.
    """
    if style not in ("deg", "contour"):
        raise ValueError(f"distance style must be 'deg' or 'contour', got {style!r}")
    c = np.asarray(cos_angle, dtype=np.float64)
    if np.isnan(c).any():
        raise ValueError("NaN in a great-circle distance (non-finite coordinates?)")
    mid = (c < 1.0) & (c > -1.0)
    if near is None:
        a = np.zeros_like(c)
        a[mid] = _libm(math.acos, c[mid])
    else:
        with np.errstate(invalid="ignore"):
            a = np.where(mid, np.arccos(np.clip(c, -1.0, 1.0)), 0.0)
    d = DEG_PER_RAD * a if style == "contour" else a * 180.0 / math.pi
    if near is not None:
        close = mid & (np.abs(d - near) <= _NEAR * max(1.0, abs(near)))
        if close.any():
            exact = _libm(math.acos, c[close])
            d[close] = DEG_PER_RAD * exact if style == "contour" else exact * 180.0 / math.pi
    d = np.where(c >= 1.0, 0.0, d)
    far = 180.0 if style == "contour" else math.pi * 180.0 / math.pi
    return np.where(c <= -1.0, far, d)


def great_circle_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle angle in degrees between points given in degrees, by TE's formula
    (``GreatCircleDistance_Deg`` of ``DegToRad`` coordinates); broadcasts. Vectorised numpy
    trigonometry: the last bit may differ from the C library (the tracker's own decisions
    use `te_cos_angle` / `te_arc_deg` / `LatLonGrid.distances`)."""
    p1, p2 = deg_to_rad(lat1), deg_to_rad(lat2)
    c = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(deg_to_rad(lon2) - deg_to_rad(lon1))
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        a = np.arccos(np.clip(c, -1.0, 1.0))
    return np.where(c >= 1.0, 0.0, a * 180.0 / math.pi)


def _haversine_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance on a sphere of radius 6371 km (haversine, well conditioned at
    short range; used by the best-track verification, not by the tracker); broadcasts."""
    return np.radians(_haversine_deg(lat1, lon1, lat2, lon2)) * EARTH_RADIUS_KM


def initial_bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(x, y)) % 360.0


def to_unit_vectors(lat, lon) -> np.ndarray:
    """(..., 3) Cartesian unit vectors of latitude/longitude points (degrees)."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def te_unit_vectors(lat_rad, lon_rad) -> np.ndarray:
    """(n, 3) unit vectors of points in RADIANS as TE builds its kd-trees:
    ``(cos(lon) cos(lat), sin(lon) cos(lat), sin(lat))`` with C-library trig."""
    cl, sl = _libm(math.cos, lat_rad), _libm(math.sin, lat_rad)
    return np.stack([_libm(math.cos, lon_rad) * cl, _libm(math.sin, lon_rad) * cl, sl], axis=-1)


def chord_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared chord between unit vectors as TE's kd-tree sums it:
    ``((a0 - b0)^2 + (a1 - b1)^2) + (a2 - b2)^2``; broadcasts over leading dims."""
    d0, d1, d2 = (a[..., k] - b[..., k] for k in range(3))
    return d0 * d0 + d1 * d1 + d2 * d2


def from_unit_vectors(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Latitude, longitude in [0, 360) of (..., 3) vectors (normalised here; need not be unit)."""
    xyz = np.asarray(xyz, dtype=float)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x)) % 360.0
    return lat, lon


def te_node_coordinate(rad) -> np.ndarray:
    """A node coordinate as DetectNodes writes it: ``RadToDeg`` of the grid radians printed
    with ``%3.6f`` (6 decimals, correctly rounded)."""
    return np.array([float(f"{v:.6f}") for v in np.ravel(rad_to_deg(rad)).tolist()]).reshape(np.shape(rad))


def te_output_value(value) -> float:
    """A node output as DetectNodes writes it (``%3.6e``: 7 significant digits)."""
    return float(f"{float(value):.6e}")


# ---- grid ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatLonGrid:
    """A regular latitude/longitude grid (1-D coordinates, degrees), with the radians and
    C-library sines/cosines TE computes from them."""

    lat: np.ndarray
    lon: np.ndarray
    lat_rad: np.ndarray = dc_field(init=False, repr=False, compare=False)
    lon_rad: np.ndarray = dc_field(init=False, repr=False, compare=False)
    sin_lat: np.ndarray = dc_field(init=False, repr=False, compare=False)
    cos_lat: np.ndarray = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lat = np.asarray(self.lat, dtype=float)
        lon = np.asarray(self.lon, dtype=float)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
            raise ValueError(f"grid needs 1-D latitude and longitude with >= 2 points, "
                             f"got shapes {lat.shape}, {lon.shape}")
        if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
            raise ValueError("grid coordinates must be finite")
        if np.any(np.abs(lat) > 90.0 + 1e-9):
            raise ValueError("latitude outside [-90, 90]")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)
        lat_rad, lon_rad = grid_radians(lat), grid_radians(lon)
        object.__setattr__(self, "lat_rad", lat_rad)
        object.__setattr__(self, "lon_rad", lon_rad)
        object.__setattr__(self, "sin_lat", _libm(math.sin, lat_rad))
        object.__setattr__(self, "cos_lat", _libm(math.cos, lat_rad))

    @property
    def shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    @property
    def dlat(self) -> float:
        return float(np.max(np.abs(np.diff(self.lat))))

    @property
    def dlon(self) -> float:
        return float(np.max(np.abs(np.diff(self.lon))))

    @property
    def wraps(self) -> bool:
        """True when the longitudes cover the full circle (last + spacing = first + 360)."""
        return bool(abs(self.lon.size * self.dlon - 360.0) < 1e-6 * 360.0 + 1e-9)

    def window(self, i: int, j: int, radius: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """Rows, columns of a box holding every point within `radius` degrees of (i, j)
        plus at least one grid cell beyond it (so leaving the box means leaving the radius);
        third value: the columns are the full (wrapping) circle, in circular order."""
        radius = max(float(radius), 0.0)
        lat0 = self.lat[i]
        rows = np.nonzero(np.abs(self.lat - lat0) <= radius + 1.01 * self.dlat)[0]
        nlon = self.lon.size
        full = False
        if abs(lat0) + radius >= 90.0 - 1e-9:
            full = True
        else:
            half = np.degrees(np.arcsin(min(1.0, np.sin(np.radians(radius))
                                                / np.cos(np.radians(lat0)))))
            ncol = int(np.ceil(half / self.dlon + 1.01))
            full = 2 * ncol + 1 >= nlon
        if full:
            cols = np.arange(nlon)
            return rows, cols, self.wraps
        offsets = np.arange(-ncol, ncol + 1)
        if self.wraps:
            cols = (j + offsets) % nlon
        else:
            cols = j + offsets
            cols = cols[(cols >= 0) & (cols < nlon)]
        return rows, cols, False

    def distances(self, i: int, j: int, rows: np.ndarray, cols: np.ndarray, style: str = "deg",
                  near: float | None = None) -> np.ndarray:
        """(len(rows), len(cols)) great-circle degrees from grid point (i, j), as TE computes them.

        style "contour": HasClosedContour (origin first: ``sin(lat0) sin(lat) + cos(lat0) cos(lat)
        cos(lon - lon0)``, ``(180 / pi) acos``); style "deg": FindLocalMinMax / FindLocalAverage
        (``GreatCircleDistance_Deg(lon, lat, lon0, lat0)``). `near`: see `te_arc_deg`."""
        i0, j0 = int(i), int(j)
        if style == "contour":
            cdl = _libm(math.cos, self.lon_rad[cols] - self.lon_rad[j0])
            c = (self.sin_lat[i0] * self.sin_lat[rows])[:, None] \
                + (self.cos_lat[i0] * self.cos_lat[rows])[:, None] * cdl[None, :]
        else:
            cdl = _libm(math.cos, self.lon_rad[j0] - self.lon_rad[cols])
            c = (self.sin_lat[rows] * self.sin_lat[i0])[:, None] \
                + (self.cos_lat[rows] * self.cos_lat[i0])[:, None] * cdl[None, :]
        return te_arc_deg(c, style, near)

    def point_distances(self, i: int, j: int, rr: np.ndarray, cc: np.ndarray, style: str = "deg",
                        near: float | None = None) -> np.ndarray:
        """`distances` from grid point (i, j) to the points (rr[k], cc[k]) (1-D index arrays)."""
        i0, j0 = int(i), int(j)
        if style == "contour":
            cdl = _libm(math.cos, self.lon_rad[cc] - self.lon_rad[j0])
            c = self.sin_lat[i0] * self.sin_lat[rr] + self.cos_lat[i0] * self.cos_lat[rr] * cdl
        else:
            cdl = _libm(math.cos, self.lon_rad[j0] - self.lon_rad[cc])
            c = self.sin_lat[rr] * self.sin_lat[i0] + self.cos_lat[rr] * self.cos_lat[i0] * cdl
        return te_arc_deg(c, style, near)


# ---- graph operations ----------------------------------------------------------------------
def _shift_or(mask: np.ndarray, wrap_lon: bool) -> np.ndarray:
    """Mask dilated by one step of the 4-neighbour graph (no wrap in latitude)."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    if wrap_lon:
        out |= np.roll(mask, 1, axis=1) | np.roll(mask, -1, axis=1)
    else:
        out[:, 1:] |= mask[:, :-1]
        out[:, :-1] |= mask[:, 1:]
    return out


def local_minima(field: np.ndarray, wrap_lon: bool = True) -> np.ndarray:
    """Points where no 4-neighbour is strictly lower (NaN points are never minima;
    NaN neighbours are ignored). Longitude wraps when `wrap_lon`; poles have no
    neighbour across them."""
    f = np.where(np.isnan(field), np.inf, np.asarray(field, dtype=float))
    ok = np.isfinite(f)
    ok[1:, :] &= f[1:, :] <= f[:-1, :]
    ok[:-1, :] &= f[:-1, :] <= f[1:, :]
    if wrap_lon:
        ok &= (f <= np.roll(f, 1, axis=1)) & (f <= np.roll(f, -1, axis=1))
    else:
        ok[:, 1:] &= f[:, 1:] <= f[:, :-1]
        ok[:, :-1] &= f[:, :-1] <= f[:, 1:]
    return ok


def _component(inside: np.ndarray, seed: tuple[int, int], wrap_lon: bool) -> np.ndarray:
    """Connected component (4-neighbour, optional longitude wrap) of `inside` holding `seed`."""
    labels, n = ndimage.label(inside)
    lab = labels[seed]
    if lab == 0:
        return np.zeros_like(inside)
    if wrap_lon and n > 1:
        # join labels that touch across the longitude seam
        a, b = labels[:, 0], labels[:, -1]
        pairs = (a > 0) & (b > 0)
        if pairs.any():
            g = coo_matrix((np.ones(int(pairs.sum())), (a[pairs], b[pairs])), shape=(n + 1, n + 1))
            _, comp = connected_components(g, directed=False)
            return comp[labels] == comp[lab]
    return labels == lab


def _bfs_order(inside: np.ndarray, seed: tuple[int, int], wrap_lon: bool) -> list[tuple[int, int]]:
    """The points of `inside` reachable from `seed`, in the order TE's breadth-first searches
    visit them (FIFO queue; neighbours pushed N, S, E, W, i.e. row - 1, row + 1, column + 1,
    column - 1)."""
    ny, nx = inside.shape
    if not inside[seed]:
        return []
    order, seen, queue = [], np.zeros_like(inside, dtype=bool), deque([seed])
    while queue:
        a, b = queue.popleft()
        if seen[a, b]:
            continue
        seen[a, b] = True
        order.append((a, b))
        nbs = [(a - 1, b), (a + 1, b)]
        nbs += [(a, (b + 1) % nx), (a, (b - 1) % nx)] if wrap_lon else [(a, b + 1), (a, b - 1)]
        for c, d in nbs:
            if 0 <= c < ny and 0 <= d < nx and inside[c, d] and not seen[c, d]:
                queue.append((c, d))
    return order


def _within(grid: LatLonGrid, i: int, j: int, dist: float):
    """Window around (i, j), the seed's position in it, its wrap flag and the mask of the
    points TE's searches reach: the connected set of points within `dist` ("deg" distances)
    holding (i, j) (empty when TE's distance of the point to itself exceeds `dist`)."""
    rows, cols, wrap = grid.window(i, j, dist)
    seed = (int(np.nonzero(rows == i)[0][0]), int(np.nonzero(cols == j)[0][0]))
    d = grid.distances(i, j, rows, cols, "deg", near=dist)
    reach = _component(d <= dist, seed, wrap)
    return rows, cols, seed, wrap, reach


def local_extremum(field: np.ndarray, grid: LatLonGrid, i: int, j: int, dist: float,
                   minimum: bool = True) -> tuple[int, int]:
    """TE's ``FindLocalMinMax``: the grid point holding the minimum (maximum) of `field` among
    the points reachable from (i, j) within `dist` degrees; (i, j) itself unless another is
    strictly lower (higher); among equal values the first in breadth-first order. NaN
    values are skipped (TE's fill values)."""
    if dist > 180.0:
        raise ValueError(f"search distance must be <= 180 degrees, got {dist}")
    rows, cols, seed, wrap, reach = _within(grid, i, j, dist)
    sub = np.asarray(field)[np.ix_(rows, cols)]
    key = sub if minimum else -sub
    ok = reach & ~np.isnan(key)
    if not ok.any():
        return int(i), int(j)
    best = key[ok].min()
    centre = np.asarray(field)[i, j]
    centre = centre if minimum else -centre
    if not np.isnan(centre) and centre <= best:
        return int(i), int(j)
    tied = ok & (key == best)
    if tied.sum() == 1:
        a, b = np.argwhere(tied)[0]
    else:
        a, b = next(p for p in _bfs_order(reach, seed, wrap) if tied[p])
    return int(rows[a]), int(cols[b])


def closed_contour(field: np.ndarray, grid: LatLonGrid, i: int, j: int, delta: float,
                   dist: float, minmaxdist: float = 0.0) -> bool:
    """TempestExtremes closed-contour test (``HasClosedContour``) around grid point (i, j).

    Pivot: (i, j), or the minimum (delta > 0) / maximum (delta < 0) of `field` within
    `minmaxdist` degrees of it (`local_extremum`). Breadth-first search from the pivot over
    the 4-neighbour graph: points where the field has changed by >= |delta| in the test's
    direction (up for delta > 0, down for delta < 0) are not expanded; reaching a point
    farther than `dist` degrees from the pivot fails. Vectorised: the connected region where
    the change is still below |delta|, plus its edge neighbours, must all lie within `dist`.
    The change is computed in the field's precision (TE: float - float), compared in double.
    NaN points stop the search like a sufficient change.
    """
    if delta == 0 or dist <= 0:
        raise ValueError(f"closed contour needs delta != 0 and dist > 0, got {delta}, {dist}")
    field = np.asarray(field)
    sign = 1.0 if delta > 0 else -1.0
    pi, pj = (i, j) if minmaxdist <= 0 else local_extremum(field, grid, i, j, minmaxdist, delta > 0)
    ref = field[pi, pj]
    if not np.isfinite(ref):
        return False
    rows, cols, wrap = grid.window(pi, pj, dist)
    sub = field[np.ix_(rows, cols)]
    change = sign * np.asarray(sub - ref, dtype=np.float64)
    inside = np.isfinite(change) & (change < abs(delta))
    seed = (int(np.nonzero(rows == pi)[0][0]), int(np.nonzero(cols == pj)[0][0]))
    region = _component(inside, seed, wrap)
    visited = _shift_or(region, wrap)
    if _reaches_window_edge(visited, grid, rows, cols, wrap):
        return False            # the window's outer cells lie beyond `dist` (see `window`)
    vr, vc = np.nonzero(visited)
    d = grid.point_distances(pi, pj, rows[vr], cols[vc], "contour", near=dist)
    return bool(np.all(d <= dist))


def _reaches_window_edge(mask: np.ndarray, grid: LatLonGrid, rows: np.ndarray, cols: np.ndarray,
                         full: bool) -> bool:
    """`mask` touches an outer row or column of a `LatLonGrid.window` that is not the grid's
    own edge: such cells are more than the window's radius away (by >= 0.01 cell)."""
    ny, nx = grid.shape
    if (rows[0] != 0 and mask[0].any()) or (rows[-1] != ny - 1 and mask[-1].any()):
        return True
    if full:
        return False
    return bool((cols[0] != 0 or grid.wraps) and mask[:, 0].any()
                or (cols[-1] != nx - 1 or grid.wraps) and mask[:, -1].any())


def window_reduce(field: np.ndarray, grid: LatLonGrid, i: int, j: int, dist: float, op: str) -> float:
    """TE's node output: min / max (``FindLocalMinMax``) or avg (``FindLocalAverage``) of
    `field` over the points reachable from (i, j) within `dist` degrees (0 = the point, and
    any point at distance 0, e.g. the rest of a pole row). min / max start from the value at
    (i, j); avg sums in single precision in breadth-first order, as TE does. NaN values are
    skipped (all NaN gives NaN)."""
    if op not in ("min", "max", "avg"):
        raise ValueError(f"output operator must be min, max or avg, got {op!r}")
    if dist > 180.0:
        raise ValueError(f"output distance must be <= 180 degrees, got {dist}")
    field = np.asarray(field)
    rows, cols, seed, wrap, reach = _within(grid, i, j, dist)
    sub = field[np.ix_(rows, cols)]
    if op == "avg":
        total, n = np.float32(0.0), 0
        for p in _bfs_order(reach, seed, wrap):
            v = np.float32(sub[p])
            if not np.isnan(v):
                total = np.float32(total + v)
                n += 1
        return float(total / np.float32(n)) if n else float("nan")
    vals = np.concatenate([[field[i, j]], sub[reach]]).astype(np.float64)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return float("nan")
    return float(vals.min() if op == "min" else vals.max())

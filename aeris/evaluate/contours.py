"""Sphere geometry and grid operations for the cyclone tracker (TempestExtremes semantics).

All angles in degrees. Grids are regular latitude/longitude grids given by their 1-D
coordinate vectors (any latitude order); longitude wraps when the grid covers the circle.
The 4-neighbour graph of a grid point is N, S, E, W: longitude wraps, no neighbours across
the poles (docs/evaluation.md, "Cyclone tracker").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["EARTH_RADIUS_KM", "great_circle_deg", "great_circle_km", "initial_bearing_deg",
           "to_unit_vectors", "from_unit_vectors", "LatLonGrid", "local_minima",
           "closed_contour", "window_reduce"]

EARTH_RADIUS_KM = 6371.0


def great_circle_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle angle between points (haversine), degrees; broadcasts."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance on a sphere of radius 6371 km; broadcasts."""
    return np.radians(great_circle_deg(lat1, lon1, lat2, lon2)) * EARTH_RADIUS_KM


def initial_bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(x, y)) % 360.0


def to_unit_vectors(lat, lon) -> np.ndarray:
    """(..., 3) Cartesian unit vectors of latitude/longitude points."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def from_unit_vectors(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Latitude, longitude in [0, 360) of (..., 3) vectors (normalised here; need not be unit)."""
    xyz = np.asarray(xyz, dtype=float)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x)) % 360.0
    return lat, lon


@dataclass(frozen=True)
class LatLonGrid:
    """A regular latitude/longitude grid (1-D coordinates, degrees)."""

    lat: np.ndarray
    lon: np.ndarray

    def __post_init__(self) -> None:
        lat = np.asarray(self.lat, dtype=float)
        lon = np.asarray(self.lon, dtype=float)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
            raise ValueError(f"grid needs 1-D latitude and longitude with >= 2 points, "
                             f"got shapes {lat.shape}, {lon.shape}")
        if np.any(np.abs(lat) > 90.0 + 1e-9):
            raise ValueError("latitude outside [-90, 90]")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)

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


def closed_contour(field: np.ndarray, grid: LatLonGrid, i: int, j: int, delta: float,
                   dist: float, minmaxdist: float = 0.0) -> bool:
    """TempestExtremes closed-contour test around grid point (i, j).

    Pivot: (i, j), or the minimum (delta > 0) / maximum (delta < 0) of `field` within
    `minmaxdist` degrees of it. Breadth-first search from the pivot over the 4-neighbour
    graph: points where the field has changed by >= |delta| in the test's direction
    (up for delta > 0, down for delta < 0) are not expanded; reaching a point farther than
    `dist` degrees from the pivot fails. Vectorised: the connected region where the change
    is still below |delta|, plus its edge neighbours, must all lie within `dist`.
    NaN points stop the search like a sufficient change.
    """
    if delta == 0 or dist <= 0:
        raise ValueError(f"closed contour needs delta != 0 and dist > 0, got {delta}, {dist}")
    sign = 1.0 if delta > 0 else -1.0
    pi, pj = i, j
    if minmaxdist > 0:
        rows, cols, _ = grid.window(i, j, minmaxdist)
        sub = field[np.ix_(rows, cols)]
        d = great_circle_deg(grid.lat[i], grid.lon[j], grid.lat[rows][:, None], grid.lon[cols][None, :])
        cand = np.where((d <= minmaxdist) & np.isfinite(sub), sign * sub, np.inf)
        k = np.unravel_index(np.argmin(cand), cand.shape)
        if np.isfinite(cand[k]) and cand[k] < sign * field[i, j]:
            pi, pj = int(rows[k[0]]), int(cols[k[1]])
    ref = field[pi, pj]
    if not np.isfinite(ref):
        return False
    rows, cols, wrap = grid.window(pi, pj, dist)
    sub = field[np.ix_(rows, cols)]
    change = sign * (sub - ref)
    inside = np.isfinite(change) & (change < abs(delta))
    seed = (int(np.nonzero(rows == pi)[0][0]), int(np.nonzero(cols == pj)[0][0]))
    region = _component(inside, seed, wrap)
    visited = _shift_or(region, wrap)
    d = great_circle_deg(grid.lat[pi], grid.lon[pj], grid.lat[rows][:, None], grid.lon[cols][None, :])
    return bool(np.all(d[visited] <= dist))


def window_reduce(field: np.ndarray, grid: LatLonGrid, i: int, j: int, dist: float, op: str) -> float:
    """min / max / avg of `field` over the points within `dist` degrees of (i, j) (0 = the point)."""
    if dist <= 0:
        return float(field[i, j])
    rows, cols, _ = grid.window(i, j, dist)
    sub = field[np.ix_(rows, cols)]
    d = great_circle_deg(grid.lat[i], grid.lon[j], grid.lat[rows][:, None], grid.lon[cols][None, :])
    vals = sub[d <= dist]
    reducer = {"min": np.nanmin, "max": np.nanmax, "avg": np.nanmean}.get(op)
    if reducer is None:
        raise ValueError(f"output operator must be min, max or avg, got {op!r}")
    return float(reducer(vals))

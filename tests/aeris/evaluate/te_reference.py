"""Literal, loop-by-loop references of TempestExtremes' DetectNodes / StitchNodes pieces, written
for the tests from TE's formulas (scalar Python ``math``, i.e. the C library, in TE's order of
operations). They share no code with `aeris.evaluate` and are slow on purpose.

TE's conventions reproduced here:
* grid radians: ``deg * (M_PI / 180.0)`` (SimpleGrid); node radians in StitchNodes:
  ``deg * M_PI / 180.0`` (DegToRad); ``RadToDeg``: ``rad * 180.0 / M_PI``;
* HasClosedContour: ``c = sin(lat0) sin(lat) + cos(lat0) cos(lat) cos(lon - lon0)``,
  ``(180 / M_PI) * acos(c)``; GreatCircleDistance_Deg(lon1, lat1, lon2, lat2):
  ``c = sin(lat1) sin(lat2) + cos(lat1) cos(lat2) cos(lon2 - lon1)``, ``acos(c) * 180 / M_PI``;
  both clamp c >= 1 to 0 and c <= -1 to 180 degrees;
* connectivity of a global grid: N (row - 1), S (row + 1), E (col + 1), W (col - 1), wrapping;
* kd-tree chord: ``((x - x')^2 + (y - y')^2) + (z - z')^2`` of ``(cos lon cos lat,
  sin lon cos lat, sin lat)``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def grid_rad(deg: float) -> float:
    return float(deg) * (math.pi / 180.0)


def deg_to_rad(deg: float) -> float:
    return float(deg) * math.pi / 180.0


def contour_deg(lat0: float, lon0: float, lat: float, lon: float) -> float:
    """HasClosedContour's distance (radians in, degrees out)."""
    c = math.sin(lat0) * math.sin(lat) + math.cos(lat0) * math.cos(lat) * math.cos(lon - lon0)
    if c >= 1.0:
        return 0.0
    if c <= -1.0:
        return 180.0
    return 180.0 / math.pi * math.acos(c)


def gcd_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """GreatCircleDistance_Deg (radians in, degrees out)."""
    c = math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    if c >= 1.0:
        r = 0.0
    elif c <= -1.0:
        r = math.pi
    else:
        r = math.acos(c)
    return r * 180.0 / math.pi


def haversine_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The formula the tracker used before (not TE's)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(min(max(h, 0.0), 1.0))))


def xyz(lat_rad: float, lon_rad: float) -> tuple[float, float, float]:
    return (math.cos(lon_rad) * math.cos(lat_rad), math.sin(lon_rad) * math.cos(lat_rad), math.sin(lat_rad))


def chord_sq(a, b) -> float:
    d = 0.0
    for k in range(3):
        d += (a[k] - b[k]) * (a[k] - b[k])
    return d


def neighbours(a: int, b: int, ny: int, nx: int) -> list[tuple[int, int]]:
    out = []
    if a != 0:
        out.append((a - 1, b))
    if a != ny - 1:
        out.append((a + 1, b))
    out += [(a, (b + 1) % nx), (a, (b + nx - 1) % nx)]
    return out


def find_local_minmax(f, lat, lon, i, j, dist, minimum):
    """FindLocalMinMax on a global grid: (index of the extremum, its value)."""
    ny, nx = f.shape
    lat0, lon0 = grid_rad(lat[i]), grid_rad(lon[j])
    best, value = (i, j), f[i, j]
    fill = bool(np.isnan(value))
    queue, seen = deque([(i, j)]), set()
    while queue:
        a, b = queue.popleft()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if gcd_deg(grid_rad(lon[b]), grid_rad(lat[a]), lon0, lat0) > dist:
            continue
        v = f[a, b]
        if not np.isnan(v):
            if fill or (v < value if minimum else v > value):
                best, value, fill = (a, b), v, False
        queue.extend(neighbours(a, b, ny, nx))
    return best, value


def find_local_average(f, lat, lon, i, j, dist):
    """FindLocalAverage: single-precision sum in breadth-first order / count."""
    ny, nx = f.shape
    lat0, lon0 = grid_rad(lat[i]), grid_rad(lon[j])
    total, n = np.float32(0.0), 0
    queue, seen = deque([(i, j)]), set()
    while queue:
        a, b = queue.popleft()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if gcd_deg(grid_rad(lon[b]), grid_rad(lat[a]), lon0, lat0) > dist:
            continue
        v = np.float32(f[a, b])
        if not np.isnan(v):
            total = np.float32(total + v)
            n += 1
        queue.extend(neighbours(a, b, ny, nx))
    return float(total / np.float32(n)) if n else float("nan")


def has_closed_contour(f, lat, lon, i, j, delta, dist, minmaxdist):
    """HasClosedContour on a global grid (NaN stops the search, as in aeris)."""
    ny, nx = f.shape
    if minmaxdist > 0:
        (i, j), _ = find_local_minmax(f, lat, lon, i, j, minmaxdist, delta > 0)
    ref = f[i, j]
    if np.isnan(ref):
        return False
    lat0, lon0 = grid_rad(lat[i]), grid_rad(lon[j])
    queue, seen = deque([(i, j)]), set()
    while queue:
        a, b = queue.popleft()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if contour_deg(lat0, lon0, grid_rad(lat[a]), grid_rad(lon[b])) > dist:
            return False
        v = f[a, b]
        if np.isnan(v):
            continue
        if delta > 0 and float(v - ref) >= delta:
            continue
        if delta < 0 and float(ref - v) >= -delta:
            continue
        queue.extend(neighbours(a, b, ny, nx))
    return True


def merge_keep(values, lat_deg, lon_deg, mergedist):
    """DetectNodes' merge: keep a candidate unless one within the chord radius is lower."""
    r = 2.0 * math.sin(0.5 * mergedist / 180.0 * math.pi)
    pts = [xyz(grid_rad(a), grid_rad(b)) for a, b in zip(lat_deg, lon_deg)]
    keep = []
    for q in range(len(values)):
        near = [c for c in range(len(values)) if chord_sq(pts[c], pts[q]) <= r * r]
        keep.append(not any(values[c] < values[q] for c in near))
    return keep


def stitch_paths(times, lat_deg, lon_deg, range_deg, maxgap_s):
    """GeneratePathSegmentsSetBasic + GeneratePathsBasic on nodes listed in (time, candidate)
    order: paths as lists of node indices."""
    times = [np.datetime64(t, "s") for t in times]
    uniq = sorted(set(times))
    at = {t: [n for n in range(len(times)) if times[n] == t] for t in uniq}
    rad = [(deg_to_rad(a), deg_to_rad(b)) for a, b in zip(lat_deg, lon_deg)]
    pts = [xyz(a, b) for a, b in rad]
    segments = [dict() for _ in uniq]          # per time: candidate node -> successor node
    for t in range(len(uniq) - 1):
        for n in at[uniq[t]]:
            for g in range(1, len(uniq) - t):
                if (uniq[t + g] - uniq[t]) / np.timedelta64(1, "s") > maxgap_s:
                    break
                cands = at[uniq[t + g]]
                best = min(cands, key=lambda m: (chord_sq(pts[m], pts[n]), cands.index(m)))
                if gcd_deg(rad[n][1], rad[n][0], rad[best][1], rad[best][0]) <= range_deg:
                    segments[t][n] = best
                    break
    tix = {t: k for k, t in enumerate(uniq)}
    paths = []
    for t in range(len(uniq) - 1):
        while segments[t]:
            first = min(segments[t])
            path, tx, cur = [first], t, first
            while True:
                nxt = segments[tx].pop(cur)
                path.append(nxt)
                txn = tix[times[nxt]]
                if txn >= len(uniq) - 1 or nxt not in segments[txn]:
                    break
                tx, cur = txn, nxt
            paths.append(path)
    return paths

"""The tracker decides like TempestExtremes, node for node: distances on a radius, merge at the
merge distance, node outputs (breadth-first regions, single-precision averages), closed
contours, and StitchNodes' path generation with merging storms. References: the literal
re-implementations of TE's loops in `te_reference` (scalar C-library maths in TE's order)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aeris.evaluate.config import DetectConfig, StitchConfig
from aeris.evaluate.contours import (LatLonGrid, closed_contour, local_extremum, te_arc_deg,
                                     te_node_coordinate, te_output_value, window_reduce)
from aeris.evaluate.tracker import (Leaf, _merge, detect_nodes, stitch_nodes, stitch_paths,
                                    stitch_segments, track_truth)
from tests.aeris.evaluate import te_reference as te
from tests.support.tracks import fields, grid, truth_store

LAT1, LON1 = grid(1.0)           # 181 x 360, 1-degree, pole rows included
G1 = LatLonGrid(LAT1, LON1)


def _row(lat: float) -> int:
    return int(np.nonzero(LAT1 == lat)[0][0])


def _meridian_cases(dd: float, style: str):
    """(row of the centre, row dd degrees north, TE inside?, haversine inside?) for every
    latitude of the 1-degree grid: points exactly dd degrees apart along a meridian."""
    out = []
    for lat in np.arange(-89.0, 90.0 - dd + 0.5, 1.0):
        a, b = te.grid_rad(lat), te.grid_rad(lat + dd)
        lon = te.grid_rad(200.0)
        d = te.contour_deg(a, lon, b, lon) if style == "contour" else te.gcd_deg(lon, b, lon, a)
        out.append((_row(lat), _row(lat + dd), d <= dd, te.haversine_deg(lat, 200.0, lat + dd, 200.0) <= dd))
    return out


def _both_directions(cases):
    """The haversine formula puts points on the other side in both directions (else the test
    could not tell the formulas apart)."""
    te_in = sum(t and not h for *_, t, h in cases)
    hav_in = sum(h and not t for *_, t, h in cases)
    assert te_in >= 3 and hav_in >= 3, (te_in, hav_in)


# ---- distances on a radius -------------------------------------------------------------------
@pytest.mark.parametrize("style", ["contour", "deg"])
def test_grid_distances_are_te_bit_for_bit(style):
    rng = np.random.default_rng(0)
    for _ in range(40):
        i, j = int(rng.integers(0, 181)), int(rng.integers(0, 360))
        rows, cols, _ = G1.window(i, j, 6.5)
        d = G1.distances(i, j, rows, cols, style)           # every arc cosine from the C library
        a0, b0 = te.grid_rad(LAT1[i]), te.grid_rad(LON1[j])
        for r in rng.choice(rows.size, 6):
            for c in rng.choice(cols.size, 6):
                a, b = te.grid_rad(LAT1[rows[r]]), te.grid_rad(LON1[cols[c]])
                ref = te.contour_deg(a0, b0, a, b) if style == "contour" else te.gcd_deg(b, a, b0, a0)
                assert d[r, c] == ref
                assert G1.point_distances(i, j, rows[[r]], cols[[c]], style)[0] == ref
    # every decision on the radius itself is TE's, for both conventions
    cases = _meridian_cases(2.0, style)
    for i, k, inside, _ in cases:
        d = G1.distances(i, 200, np.array([k]), np.array([200]), style, near=2.0)[0, 0]
        assert (d <= 2.0) == inside


def test_arc_cosines_near_the_radius_come_from_the_c_library():
    """numpy's vectorised arccos may differ from the C library's in the last bit; values that
    are compared with a radius are recomputed exactly where they are close to it."""
    rng = np.random.default_rng(1)
    for radius in (2.0, 5.5, 6.5, 8.0):
        c = np.cos(np.radians(radius)) + rng.integers(-40, 40, 300) * np.spacing(1.0)
        for style in ("deg", "contour"):
            d = te_arc_deg(c, style, near=radius)
            ref = [(180.0 / math.pi * math.acos(v)) if style == "contour" else math.acos(v) * 180.0 / math.pi
                   for v in c]
            assert d.tolist() == ref
    assert te_arc_deg(np.array([1.0, 1.5, -1.0, -2.0]), "contour").tolist() == [0.0, 0.0, 180.0, 180.0]


def test_output_on_the_output_radius_is_decided_like_te():
    """max of a field within 2 degrees on a 1-degree grid: the point 2 degrees north counts
    exactly when TE's distance says so."""
    cases = _meridian_cases(2.0, "deg")
    _both_directions(cases)
    f = np.zeros(G1.shape)
    for i, k, inside, _ in cases:
        f[k, 200] = 1.0
        assert window_reduce(f, G1, i, 200, 2.0, "max") == (1.0 if inside else 0.0), LAT1[i]
        f[k, 200] = 0.0


def test_closed_contour_on_the_contour_radius_is_decided_like_te():
    """The region below the contour is the pivot and the point 1 degree north; its edge holds
    the point 2 degrees north, so a 2-degree contour closes exactly when TE's distance of that
    point is <= 2."""
    cases = _meridian_cases(2.0, "contour")
    _both_directions(cases)
    for i, k, inside, _ in cases:
        f = np.full(G1.shape, 10.0)
        f[i, 200], f[i - 1, 200] = 0.0, 0.5
        assert closed_contour(f, G1, i, 200, 1.0, 2.0) == inside, LAT1[i]
        assert te.has_closed_contour(f, LAT1, LON1, i, 200, 1.0, 2.0, 0.0) == inside


def test_merge_at_the_merge_distance_is_te_chord_test():
    """Two candidates exactly 6 degrees apart along a meridian: the shallower is dropped
    exactly when TE's kd-tree chord test finds the deeper one."""
    n_te = n_hav = 0
    for lat in np.arange(-84.0, 84.5, 1.0):
        ref = te.merge_keep([1.0, 2.0], [lat, lat + 6], [30.0, 30.0], 6.0)
        got = _merge(np.array([1.0, 2.0]), np.array([lat, lat + 6]), np.array([30.0, 30.0]), 6.0)
        assert got.tolist() == ref, lat
        hav_merged = te.haversine_deg(lat, 30.0, lat + 6, 30.0) <= 6.0
        n_te += ref[1] and hav_merged           # TE keeps both, an angle test would merge
        n_hav += (not ref[1]) and not hav_merged
    assert n_te + n_hav >= 3


def test_stitch_on_the_range_is_decided_like_te():
    """A node and one 8 degrees north 6 h later are linked exactly when TE's distance (the
    node coordinates read back with DegToRad) is within range."""
    t = pd.to_datetime(["2020-01-01T00", "2020-01-01T06"])
    differ = 0
    cfg = StitchConfig(range=8.0, mintime_h=0.0, thresholdcmd="")
    for lat in np.arange(-80.0, 80.5, 1.0):
        nodes = pd.DataFrame({"time": t, "lat": [lat, lat + 8], "lon": [123.0, 123.0]})
        a, b = te.deg_to_rad(lat), te.deg_to_rad(lat + 8)
        inside = te.gcd_deg(te.deg_to_rad(123.0), a, te.deg_to_rad(123.0), b) <= 8.0
        assert (stitch_segments(nodes, cfg)[0] == 1) == inside, lat
        assert (len(stitch_nodes(nodes, cfg)) == 2) == inside
        differ += inside != (te.haversine_deg(lat, 123.0, lat + 8, 123.0) <= 8.0)
    assert differ >= 3


# ---- node outputs and pivots against TE's breadth-first searches ------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_outputs_and_pivots_match_te_breadth_first_searches(seed):
    rng = np.random.default_rng(seed)
    lat, lon = grid(2.5)
    g = LatLonGrid(lat, lon)
    # float32 values with many ties (rounded), a few missing
    f = np.round(rng.normal(0, 3, g.shape)).astype(np.float32)
    f[rng.random(g.shape) < 0.03] = np.nan
    pts = [(int(rng.integers(0, lat.size)), int(rng.integers(0, lon.size))) for _ in range(25)]
    pts += [(0, 5), (lat.size - 1, 70), (30, 0), (31, lon.size - 1), (1, 3)]   # poles and seam
    for i, j in pts:
        for dist in (0.0, 2.5, 4.0, 7.5):
            for op, minimum in (("min", True), ("max", False)):
                _, ref = te.find_local_minmax(f, lat, lon, i, j, dist, minimum)
                got = window_reduce(f, g, i, j, dist, op)
                assert (np.isnan(ref) and np.isnan(got)) or got == float(ref), (i, j, dist, op)
                if dist > 0:
                    assert local_extremum(f, g, i, j, dist, minimum) == \
                        te.find_local_minmax(f, lat, lon, i, j, dist, minimum)[0], (i, j, dist, op)
            ref = te.find_local_average(f, lat, lon, i, j, dist)
            got = window_reduce(f, g, i, j, dist, "avg")
            assert (np.isnan(ref) and np.isnan(got)) or got == ref, (i, j, dist)
    # a dist-0 output at a pole reaches the whole pole row (all at distance 0 from the node)
    assert window_reduce(f, g, 0, 5, 0.0, "max") == np.nanmax(f[0])


def test_closed_contours_with_pivot_search_match_te():
    rng = np.random.default_rng(3)
    lat, lon = grid(2.0)
    g = LatLonGrid(lat, lon)
    msl, z300, z500, *_ = fields(lat, lon, [dict(lat=float(rng.uniform(-40, 40)), lon=float(rng.uniform(0, 360)),
                                                 dp=float(rng.uniform(150, 2500)), dz=float(rng.uniform(-200, 400)),
                                                 R=float(rng.uniform(1.5, 6.0))) for _ in range(30)],
                                 noise=40.0, rng=rng)
    th = (z300 - z500).astype(np.float32)
    msl = msl.astype(np.float32)
    n = {True: 0, False: 0}
    for i, j in zip(*np.nonzero(msl < np.roll(msl, 1, 1))):
        if rng.random() > 0.15:
            continue
        for f, delta, dist, mmd in ((msl, 200.0, 5.5, 0.0), (th, -58.8, 6.5, 2.0), (msl, 300.0, 8.0, 3.0)):
            ref = te.has_closed_contour(f, lat, lon, int(i), int(j), delta, dist, mmd)
            assert closed_contour(f, g, int(i), int(j), delta, dist, mmd) == ref, (i, j, delta)
            n[ref] += 1
    assert n[True] >= 10 and n[False] >= 10


def test_detect_nodes_writes_coordinates_and_outputs_as_te_does():
    lat = np.linspace(90, -90, 65)                  # 19.687499999999996 etc.
    lon = np.arange(128) * 2.8125
    g = LatLonGrid(lat, lon)
    f = {k: v.astype(np.float32) for k, v in zip(
        (Leaf("mean_sea_level_pressure"), Leaf("geopotential", 300), Leaf("geopotential", 500),
         Leaf("10m_u_component_of_wind"), Leaf("10m_v_component_of_wind")),
        fields(lat, lon, [dict(lat=19.6875, lon=300.9375, dp=3000.0, dz=500.0, R=4.0, vmax=23.456789)]))}
    f[Leaf("geopotential_at_surface", None, 1 / 9.80665)] = np.zeros(g.shape, np.float32)
    nodes = detect_nodes(f, g, DetectConfig(adapt_to_grid=False))
    assert len(nodes) == 1
    n = nodes.iloc[0]
    i, j = int(n.i), int(n.j)
    assert n.lat == float("%3.6f" % (te.grid_rad(lat[i]) * 180.0 / math.pi)) == 19.6875
    assert n.lon == float("%3.6f" % (te.grid_rad(lon[j]) * 180.0 / math.pi))
    wind = np.sqrt(f[Leaf("10m_u_component_of_wind")] ** 2 + f[Leaf("10m_v_component_of_wind")] ** 2)
    _, ref = te.find_local_minmax(wind, lat, lon, i, j, 2.0, False)
    assert n.wind == float("%3.6e" % ref) and n.msl == float("%3.6e" % f[Leaf("mean_sea_level_pressure")][i, j])
    assert te_output_value(9.99999962747097) == 10.0        # a float32 just below 10 m/s reads as 10
    assert te_node_coordinate(np.array([te.grid_rad(-0.703125)]))[0] == -0.703125


# ---- StitchNodes: path generation, merges ------------------------------------------------------
def _merge_case(b_first: bool = False):
    """Storms A (15N, moving west) and B (north of it, moving south-west) both reach node M at
    t4 (the only node then); the merged storm goes on to t8."""
    t = pd.date_range("2020-08-20", periods=9, freq="6h")
    a = [(t[k], 15.0, 300.0 - k) for k in range(4)]
    b = [(t[k], 22.0 - 0.8 * k, 300.0 - k) for k in range(4)]
    m = [(t[k], 18.0 + 0.5 * (k - 4), 296.0 - (k - 4)) for k in range(4, 9)]
    rows = []
    for k in range(4):                       # candidate order within each time
        rows += [b[k], a[k]] if b_first else [a[k], b[k]]
    rows += m
    return pd.DataFrame(rows, columns=["time", "lat", "lon"]).assign(wind=20.0, zs=0.0)


def test_merging_storms_share_the_node_and_both_survive_mintime():
    nodes = _merge_case()
    cfg = StitchConfig(range=8.0, maxgap_h=24.0, mintime_h=24.0, thresholdcmd="wind,>=,10.0,5")
    out = stitch_nodes(nodes, cfg)
    tracks = {tid: g for tid, g in out.groupby("track_id")}
    assert len(tracks) == 2
    a, b = tracks[0], tracks[1]
    merge = (pd.Timestamp("2020-08-21T00"), 18.0, 296.0)
    # A keeps the merged storm to the end (48 h, 9 nodes); B ends on the shared node (24 h, 5 nodes)
    assert a.lat.iloc[:4].tolist() == [15.0] * 4 and len(a) == 9
    assert b.lat.iloc[:4].tolist() == pytest.approx([22.0, 21.2, 20.4, 19.6]) and len(b) == 5
    assert tuple(a.iloc[4][["time", "lat", "lon"]]) == merge == tuple(b.iloc[-1][["time", "lat", "lon"]])
    # cutting B at the shared node (the old rule) would leave 18 h and 4 nodes: dropped
    assert (b.time.iloc[-2] - b.time.iloc[0]) < pd.Timedelta(hours=24)
    # TE's order is first come, first served: with B listed first at every time, B continues
    out = stitch_nodes(_merge_case(b_first=True), cfg)
    first = out[out.track_id == 0]
    assert first.lat.iloc[0] == 22.0 and len(first) == 9 and len(out[out.track_id == 1]) == 5
    # the paths are those of a literal GeneratePathsBasic
    assert stitch_paths(stitch_segments(nodes, cfg)) == te.stitch_paths(
        nodes.time, nodes.lat, nodes.lon, 8.0, 24 * 3600.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stitch_paths_match_te_on_crowded_nodes(seed):
    """Many nodes in a small box, gaps and empty times: links, merges and paths as TE's."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2020-09-01", periods=14, freq="6h").delete([5, 9, 10])
    rows = []
    for t in times:
        for _ in range(int(rng.integers(0, 6))):
            rows.append((t, float(rng.uniform(10, 25)), float(rng.uniform(280, 300))))
    nodes = pd.DataFrame(rows, columns=["time", "lat", "lon"])
    cfg = StitchConfig(range=5.0, maxgap_h=18.0, mintime_h=0.0, thresholdcmd="")
    ref = te.stitch_paths(nodes.time, nodes.lat, nodes.lon, 5.0, 18 * 3600.0)
    got = stitch_paths(stitch_segments(nodes, cfg))
    assert got == ref
    shared = sum(len(p) for p in ref) - len({n for p in ref for n in p})
    assert shared >= 1                         # merges happen
    out = stitch_nodes(nodes, cfg)
    assert out.track_id.nunique() == len(ref) and len(out) == sum(len(p) for p in ref)


def test_stores_are_read_in_single_precision():
    """TE loads every variable as float: a float64 store's central pressure 98000.004 Pa is
    98000.0078 in single precision and is written as 9.800001e+04 (double: 9.800000e+04)."""
    times = pd.date_range("2020-08-20", periods=4, freq="6h")
    ds = truth_store(times, lambda k: [dict(lat=16.0, lon=300.0, dp=3000.0, vmax=25.0)])
    i, j = int(np.nonzero(ds.latitude.values == 16.0)[0][0]), int(np.nonzero(ds.longitude.values == 300.0)[0][0])
    assert ds.mean_sea_level_pressure.dtype == np.float64
    ds["mean_sea_level_pressure"][:, i, j] = 98000.004
    tracks = track_truth(ds, stitch=StitchConfig(mintime_h=12.0, thresholdcmd=""), progress=False)
    assert len(tracks) == 4
    assert (tracks.msl == float("%3.6e" % np.float32(98000.004))).all()
    assert float("%3.6e" % np.float32(98000.004)) != float("%3.6e" % 98000.004)

"""Tracker tests: closed contours vs a plain breadth-first search, detection on hand-built
vortices, merge, stitching rules, dateline, southern hemisphere, forecast stores, files."""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pytest
from tests.aeris.evaluate import te_reference as te
from tests.support.tracks import fields, forecast_store, grid, moving_storm, truth_store

from aeris.evaluate.config import DetectConfig, StitchConfig, TrackConfig, relaxed_stitch
from aeris.evaluate.contours import (LatLonGrid, closed_contour, great_circle_deg,
                                     great_circle_km, initial_bearing_deg, local_minima)
from aeris.evaluate.tracker import (G0, Leaf, TrackerError, _merge, detect_nodes, parse_expr,
                                    parse_thresholds, read_tracks, required_leaves,
                                    stitch_nodes, track_forecast, track_store, track_truth,
                                    write_tracks)


# ---- references ------------------------------------------------------------------------------
def bfs_closed_contour(f, lat, lon, i, j, delta, dist, minmaxdist, wrap):
    """Literal breadth-first search of docs/evaluation.md, "Cyclone tracker" (independent of the
    vectorised one), with TempestExtremes' distances (`te_reference`)."""
    ny, nx = f.shape
    sign = 1 if delta > 0 else -1
    pi, pj = i, j
    if minmaxdist > 0:
        d = np.array([[te.gcd_deg(te.grid_rad(b), te.grid_rad(a), te.grid_rad(lon[j]), te.grid_rad(lat[i]))
                       for b in lon] for a in lat])
        cand = np.where(d <= minmaxdist, sign * f, np.inf)
        a, b = np.unravel_index(np.argmin(cand), f.shape)
        if cand[a, b] < sign * f[i, j]:
            pi, pj = a, b
    ref = f[pi, pj]
    queue, seen = deque([(pi, pj)]), set()
    while queue:
        a, b = queue.popleft()
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if te.contour_deg(te.grid_rad(lat[pi]), te.grid_rad(lon[pj]), te.grid_rad(lat[a]), te.grid_rad(lon[b])) > dist:
            return False
        if sign * (f[a, b] - ref) >= abs(delta):
            continue
        nbs = [(a - 1, b), (a + 1, b)]
        nbs += [(a, (b + 1) % nx), (a, (b - 1) % nx)] if wrap else [(a, b + 1), (a, b - 1)]
        for c, d in nbs:
            if 0 <= c < ny and 0 <= d < nx and (c, d) not in seen:
                queue.append((c, d))
    return True


def smooth_random_field(lat, lon, rng, n=25):
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    f = np.zeros_like(LA)
    for _ in range(n):
        c_lat, c_lon = rng.uniform(-90, 90), rng.uniform(0, 360)
        f += rng.normal(0, 400) * np.exp(-(great_circle_deg(c_lat, c_lon, LA, LO) / rng.uniform(3, 15)) ** 2)
    return f + rng.normal(0, 20, f.shape)


# ---- geometry --------------------------------------------------------------------------------
def test_great_circle_and_bearing_known_values():
    assert great_circle_deg(0, 0, 0, 90) == pytest.approx(90)
    assert great_circle_deg(89, 0, 89, 180) == pytest.approx(2.0)          # over the pole
    assert great_circle_deg(10, 359.5, 10, 0.5) == pytest.approx(great_circle_deg(10, -0.5, 10, 0.5))
    assert great_circle_km(0, 0, 1, 0) == pytest.approx(6371 * np.pi / 180)
    assert initial_bearing_deg(0, 0, 1, 0) == pytest.approx(0)
    assert initial_bearing_deg(0, 0, 0, 1) == pytest.approx(90)
    assert initial_bearing_deg(0, 1, 0, 0) == pytest.approx(270)


def test_local_minima_wraps_longitude_and_not_across_poles():
    f = np.full((4, 5), 10.0)
    f[1, 0] = 1.0                       # east neighbour of column 4 across the seam
    f[1, 4] = 2.0
    m = local_minima(f, wrap_lon=True)
    assert m[1, 0] and not m[1, 4]
    assert not local_minima(f, wrap_lon=False)[1, 1]
    assert local_minima(f, wrap_lon=False)[1, 4]   # no neighbour across the edge without wrap
    g = np.arange(20.0).reshape(4, 5)[::-1].copy()  # decreasing northward... lowest row 3? no: row 3 = 0..4
    assert local_minima(g, wrap_lon=False)[3, 0] and local_minima(g, wrap_lon=False).sum() == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_contour_matches_breadth_first_search(seed):
    rng = np.random.default_rng(seed)
    lat, lon = grid(5.0)
    f = smooth_random_field(lat, lon, rng)
    g = LatLonGrid(lat, lon)
    pts = list(zip(*np.nonzero(local_minima(f))))
    pts += [(0, 3), (1, 71), (36, 0), (35, 70)]  # pole rows and the seam
    n_pass = n_fail = 0
    for (i, j) in pts:
        for delta, dist, mmd in [(200.0, 12.0, 0.0), (100.0, 20.0, 6.0), (-150.0, 15.0, 0.0),
                                 (-80.0, 25.0, 7.0)]:
            got = closed_contour(f, g, int(i), int(j), delta, dist, mmd)
            ref = bfs_closed_contour(f, lat, lon, int(i), int(j), delta, dist, mmd, True)
            assert got == ref, (i, j, delta, dist, mmd)
            n_pass += ref
            n_fail += not ref
    assert n_pass > 5 and n_fail > 5   # both outcomes exercised


def test_closed_contour_regional_grid_without_wrap():
    rng = np.random.default_rng(5)
    lat = np.arange(60.0, -61.0, -3.0)
    lon = np.arange(100.0, 250.0, 3.0)
    f = smooth_random_field(lat, lon, rng)
    g = LatLonGrid(lat, lon)
    assert not g.wraps
    for (i, j) in zip(*np.nonzero(local_minima(f, wrap_lon=False))):
        assert closed_contour(f, g, int(i), int(j), 150.0, 15.0) == \
            bfs_closed_contour(f, lat, lon, int(i), int(j), 150.0, 15.0, 0.0, False)


def test_closed_contour_fails_when_the_low_opens_into_a_trough():
    lat, lon = grid(1.0)
    g = LatLonGrid(lat, lon)
    msl, *_ = fields(lat, lon, [dict(lat=20.0, lon=200.0, dp=2000.0)])
    i, j = 70, 200
    assert closed_contour(msl, g, i, j, 200.0, 5.5)
    trough = msl.copy()
    trough[i, j:j + 12] = msl[i, j] + 50.0          # a channel of low pressure leading east
    assert not closed_contour(trough, g, i, j, 200.0, 5.5)
    shallow, *_ = fields(lat, lon, [dict(lat=20.0, lon=200.0, dp=150.0)])
    assert not closed_contour(shallow, g, i, j, 200.0, 5.5)      # never deepens by 200 Pa
    broad, *_ = fields(lat, lon, [dict(lat=20.0, lon=200.0, dp=250.0, R=6.0)])
    assert not closed_contour(broad, g, i, j, 200.0, 5.5)        # 200 Pa reached at ~7.6 deg
    assert closed_contour(broad, g, i, j, 200.0, 12.0) == \
        bfs_closed_contour(broad, lat, lon, i, j, 200.0, 12.0, 0.0, True)


# ---- DetectNodes -----------------------------------------------------------------------------
def _leaves(lat, lon, storms, zs=None):
    msl, z3, z5, u, v = fields(lat, lon, storms)
    return {Leaf("mean_sea_level_pressure"): msl, Leaf("geopotential", 300): z3,
            Leaf("geopotential", 500): z5, Leaf("10m_u_component_of_wind"): u,
            Leaf("10m_v_component_of_wind"): v,
            Leaf("geopotential_at_surface", None, 1 / G0): np.zeros_like(msl) if zs is None else zs}


def test_required_leaves_of_published_config():
    assert required_leaves(DetectConfig()) == set(_leaves(*grid(10.0), []))


def test_warm_core_vortex_detected_with_outputs():
    lat, lon = grid(1.0)
    f = _leaves(lat, lon, [dict(lat=15.0, lon=300.0, dp=2000.0, dz=300.0, vmax=30.0)])
    nodes = detect_nodes(f, LatLonGrid(lat, lon), DetectConfig())
    assert len(nodes) == 1
    n = nodes.iloc[0]
    assert (n.lat, n.lon) == (15.0, 300.0)
    assert n.msl == pytest.approx(f[Leaf("mean_sea_level_pressure")].min())
    # max wind within 2 degrees: the ring at 1.5 deg reaches 30 m/s on a 1-degree grid only at
    # grid points, so compare with the brute-force maximum over points within 2 degrees
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    near = great_circle_deg(15.0, 300.0, LA, LO) <= 2.0
    assert n.wind == pytest.approx(f[Leaf("10m_u_component_of_wind")][near].max())
    assert n.zs == 0.0


def test_cold_core_low_rejected_and_search_by_max():
    lat, lon = grid(1.0)
    g = LatLonGrid(lat, lon)
    cold = _leaves(lat, lon, [dict(lat=15.0, lon=300.0, dp=2000.0, dz=-300.0)])
    assert detect_nodes(cold, g, DetectConfig()).empty
    only_msl = DetectConfig(closedcontourcmd="MSL,200.0,5.5,0")
    assert len(detect_nodes(cold, g, only_msl)) == 1
    # searchbymax on the thickness finds the warm core
    warm = _leaves(lat, lon, [dict(lat=-25.0, lon=10.0, dz=300.0)])
    bymax = DetectConfig(searchbymin="", searchbymax="_DIFF(Z(300hPa),Z(500hPa))",
                         closedcontourcmd="_DIFF(Z(300hPa),Z(500hPa)),-58.8,6.5,0")
    nodes = detect_nodes(warm, g, bymax)
    assert list(zip(nodes.lat, nodes.lon)) == [(-25.0, 10.0)]


def test_southern_hemisphere_and_latitude_limits():
    lat, lon = grid(1.0)
    g = LatLonGrid(lat, lon)
    f = _leaves(lat, lon, [dict(lat=-18.0, lon=150.0), dict(lat=22.0, lon=240.0)])
    nodes = detect_nodes(f, g, DetectConfig())
    assert sorted(zip(nodes.lat, nodes.lon)) == [(-18.0, 150.0), (22.0, 240.0)]
    south = detect_nodes(f, g, DetectConfig(maxlat=0.0))
    assert list(zip(south.lat, south.lon)) == [(-18.0, 150.0)]
    # longitude window across 0E keeps neither (150E and 240E are outside 300E..60E)
    assert detect_nodes(f, g, DetectConfig(minlon=300.0, maxlon=60.0)).empty


def test_merge_drops_shallower_neighbour_only_within_mergedist():
    lat, lon = grid(1.0)
    g = LatLonGrid(lat, lon)
    pair = [dict(lat=15.0, lon=300.0, dp=2500.0, R=1.5), dict(lat=15.0, lon=305.0, dp=2000.0, R=1.5)]
    only = DetectConfig(closedcontourcmd="MSL,200.0,5.5,0")
    nodes = detect_nodes(_leaves(lat, lon, pair), g, only)
    assert list(zip(nodes.lat, nodes.lon)) == [(15.0, 300.0)]
    nodes = detect_nodes(_leaves(lat, lon, pair), g, DetectConfig(closedcontourcmd="MSL,200.0,5.5,0",
                                                                  mergedist=4.0))
    assert sorted(zip(nodes.lat, nodes.lon)) == [(15.0, 300.0), (15.0, 305.0)]


def test_merge_is_not_transitive():
    lat = np.zeros(3)
    lon = np.array([0.0, 5.0, 10.0])
    # B is dropped by A; C is dropped by B even though B itself is dropped
    assert _merge(np.array([1.0, 2.0, 3.0]), lat, lon, 6.0).tolist() == [True, False, False]
    # C is deeper than B: C kept, B dropped (by A and C)
    assert _merge(np.array([1.0, 3.0, 2.0]), lat, lon, 6.0).tolist() == [True, False, True]
    # equal depth: neither strictly deeper, both kept
    assert _merge(np.array([1.0, 1.0, 5.0]), lat, lon, 6.0).tolist() == [True, True, False]
    # across the dateline
    assert _merge(np.array([1.0, 2.0]), np.zeros(2), np.array([358.0, 2.0]), 6.0).tolist() == [True, False]


# ---- StitchNodes -----------------------------------------------------------------------------
def _nodes(rows):
    return pd.DataFrame(rows, columns=["time", "lat", "lon", "wind", "zs"]).assign(
        time=lambda d: pd.to_datetime(d.time))


def _loose(**kw):
    return StitchConfig(**{"mintime_h": 0.0, "thresholdcmd": "", "range": 8.0, "maxgap_h": 24.0, **kw})


def test_stitch_links_nearest_and_respects_range_gap_and_merges():
    t = pd.date_range("2020-01-01", periods=8, freq="6h")
    rows = [(t[0], 10, 100, 20, 0), (t[1], 10, 102, 20, 0), (t[2], 10, 104, 20, 0),
            # gap of 24 h (3 missing steps), then continue: linked (maxgap 24 h)
            (t[6], 10, 110, 20, 0),
            # a second storm far away
            (t[0], -20, 30, 20, 0), (t[1], -20, 31, 20, 0),
            # at t[2] two nodes near it: the nearest (31.5, not 29.5) is linked, the other
            # starts no path (it has no successor)
            (t[2], -20, 31.5, 20, 0), (t[2], -20, 29.0, 20, 0)]
    out = stitch_nodes(_nodes(rows), _loose(range=8.0))
    tracks = {tid: list(zip(g.lat, g.lon)) for tid, g in out.groupby("track_id")}
    assert sorted(tracks.values()) == sorted([[(10, 100), (10, 102), (10, 104), (10, 110)],
                                              [(-20, 30), (-20, 31), (-20, 31.5)]])
    # maxgap 18 h: the 24-h gap is not bridged; a lone node is no path (TE: paths have >= 2 nodes)
    short = stitch_nodes(_nodes(rows), _loose(maxgap_h=18.0))
    assert sorted(len(g) for _, g in short.groupby("track_id")) == [3, 3]
    # range 1.5 degrees: the 2-degree steps of the first storm (1.97 great-circle degrees at
    # 10N) are not linked, the second storm's steps (0.94, 0.47) are
    narrow = stitch_nodes(_nodes(rows), _loose(range=1.5))
    assert sorted(len(g) for _, g in narrow.groupby("track_id")) == [3]
    # nearest first: when the nearest node of the next time is out of range, the next time is
    # tried (not the second-nearest node of that time)
    skip = _nodes([(t[0], 0, 0, 20, 0), (t[1], 0, 9, 20, 0), (t[1], 0, 20, 20, 0), (t[2], 0, 356, 20, 0)])
    assert [list(g.lon) for _, g in stitch_nodes(skip, _loose()).groupby("track_id")] == [[0.0, 356.0]]
    # two nodes at t0 both nearest to one node at t1 (a merge): the first path continues, the
    # second ends on the shared node (TE's GeneratePathsBasic)
    fc = _nodes([(t[0], 0, 0, 20, 0), (t[0], 0, 3, 20, 0), (t[1], 0, 1.5, 20, 0), (t[2], 0, 3, 20, 0)])
    out = stitch_nodes(fc, _loose())
    paths = [list(g.lon) for _, g in out.groupby("track_id")]
    assert paths == [[0.0, 1.5, 3.0], [3.0, 1.5]]


def test_stitch_mintime_and_threshold_counts():
    t = pd.date_range("2020-01-01", periods=12, freq="6h")
    winds = [5, 12, 5, 12, 12, 5, 5, 5, 5, 5, 5, 5]
    rows = [(t[k], 15, 300 - k, winds[k], 0) for k in range(12)]
    n = _nodes(rows)
    assert stitch_nodes(n, _loose(mintime_h=66.0)).track_id.nunique() == 1      # 66 h long
    assert stitch_nodes(n, _loose(mintime_h=66.5)).empty
    assert stitch_nodes(n, _loose(thresholdcmd="wind,>=,10,3")).track_id.nunique() == 1
    assert stitch_nodes(n, _loose(thresholdcmd="wind,>=,10,4")).empty           # not consecutive: 3
    assert stitch_nodes(n, _loose(thresholdcmd="lat,<=,50,all;zs,<=,150,last")).track_id.nunique() == 1
    assert stitch_nodes(n, _loose(thresholdcmd="wind,>,10,first")).empty
    with pytest.raises(TrackerError, match="threshold column"):
        stitch_nodes(n, _loose(thresholdcmd="vort,>=,1,1"))


def test_parsers_and_config_errors():
    e = parse_expr("_DIFF(Z(300hPa),z500)")
    assert e.leaves() == {Leaf("geopotential", 300), Leaf("geopotential", 500)}
    assert parse_expr("_VECMAG(U10,V10)").evaluate(
        {Leaf("10m_u_component_of_wind"): np.array(3.0), Leaf("10m_v_component_of_wind"): np.array(4.0)}) == 5.0
    with pytest.raises(TrackerError, match="unknown variable"):
        parse_expr("VORT(850hPa)")
    with pytest.raises(TrackerError, match="needs a level"):
        parse_expr("Z")
    with pytest.raises(TrackerError, match="takes 2"):
        parse_expr("_DIFF(MSL)")
    assert parse_thresholds("wind,>=,10.0,10")[0].count == 10
    with pytest.raises(ValueError):
        DetectConfig(outputcmd="MSL,min,0")          # 1 output, 3 names
    with pytest.raises(ValueError):
        StitchConfig(thresholdcmd="wind,~,1,1")


# ---- whole stores ----------------------------------------------------------------------------
@pytest.mark.parametrize("lon0", [350.0, 170.0])
def test_track_across_the_grid_seam_and_the_dateline(tmp_path, lon0):
    times = pd.date_range("2020-08-20", periods=14, freq="6h")
    ds = truth_store(times, moving_storm(15.0, lon0, 0.5, 1.5, vmax=25.0))
    tracks = track_truth(ds, progress=False)
    assert tracks.track_id.nunique() == 1 and len(tracks) == 14
    exp_lon = (lon0 + 1.5 * np.arange(14)) % 360
    exp_lat = 15.0 + 0.5 * np.arange(14)
    # nodes are grid points (2 degrees): within one cell of the analytic centre
    assert np.all(great_circle_deg(tracks.lat, tracks.lon, exp_lat, exp_lon) <= 1.5)
    if lon0 > 180:    # crossed 0 E, where the stored longitudes wrap
        assert tracks.lon.min() < 10 and tracks.lon.max() > 350
    else:             # crossed 180 E
        assert tracks.lon.min() < 180 < tracks.lon.max()
    assert (tracks.member == -1).all() and tracks.init.isna().all()
    for suffix in ("csv", "nc"):
        path = write_tracks(tracks, tmp_path / f"tracks.{suffix}")
        back = read_tracks(path)
        pd.testing.assert_frame_equal(back, tracks, check_dtype=False)


def test_southern_hemisphere_track_and_short_track_filtered():
    times = pd.date_range("2020-02-01", periods=12, freq="6h")
    ds = truth_store(times, lambda k: [dict(lat=-15.0 - 0.5 * k, lon=60.0 + k, vmax=20.0)]
                     + ([dict(lat=20.0, lon=300.0)] if k < 4 else []))
    tracks = track_truth(ds, progress=False)
    assert tracks.track_id.nunique() == 1
    assert (tracks.lat < -14).all()          # the 18-h northern storm is shorter than 54 h
    both = track_truth(ds, stitch=relaxed_stitch(), progress=False)
    assert both.track_id.nunique() == 2


def test_forecast_store_every_member_and_init(tmp_path):
    inits = pd.to_datetime(["2020-08-21", "2020-08-22"])

    def storms(i, m, k):
        return [dict(lat=15.0 + 0.5 * (4 * i + k), lon=300.0 - (4 * i + k) - 2.0 * m * k / 4, vmax=22.0)]

    fc = forecast_store(inits, 5, 2, storms)
    tracks = track_store(fc, progress=False)
    assert set(zip(tracks.init, tracks.member)) == {(i, m) for i in inits for m in (0, 1)}
    assert tracks.groupby(["init", "member"]).track_id.nunique().eq(1).all()
    assert tracks.track_id.nunique() == 4
    assert np.allclose(tracks.lead_h, (tracks.time - tracks.init) / pd.Timedelta("1h"))
    m1 = tracks[(tracks.member == 1) & (tracks.init == inits[0])]
    exp = np.array([storms(0, 1, k)[0]["lon"] for k in range(5)]) % 360
    assert np.all(np.abs(m1.lon.to_numpy() - exp) <= 1.0)
    # static field from another dataset when the forecast store has none
    with pytest.raises(TrackerError, match="geopotential_at_surface"):
        track_forecast(fc.drop_vars("geopotential_at_surface"), progress=False)
    again = track_forecast(fc.drop_vars("geopotential_at_surface"), static=fc[["geopotential_at_surface"]],
                           progress=False)
    pd.testing.assert_frame_equal(again, tracks)


def test_missing_variable_or_level_is_named():
    times = pd.date_range("2020-08-20", periods=2, freq="6h")
    ds = truth_store(times, lambda k: [])
    with pytest.raises(TrackerError, match="10m_u_component_of_wind"):
        track_truth(ds.drop_vars("10m_u_component_of_wind"), progress=False)
    with pytest.raises(TrackerError, match="300 hPa"):
        track_truth(ds.sel(level=[500, 850]), progress=False)


def test_land_storm_removed_by_surface_height_threshold():
    times = pd.date_range("2020-08-20", periods=12, freq="6h")
    lat, lon = grid(2.0)
    zs = np.where((np.abs(lat[:, None] - 15) < 8) & (np.abs(lon[None, :] - 300) < 12), 500 * G0, 0.0)
    ds = truth_store(times, moving_storm(15.0, 300.0, 0.0, -0.5), zs=zs)
    assert track_truth(ds, progress=False).empty
    assert len(track_truth(ds.assign(geopotential_at_surface=0 * ds.geopotential_at_surface),
                           progress=False)) == 12


def test_track_config_is_a_config_section():
    from aeris.config import load_config
    cfg = load_config(None, ["track.detect.mergedist=4.0", "track.stitch_forecast.mintime_h=6"])
    assert isinstance(cfg.track, TrackConfig)
    assert cfg.track.detect.mergedist == 4.0 and cfg.track.stitch_forecast.mintime_h == 6.0
    assert cfg.track.stitch.mintime_h == 54.0


def test_output_radius_adapts_to_coarse_grids():
    from aeris.evaluate.tracker import output_radius
    coarse = LatLonGrid(np.linspace(90, -90, 65), np.arange(128) * 2.8125)
    assert output_radius(2.0, coarse) == pytest.approx(4.5)
    assert output_radius(2.0, coarse, adapt=False) == 2.0 and output_radius(0.0, coarse) == 0.0
    assert output_radius(2.0, LatLonGrid(*grid(1.0))) == 2.0          # ERA5-like grids unchanged
    lat, lon = coarse.lat, coarse.lon
    f = _leaves(lat, lon, [dict(lat=19.6875, lon=300.9375, dp=3000.0, dz=500.0, R=4.0)])
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    r = great_circle_deg(19.6875, 300.9375, LA, LO)
    f[Leaf("10m_u_component_of_wind")] = 30.0 * np.clip(r / 3.0, 0, 1) * np.exp(1 - np.maximum(r, 3.0) / 3.0)
    wide = detect_nodes(f, coarse, DetectConfig())
    narrow = detect_nodes(f, coarse, DetectConfig(adapt_to_grid=False))
    assert len(wide) == len(narrow) == 1
    assert narrow.wind.iloc[0] < 5.0 < 20.0 < wide.wind.iloc[0]       # calm centre vs the wind ring


def _season(tmp_path, n_lat: int, n_lon: int, stitches: dict):
    """Detection over the WHOLE default synthetic period (2020-08-01 .. 09-30, real IBTrACS
    storms implanted) on an n_lat x n_lon store: per stitching preset, POD against the
    implanted storms that last >= 24 h at tropical-storm strength (>= 34 kt), FAR against all
    implanted storms (a track of a weaker implanted storm is no false alarm), and the mean
    position error of the matched nodes (docs/evaluation.md, "Detection on the synthetic reanalysis")."""
    synthetic = pytest.importorskip("aeris.data.synthetic")
    from aeris.data.config import SynthConfig
    from aeris.data.store import open_store
    from aeris.evaluate.verify import pod_far
    cfg = SynthConfig(out=str(tmp_path / f"synth{n_lat}.zarr"), n_lat=n_lat, n_lon=n_lon)
    assert (cfg.start, cfg.end) == ("2020-08-01", "2020-09-30T18:00")       # the whole period
    path = synthetic.write_synthetic(cfg, progress=False)
    truth = synthetic.read_storm_truth(path)
    ts = truth[truth.wind_kt >= 34].groupby("sid").size()
    obs = truth[truth.sid.isin(ts[ts >= 4].index)]
    out = {}
    for name, stitch in stitches.items():
        tracks = track_truth(open_store(path), stitch=stitch, progress=False)
        pod = pod_far(tracks, obs)
        far = pod_far(tracks, truth)
        m = tracks.merge(obs, on="time", suffixes=("", "_obs"))
        m["km"] = great_circle_km(m.lat, m.lon, m.lat_obs, m.lon_obs)
        err = m.groupby(["track_id", "time"]).km.min()
        out[name] = dict(pod=pod["pod"], hits=pod["n_hits"], n_obs=pod["n_observed"], far=far["far"],
                         n_det=far["n_detected"], err_km=float(err[err <= 300].mean()))
        print(f"{n_lat}x{n_lon} {name}: POD {pod['pod']:.2f} ({pod['n_hits']}/{pod['n_observed']} storms "
              f">= 24 h at TS), FAR {far['far']:.2f} ({far['n_false_alarms']}/{far['n_detected']}), "
              f"mean position error {out[name]['err_km']:.0f} km")
    return out


def test_synthetic_season_storms_recovered_on_the_demo_grid(tmp_path):
    """65x128 (2.8125 degrees), relaxed stitching, whole period: measured POD 1.00 (34/34), FAR 0."""
    res = _season(tmp_path, 65, 128, {"relaxed": relaxed_stitch()})["relaxed"]
    assert res["n_obs"] >= 30
    assert res["pod"] >= 0.9 and res["far"] <= 0.1
    assert res["err_km"] <= 2.8125 * np.pi / 180 * 6371 / 2          # within half a grid cell


@pytest.mark.slow
def test_synthetic_season_storms_recovered_at_both_resolutions(tmp_path):
    """Published and relaxed stitching at 65x128 and 129x256 (docs/evaluation.md, measured:
    published POD 0.79 / 0.91, relaxed 1.00 / 1.00, FAR 0 everywhere)."""
    from aeris.evaluate.config import published_stitch
    presets = {"published": published_stitch(), "relaxed": relaxed_stitch()}
    coarse = _season(tmp_path, 65, 128, presets)
    fine = _season(tmp_path, 129, 256, presets)
    assert coarse["relaxed"]["pod"] >= 0.9 and fine["relaxed"]["pod"] >= 0.95
    assert coarse["published"]["pod"] >= 0.65 and fine["published"]["pod"] >= 0.85
    assert all(r["far"] <= 0.1 for r in (*coarse.values(), *fine.values()))
    assert fine["relaxed"]["err_km"] < coarse["relaxed"]["err_km"]

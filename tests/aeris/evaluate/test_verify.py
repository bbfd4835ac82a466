"""Verification maths on known tracks: shifted tracks give the shift, along/cross signs,
intensity units, ensemble mean on the sphere, strike probability vs brute force, POD/FAR
cross-checked with huracanpy.assess."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aeris.evaluate.besttrack import KT_PER_MS
from aeris.evaluate.config import VerifyConfig
from aeris.evaluate.contours import EARTH_RADIUS_KM, great_circle_km
from aeris.evaluate.verify import (ensemble_mean_track, match_detections, match_storm,
                                   member_errors, motion_bearing, pod_far, position_errors,
                                   strike_probability, verify_storm)

KM = np.degrees(1.0 / EARTH_RADIUS_KM)   # degrees of latitude per km
INIT = pd.Timestamp("2020-08-21")


def best_track(n=12, lat0=20.0, lon0=300.0, dlon=-1.0, dlat=0.0, sid="S1"):
    t = pd.date_range(INIT, periods=n, freq="6h")
    return pd.DataFrame({"sid": sid, "name": "", "time": t, "lat": lat0 + dlat * np.arange(n),
                         "lon": (lon0 + dlon * np.arange(n)) % 360, "wind_kt": 100.0,
                         "msl_hpa": 960.0, "basin": "NA"})


def fc_from(best, member, dlat_km=0.0, track_id=0, init=INIT, msl=95000.0, wind=50.0, n=None):
    b = best.iloc[:n] if n else best
    return pd.DataFrame({"track_id": track_id, "init": init, "member": member, "time": b.time.values,
                         "lead_h": (b.time - init) / pd.Timedelta("1h"), "lat": b.lat + dlat_km * KM,
                         "lon": b.lon.values, "msl": msl, "wind": wind})


def test_position_error_signs():
    # observed storm moving west (270); forecast 100 km north = right of track
    d, along, cross = position_errors(20 + 100 * KM, 300.0, 20.0, 300.0, 270.0)
    assert d == pytest.approx(100.0) and cross == pytest.approx(100.0) and along == pytest.approx(0.0, abs=1e-9)
    # forecast west of the observed = ahead of a westward storm
    d, along, cross = position_errors(20.0, 299.0, 20.0, 300.0, 270.0)
    assert along == pytest.approx(d, rel=1e-4) and abs(cross) < 0.01 * d
    # northward storm, forecast to the east = right; to the south = behind
    assert position_errors(0.0, 1.0, 0.0, 0.0, 0.0)[2] == pytest.approx(great_circle_km(0, 0, 0, 1))
    assert position_errors(-1.0, 0.0, 0.0, 0.0, 0.0)[1] == pytest.approx(-great_circle_km(0, 0, 1, 0))


def test_motion_bearing_centred_difference():
    b = best_track(dlon=-1.0)
    assert np.allclose(motion_bearing(b), 270.0, atol=0.5)
    assert np.allclose(motion_bearing(best_track(dlon=0.0, dlat=1.0)), 0.0)


def test_track_shifted_100_km_gives_100_km_and_intensity_units():
    best = best_track()
    tracks = pd.concat([fc_from(best, 0, +100.0), fc_from(best, 1, -100.0, track_id=1)])
    err = member_errors(match_storm(tracks, best), best)
    assert len(err) == 24
    np.testing.assert_allclose(err.pos_err_km, 100.0, rtol=1e-9)
    m0, m1 = err[err.member == 0], err[err.member == 1]
    np.testing.assert_allclose(m0.cross_err_km, 100.0, atol=0.5)      # north of a westward storm
    np.testing.assert_allclose(m1.cross_err_km, -100.0, atol=0.5)
    np.testing.assert_allclose(err.along_err_km, 0.0, atol=1.0)
    np.testing.assert_allclose(err.msl_err_hpa, -10.0)
    np.testing.assert_allclose(err.wind_err_kt, 50.0 / 0.514444 - 100.0)
    np.testing.assert_allclose(err.wind_err_ms, 50.0 - 100.0 * 0.514444, rtol=1e-6)
    assert KT_PER_MS == pytest.approx(1 / 0.514444)
    np.testing.assert_allclose(err.lead_h, np.tile(np.arange(12) * 6.0, 2))


def test_matching_rules_pick_the_storm_not_a_neighbour():
    best = best_track()
    other = best_track(lat0=35.0, sid="S2")
    tracks = pd.concat([fc_from(other, 0, track_id=0), fc_from(best, 0, 250.0, track_id=1),
                        fc_from(best, 1, 50.0, track_id=2, n=3), fc_from(other, 1, track_id=3)])
    m = match_storm(tracks, best)
    assert m.groupby("member").track_id.first().to_dict() == {0: 1, 1: 2}
    assert match_storm(tracks, best, VerifyConfig(match_km=200.0)).member.unique().tolist() == [1]
    # first rule vs mean rule: a track starting close, then running away 620 km
    run = fc_from(best, 0, 0.0)
    run["lat"] = best.lat + np.linspace(0, 620, 12) * KM
    assert len(match_storm(run, best)) == 12
    assert match_storm(run, best, VerifyConfig(match_rule="mean")).empty    # mean 310 km


def test_ensemble_mean_on_the_sphere_spread_and_fraction():
    best = best_track(lon0=181.0, dlon=-0.5)      # crosses 180 E
    tracks = pd.concat([fc_from(best, 0, 100.0, track_id=0), fc_from(best, 1, -100.0, track_id=1),
                        fc_from(best, 2, 0.0, track_id=2, n=6)])
    ens = ensemble_mean_track(match_storm(tracks, best), n_members=4)
    assert len(ens) == 12
    d = great_circle_km(ens.lat, ens.lon, best.lat, best.lon)
    assert d.max() < 0.5                             # symmetric members average to the truth
    assert ens.frac_tracking.tolist() == [0.75] * 6 + [0.5] * 6
    np.testing.assert_allclose(ens.spread_km[6:], 100.0, rtol=1e-4)
    np.testing.assert_allclose(ens.spread_km[:6], 200.0 / 3, rtol=1e-3)
    # longitude mean across the dateline is 180, not 0
    two = pd.DataFrame({"init": INIT, "time": INIT, "lead_h": 0.0, "member": [0, 1], "lat": 0.0,
                        "lon": [179.0, 181.0], "msl": 1.0, "wind": 1.0})
    assert ensemble_mean_track(two, 2).lon.iloc[0] == pytest.approx(180.0)


def test_strike_probability_against_brute_force():
    best = best_track(n=6, dlon=-2.0)
    tracks = pd.concat([fc_from(best, 0, 0.0, track_id=0), fc_from(best, 1, 300.0, track_id=1)])
    lat = np.arange(30.0, 9.9, -0.5)
    lon = np.arange(280.0, 310.0, 0.5)
    p = strike_probability(tracks, 2, lat, lon, radius_km=120.0, hours=120.0)
    assert p.dims == ("init", "latitude", "longitude") and p.shape == (1, lat.size, lon.size)
    # brute force: each member's track sampled every ~1 km along constant-latitude segments
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    ref = np.zeros_like(LA)
    for _, tr in tracks.groupby("member"):
        fine_lon = np.linspace(tr.lon.max(), tr.lon.min(), 2000)
        fine_lat = np.full_like(fine_lon, tr.lat.iloc[0])
        dmin = np.min(great_circle_km(LA[..., None], LO[..., None], fine_lat, fine_lon), axis=-1)
        ref += dmin <= 120.0
    ref /= 2
    # great-circle vs constant-latitude segments differ by < 1 km here: only points within
    # 1 km of the 120 km circle may disagree
    LAc, LOc = LA[..., None], LO[..., None]
    edge = np.zeros_like(LA, dtype=bool)
    for _, tr in tracks.groupby("member"):
        fl = np.linspace(tr.lon.max(), tr.lon.min(), 2000)
        dd = np.min(great_circle_km(LAc, LOc, np.full_like(fl, tr.lat.iloc[0]), fl), axis=-1)
        edge |= np.abs(dd - 120.0) < 2.0
    assert np.array_equal(p.values[0][~edge], ref[~edge])
    assert p.sel(latitude=20.0, longitude=295.0).item() == 0.5       # on member 0's track only
    assert p.max() == 0.5 and p.min() == 0.0
    short = strike_probability(tracks, 2, lat, lon, hours=12.0)      # leads 0, 6, 12 only
    assert short.sel(latitude=20.0, longitude=292.0).item() == 0.0


def test_pod_far_against_huracanpy():
    import huracanpy
    obs = pd.concat([best_track(sid="A"), best_track(lat0=-15.0, lon0=60.0, dlon=1.0, sid="B"),
                     best_track(lat0=40.0, lon0=200.0, sid="C")])
    det = pd.concat([fc_from(best_track(sid="A"), -1, 80.0, track_id=0, init=pd.NaT),
                     fc_from(best_track(lat0=-15.0, lon0=60.0, dlon=1.0), -1, -150.0, track_id=1, init=pd.NaT, n=4),
                     fc_from(best_track(lat0=0.0, lon0=100.0), -1, 0.0, track_id=2, init=pd.NaT)])
    res = pod_far(det, obs)
    assert (res["pod"], res["far"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert sorted(zip(res["pairs"].track_id, res["pairs"].sid)) == [(0, "A"), (1, "B")]

    def to_xr(df, idcol):
        return df.rename(columns={idcol: "track_id"})[["track_id", "time", "lat", "lon"]].reset_index(
            drop=True).rename_axis("record").to_xarray()

    ref_obs, ref_det = to_xr(obs, "sid"), to_xr(det, "track_id")
    m = huracanpy.assess.match([ref_det, ref_obs], names=["det", "obs"], max_dist=300, min_overlap=1)
    assert huracanpy.assess.pod(m, ref_obs, "obs") == pytest.approx(res["pod"])
    assert huracanpy.assess.far(m, ref_det, "det") == pytest.approx(res["far"])
    strict = match_detections(det, obs, 300.0, min_overlap=5)
    assert strict.sid.tolist() == ["A"]


def test_verify_storm_tables():
    best = best_track()
    tracks = pd.concat([fc_from(best, m, 50.0 * m, track_id=m) for m in range(3)])
    out = verify_storm(tracks, best, strike_grid=(np.arange(30.0, 10.0, -1.0), np.arange(280.0, 310.0)))
    by = out["by_lead"]
    assert len(by) == 12 and by.frac_tracking.eq(1.0).all()
    np.testing.assert_allclose(by.pos_err_km, 50.0, rtol=1e-6)            # (0 + 50 + 100) / 3
    np.testing.assert_allclose(by.ensmean_pos_err_km, 50.0, rtol=1e-3)    # mean track at +50 km
    with pytest.raises(ValueError, match="one best-track storm"):
        verify_storm(tracks, pd.concat([best, best.assign(sid="X")]))


def test_aeris_track_cli_end_to_end(tmp_path):
    """Truth + forecast zarr stores with a storm on Laura's real best track -> `aeris track`."""
    from tests.support.tracks import forecast_store, truth_store

    from aeris.cli import main
    from aeris.evaluate.besttrack import load_ibtracs, select_storms
    from aeris.evaluate.tracker import read_tracks
    laura = select_storms(load_ibtracs(), sid="2020233N14313")
    laura = laura[(laura.time >= "2020-08-21") & (laura.time <= "2020-08-26T18")].reset_index(drop=True)
    pos = laura.set_index("time")[["lat", "lon"]]
    truth = truth_store(laura.time, lambda k: [dict(lat=laura.lat[k], lon=laura.lon[k], vmax=25.0)])
    init = pd.Timestamp("2020-08-23")

    def storms(i, m, k):
        p = pos.loc[init + pd.Timedelta(hours=6 * k)]
        return [dict(lat=p.lat + 2.0 * m * k / 8, lon=p.lon, vmax=20.0)]

    fc = forecast_store([init], 9, 2, storms).drop_vars("geopotential_at_surface")
    truth.to_zarr(tmp_path / "truth.zarr")
    fc.to_zarr(tmp_path / "fc.zarr")
    out = tmp_path / "out"
    rc = main(["track", "--truth", str(tmp_path / "truth.zarr"), str(tmp_path / "fc.zarr"),
               "track.verify.strike_resolution=2.0", "--out", str(out), "--storm", "2020233N14313", "-q"])
    assert rc == 0
    ft = read_tracks(out / "tracks_fc.nc")
    assert sorted(ft.member.unique()) == [0, 1] and (ft.init == init).all()
    d = out / "2020233N14313" / "fc"
    by = pd.read_csv(d / "errors_by_lead.csv")
    assert by.frac_tracking.eq(1.0).all() and len(by) == 9
    # member 0 sits on the best track (grid of 2 degrees: < 1.5 deg off), member 1 drifts north
    mem = pd.read_csv(d / "member_errors.csv")
    assert mem[mem.member == 0].pos_err_km.max() < 170
    m1 = mem[mem.member == 1].sort_values("lead_h")
    assert m1.pos_err_km.iloc[-1] > 150 and (m1.cross_err_km.iloc[-4:] > 0).all()  # right of a WNW track
    for png in ("track_map", "intensity", "errors_by_lead", "strike_probability"):
        assert (d / f"{png}.png").stat().st_size > 10_000
    assert (out / "detection_truth.json").exists()
    an = pd.read_csv(out / "2020233N14313" / "analysis_truth.csv")
    assert len(an) == len(laura)
    assert main(["track", str(tmp_path / "nope.zarr"), "--out", str(out), "-q"]) == 1

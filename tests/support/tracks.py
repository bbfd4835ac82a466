"""Hand-built cyclone fields and stores for the tracker / verification / plot / notebook tests.

A storm is a Gaussian MSL depression (depth `dp` Pa, radius `R` degrees) with a Z300-Z500
thickness anomaly `dz` m2 s-2 (> 0 warm core, < 0 cold core) and a ring of 10 m wind peaking
`vmax` m/s at 1.5 degrees from the centre, on a smooth background that has no closed lows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from aeris.evaluate.contours import great_circle_deg


def grid(step: float = 2.0, poles: bool = True):
    lat = np.arange(90.0, -90.0 - 1e-9, -step) if poles else np.arange(90 - step / 2, -90, -step)
    lon = np.arange(0.0, 360.0, step)
    return lat, lon


def fields(lat, lon, storms, noise=0.0, rng=None):
    """2-D fields (msl, z300, z500, u10, v10) for a list of storm dicts (lat, lon, dp, dz, R, vmax)."""
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    msl = 101000.0 + 300.0 * np.sin(np.radians(2 * LA)) * np.cos(np.radians(LO))
    z500 = 55000.0 + 0.0 * LA
    z300 = 90000.0 + 200.0 * np.cos(np.radians(LA))
    wind = np.zeros_like(LA)
    for s in storms:
        r = great_circle_deg(s["lat"], s["lon"], LA, LO)
        R = s.get("R", 3.0)
        msl = msl - s.get("dp", 2000.0) * np.exp(-(r / R) ** 2)
        z300 = z300 + s.get("dz", 300.0) * np.exp(-(r / R) ** 2)
        wind = np.maximum(wind, s.get("vmax", 25.0) * np.exp(-((r - 1.5) / 1.5) ** 2))
    if noise and rng is not None:
        msl = msl + noise * rng.standard_normal(msl.shape)
    return msl, z300, z500, wind, np.zeros_like(wind)


def truth_store(times, storms_at, step: float = 2.0, zs=None) -> xr.Dataset:
    """Canonical-layout store; storms_at(time_index) -> list of storm dicts."""
    lat, lon = grid(step)
    nt = len(times)
    msl = np.empty((nt, lat.size, lon.size))
    z = np.empty((nt, 3, lat.size, lon.size))
    u = np.empty_like(msl)
    v = np.empty_like(msl)
    for k in range(nt):
        m, z3, z5, uu, vv = fields(lat, lon, storms_at(k))
        msl[k], z[k, 0], z[k, 1], z[k, 2], u[k], v[k] = m, z3, z5, z5 - 40000, uu, vv
    zs = np.zeros((lat.size, lon.size)) if zs is None else zs
    return xr.Dataset(
        {"mean_sea_level_pressure": (("time", "latitude", "longitude"), msl, {"units": "Pa"}),
         "geopotential": (("time", "level", "latitude", "longitude"), z, {"units": "m**2 s**-2"}),
         "10m_u_component_of_wind": (("time", "latitude", "longitude"), u, {"units": "m s**-1"}),
         "10m_v_component_of_wind": (("time", "latitude", "longitude"), v, {"units": "m s**-1"}),
         "geopotential_at_surface": (("latitude", "longitude"), zs, {"units": "m**2 s**-2"})},
        coords={"time": pd.DatetimeIndex(times).values, "level": [300, 500, 850],
                "latitude": lat, "longitude": lon})


def moving_storm(lat0, lon0, dlat, dlon, **kw):
    """storms_at for one storm moving (dlat, dlon) degrees per step."""
    return lambda k: [dict(lat=lat0 + k * dlat, lon=(lon0 + k * dlon) % 360, **kw)]


def forecast_store(inits, n_lead: int, n_member: int, storms_for, step: float = 2.0,
                   dt_h: int = 6) -> xr.Dataset:
    """WB2 forecast layout (time = init, prediction_timedelta, number); storms_for(init index,
    member, lead index) -> list of storm dicts."""
    lat, lon = grid(step)
    shape = (len(inits), n_lead, n_member, lat.size, lon.size)
    msl, u, v = np.empty(shape), np.empty(shape), np.empty(shape)
    z = np.empty(shape[:3] + (3,) + shape[3:])
    for i in range(len(inits)):
        for m in range(n_member):
            for k in range(n_lead):
                a, z3, z5, uu, vv = fields(lat, lon, storms_for(i, m, k))
                msl[i, k, m], u[i, k, m], v[i, k, m] = a, uu, vv
                z[i, k, m, 0], z[i, k, m, 1], z[i, k, m, 2] = z3, z5, z5 - 40000
    dims = ("time", "prediction_timedelta", "number", "latitude", "longitude")
    return xr.Dataset(
        {"mean_sea_level_pressure": (dims, msl, {"units": "Pa"}),
         "geopotential": (dims[:3] + ("level",) + dims[3:], z, {"units": "m**2 s**-2"}),
         "10m_u_component_of_wind": (dims, u, {"units": "m s**-1"}),
         "10m_v_component_of_wind": (dims, v, {"units": "m s**-1"}),
         "geopotential_at_surface": (("latitude", "longitude"), np.zeros((lat.size, lon.size)))},
        coords={"time": pd.DatetimeIndex(inits).values,
                "prediction_timedelta": (np.arange(n_lead) * dt_h).astype("timedelta64[h]").astype(
                    "timedelta64[ns]"),
                "number": np.arange(n_member), "level": [300, 500, 850],
                "latitude": lat, "longitude": lon})

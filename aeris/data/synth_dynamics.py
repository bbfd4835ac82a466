"""The weather of the synthetic reanalysis: a forced-dissipative barotropic vorticity equation on
the sphere with two advected tracers (docs/data.md, "Synthetic reanalysis").

The steering-level (500 hPa) flow is a zonal climate wind U(phi, t) (the store's own zonal-mean
500 hPa wind, driven by the insolation) plus eddies of streamfunction psi (vorticity
zeta = laplacian psi). The eddy vorticity, the column temperature anomaly theta and the
log-humidity anomaly r obey

    d zeta/dt = -V . grad(zeta + zeta_U + f) - zeta / tau_d - [zeta]_0 / tau_z - nu del^8 zeta + F_zeta
    d theta/dt = -V . grad theta - v d theta_clim/dy - theta / tau_theta - w(phi) theta - nu del^8 theta + F_theta
    d r/dt = -V . grad r - v d ln rh_clim/dy - r / tau_r - nu del^8 r + F_r

with V = (U + u, v) the total 500 hPa wind, (u, v) the rotational wind of psi, zeta_U the
vorticity of U, f the Coriolis parameter and [zeta]_0 the zonal mean of zeta (the eddy-driven
zonal flow, held near the insolation-driven climate): vorticity is carried by the flow, Rossby waves
propagate with their dispersion relation (the beta and zeta_U terms), and the tracers are
carried by the same wind, their anomalies made by moving air across the climate's meridional
gradients and relaxed back to it (radiation, rain-out); w(phi) = exp(-(phi / 20 deg)^2) / 1 day
keeps tropical temperature anomalies weak (in the tropics gravity waves even out the
free-tropospheric temperature within about a day: the weak-temperature-gradient balance). F are seeded AR(1) forcings in
spherical-harmonic bands (the unpredictable part; kept weak), drawn up front.

Numerics: spectral transform at triangular truncation T on an alias-free Gaussian grid
(`aeris.data.synth_spectral`), classical Runge-Kutta 4 with the forcings linear in time
within each store step, hyperdiffusion exact per step (integrating factor). The run starts
`spinup_days` before the first store time from rest, so the store begins in a developed state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeris.data.synth_noise import ar1_series
from aeris.data.synth_physics import EARTH_RADIUS, OMEGA
from aeris.data.synth_spectral import SpectralGrid

__all__ = ["DynamicsParams", "Background", "Weather", "Model", "forcings", "integrate", "linear_balance"]


@dataclass(frozen=True)
class DynamicsParams:
    """Constants of the weather model (SI unless named)."""

    trunc: int = 21                  # triangular truncation (smallest half-wavelength ~ 950 km)
    max_step_hours: float = 3.0      # longest RK4 step (CFL-safe at T21 for winds < ~70 m/s)
    spinup_days: float = 40.0        # the eddy energy equilibrates in ~30 days from rest
    drag_days: float = 20.0          # eddy vorticity damping (friction; weak, so that eddies live long)
    zonal_days: float = 4.0          # extra relaxation of the zonal-mean (m = 0) flow to the climate
    theta_days: float = 8.0          # radiative relaxation of the column temperature anomaly
    wtg_days: float = 1.0            # and its extra relaxation in the tropics (weak temperature
    wtg_lat: float = 20.0            # gradients), e-folding in latitude (deg)
    moist_days: float = 5.0          # relaxation of the humidity anomaly (rain-out, mixing)
    hyper_hours: float = 6.0         # e-folding time of the n = T mode under del^8
    # vorticity forcing: band of total wavenumbers, rms amplitude (s-2), correlation time
    vort_band: tuple[int, int] = (7, 14)
    vort_forcing: float = 1.1e-10
    forcing_hours: float = 6.0       # short: its share of each 6-hourly change stays small
    # tracer forcings (rms tendency K/day and 1/day over the band), the small-scale variability
    tracer_band: tuple[int, int] = (8, 21)
    theta_forcing: float = 0.1
    moist_forcing: float = 0.01


@dataclass
class Background:
    """The climate seen by the eddies at each store step k (spin-up steps included), on the
    Gaussian latitudes: U[k] (m/s), dtheta_dy[k] (K/m), dlnrh_dy[k] (1/m) and the forcing
    envelope env[k] (dimensionless, latitude profile of the vorticity forcing)."""

    U: np.ndarray
    dtheta_dy: np.ndarray
    dlnrh_dy: np.ndarray
    env: np.ndarray


@dataclass
class Weather:
    """Spectral coefficients (t, m, n) at the store times: streamfunction psi (m2/s), its
    linear-balance geopotential phi (m2/s2), column temperature anomaly theta (K) and
    log-humidity anomaly r."""

    psi: np.ndarray
    phi: np.ndarray
    theta: np.ndarray
    r: np.ndarray


def _band_forcing(spec: SpectralGrid, rng: np.random.Generator, n_steps: int, band, rms: float,
                  rho: float) -> np.ndarray:
    """(n_steps, m, n) complex AR(1) coefficients, white within the band, whose grid field has
    area-mean square rms^2 (each c[m, n] with m > 0 counts twice in the Hermitian sum)."""
    sel = spec.mask & (spec.n >= band[0]) & (spec.n <= band[1])
    idx = np.nonzero(sel)
    k = len(idx[0])
    series = ar1_series(rng, n_steps, 2 * k, rho)
    coef = np.zeros((n_steps,) + spec.mask.shape, dtype=np.complex128)
    coef[(slice(None),) + idx] = series[:, :k] + 1j * series[:, k:] * (idx[0] > 0)
    weight = np.where(spec.m > 0, 2.0, 1.0)[sel]
    # E|c|^2 = 2 (m > 0) or 1 (m = 0, real part only); area-mean square = sum w |c|^2
    power = np.sum(weight * np.where(idx[0] > 0, 2.0, 1.0))
    return coef * (rms / np.sqrt(power))


def linear_balance(spec: SpectralGrid, psi: np.ndarray) -> np.ndarray:
    """Geopotential in linear balance with psi: laplacian phi = div(f grad psi)
    = f zeta - (2 Omega cos(phi) / a) u, the global mean set to zero."""
    zeta = spec.synth(spec.lap * psi)
    u = -spec.synth(psi, spec.dP) / EARTH_RADIUS
    f = 2 * OMEGA * spec.mu[:, None]
    rhs = f * zeta - (2 * OMEGA * spec.cos[:, None] / EARTH_RADIUS) * u
    return spec.inv_lap * spec.analyse(rhs)


class Model:
    """The equations of the module docstring on `spec` for the background `bg`, advanced one
    store step (dt_s seconds) at a time; a state is (3, m, n): zeta, theta, r."""

    def __init__(self, spec: SpectralGrid, params: DynamicsParams, bg: Background, dt_s: float):
        self.spec, self.params, self.bg = spec, params, bg
        self.substeps = max(1, int(np.ceil(dt_s / 3600.0 / params.max_step_hours - 1e-9)))
        self.h = dt_s / self.substeps
        day = 86400.0
        n_norm = spec.n * (spec.n + 1) / (spec.trunc * (spec.trunc + 1))
        self.hyper = np.exp(-self.h * n_norm ** 4 / (params.hyper_hours * 3600.0)) * spec.mask
        self.damp = np.array([1.0 / (params.drag_days * day), 1.0 / (params.theta_days * day),
                              1.0 / (params.moist_days * day)])[:, None, None] * np.ones((3,) + spec.mask.shape)
        self.damp[0, 0] += 1.0 / (params.zonal_days * day)
        self.beta = 2 * OMEGA * spec.cos[:, None] / EARTH_RADIUS
        self.im = 1j * spec.m
        self.a_cos = EARTH_RADIUS * spec.cos[:, None]
        # weak temperature gradients in the tropics: theta relaxes there within wtg_days
        self.wtg = (np.exp(-(spec.lat / params.wtg_lat) ** 2) / (params.wtg_days * day))[:, None]

    def _tendency(self, state, forcing, U, qy, grad_theta, grad_r):
        spec = self.spec
        psi = spec.inv_lap * state[0]
        coeffs = np.concatenate([psi[None], state])                 # psi, zeta, theta, r
        # (1/(a cos)) d/dlam and (1/a) d/dphi of the four, and theta itself, in one transform
        g = spec.synth_pair(np.concatenate([self.im * coeffs, state[1:2]]),
                            np.concatenate([coeffs, np.zeros_like(state[1:2])]))
        gx, gy = g[0, :4] / self.a_cos, g[1, :4] / EARTH_RADIUS
        u, v = -gy[0], gx[0]
        adv = (U + u) * gx[1:] + v * gy[1:]
        adv[0] += v * qy
        adv[1] += v * grad_theta + self.wtg * g[0, 4]
        adv[2] += v * grad_r
        return -spec.analyse(adv) - self.damp * state + forcing

    def advance(self, state: np.ndarray, k: int, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
        """The state one store step after step k, the forcing going linearly from f0 to f1."""
        spec, bg, h, n = self.spec, self.bg, self.h, self.substeps
        U = bg.U[k][:, None]
        # meridional gradient of the absolute vorticity of f + U (zeta_U: the m = 0 part of U's vorticity)
        qy = self.beta + spec.synth(_zonal_vorticity(spec, bg.U[k]), spec.dP) / EARTH_RADIUS
        gt, gr = bg.dtheta_dy[k][:, None], bg.dlnrh_dy[k][:, None]
        for s in range(n):
            fa, fb, fc = ((1 - a) * f0 + a * f1 for a in (s / n, (s + 0.5) / n, (s + 1) / n))
            k1 = self._tendency(state, fa, U, qy, gt, gr)
            k2 = self._tendency(state + 0.5 * h * k1, fb, U, qy, gt, gr)
            k3 = self._tendency(state + 0.5 * h * k2, fb, U, qy, gt, gr)
            k4 = self._tendency(state + h * k3, fc, U, qy, gt, gr)
            state = (state + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)) * self.hyper
        return state


def forcings(spec: SpectralGrid, params: DynamicsParams, bg: Background, dt_s: float,
             rng: np.random.Generator) -> np.ndarray:
    """(steps, 3, m, n): the AR(1) forcings of zeta (with the latitude envelope), theta and r."""
    n_steps = bg.U.shape[0]
    rho = float(np.exp(-dt_s / (params.forcing_hours * 3600.0)))
    day = 86400.0
    f_vort = _band_forcing(spec, rng, n_steps, params.vort_band, params.vort_forcing, rho)
    f_theta = _band_forcing(spec, rng, n_steps, params.tracer_band, params.theta_forcing / day, rho)
    f_moist = _band_forcing(spec, rng, n_steps, params.tracer_band, params.moist_forcing / day, rho)
    f_vort = np.stack([_enveloped(spec, f, e) for f, e in zip(f_vort, bg.env)])
    return np.stack([f_vort, f_theta, f_moist], axis=1)


def integrate(spec: SpectralGrid, params: DynamicsParams, bg: Background, n_spin: int,
              dt_s: float, rng: np.random.Generator) -> Weather:
    """Run the model over len(bg.U) - 1 store steps of dt_s seconds from rest and return the
    states at steps n_spin .. len(bg.U) - 1 (the store's times)."""
    model = Model(spec, params, bg, dt_s)
    force = forcings(spec, params, bg, dt_s, rng)
    n_steps = bg.U.shape[0]
    state = np.zeros((3,) + spec.mask.shape, dtype=np.complex128)
    out = np.zeros((n_steps - n_spin, 3) + spec.mask.shape, dtype=np.complex128)
    if n_spin == 0:
        out[0] = state
    for k in range(n_steps - 1):
        state = model.advance(state, k, force[k], force[k + 1])
        if k + 1 >= n_spin:
            out[k + 1 - n_spin] = state
    psi = spec.inv_lap * out[:, 0]
    phi = np.stack([linear_balance(spec, p) for p in psi])
    return Weather(psi=psi, phi=phi, theta=out[:, 1], r=out[:, 2])


def _zonal_vorticity(spec: SpectralGrid, U: np.ndarray) -> np.ndarray:
    """m = 0 coefficients of the vorticity of the zonal wind U(phi) on the Gaussian latitudes:
    zeta_n = (1 / 2a) sum_j w_j U_j dP_n/dphi(mu_j) (integration by parts of -(1/(a cos)) d(U cos)/dphi)."""
    c = np.zeros(spec.mask.shape, dtype=np.complex128)
    c[0] = 0.5 / EARTH_RADIUS * np.sum(spec.w * U * spec.dP[0], axis=-1)
    return c


def _enveloped(spec: SpectralGrid, c: np.ndarray, env: np.ndarray) -> np.ndarray:
    """The band forcing c multiplied in grid space by the latitude envelope env(phi)."""
    return spec.analyse(spec.synth(c) * env[:, None])

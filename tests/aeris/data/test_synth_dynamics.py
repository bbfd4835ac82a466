"""The weather model of the synthetic reanalysis (aeris.data.synth_dynamics) against exact
solutions: Rossby-Haurwitz waves, solid-body advection, warm advection, linear balance."""

import numpy as np
import pytest

from aeris.data import synth_dynamics as dyn
from aeris.data.synth_spectral import SpectralGrid

A = 6.371e6
OMEGA = 7.292115e-5
DT = 21600.0
# no damping, no hyperdiffusion: the inviscid equations
INVISCID = dyn.DynamicsParams(drag_days=1e12, zonal_days=1e12, theta_days=1e12, wtg_days=1e12, moist_days=1e12,
                              hyper_hours=1e15)


def _background(spec, alpha=0.0, dtheta_dy=0.0, steps=20):
    """Solid-body zonal wind U = alpha a cos(phi) (alpha in rad/s) on the Gaussian latitudes."""
    u = alpha * A * np.cos(np.deg2rad(spec.lat))
    ones = np.ones((steps, spec.n_lat))
    return dyn.Background(U=u * ones, dtheta_dy=dtheta_dy * ones, dlnrh_dy=0 * ones, env=ones)


def _run(model, state, steps):
    zero = np.zeros_like(state)
    for k in range(steps):
        state = model.advance(state, k, zero, zero)
    return state


@pytest.mark.parametrize("alpha", [0.0, 4e-6])
def test_rossby_haurwitz_waves_have_their_dispersion_relation(alpha):
    """A streamfunction of one total wavenumber n is an exact solution of the barotropic
    vorticity equation on a solid-body flow alpha: each Y_n^m turns eastward at the angular
    speed c = alpha - 2 (Omega + alpha) / (n (n + 1)) (westward Rossby propagation against the
    flow), the nonlinear terms cancelling (two zonal wavenumbers of the same n here)."""
    spec = SpectralGrid(10)
    model = dyn.Model(spec, INVISCID, _background(spec, alpha), DT)
    n = 4
    state = np.zeros((3,) + spec.mask.shape, dtype=complex)
    state[0, 2, n] = 2e-5 * (1 + 0.5j)          # vorticity of m = 2
    state[0, 1, n] = 1e-5                        # and of m = 1
    out = _run(model, state, 8)                  # two days
    c = alpha - 2 * (OMEGA + alpha) / (n * (n + 1))
    t = 8 * DT
    for m in (1, 2):
        expected = state[0, m, n] * np.exp(-1j * m * c * t)
        assert abs(out[0, m, n] - expected) < 1e-4 * abs(state[0, m, n])
    rest = out[0].copy()
    rest[1:3, n] = 0
    assert np.abs(rest).max() < 1e-6 * 2e-5    # nothing leaks into other modes


def test_tracer_is_carried_by_the_flow():
    """With no eddies and no meridional gradient, theta in the solid-body flow alpha turns at
    alpha: theta(lam, t) = theta(lam - alpha t, 0)."""
    spec = SpectralGrid(10)
    alpha = 5e-6
    model = dyn.Model(spec, INVISCID, _background(spec, alpha), DT)
    state = np.zeros((3,) + spec.mask.shape, dtype=complex)
    state[1, 3, 5] = 1.0
    state[1, 1, 2] = 0.5j
    out = _run(model, state, 8)
    rot = np.exp(-1j * spec.m * alpha * 8 * DT)
    np.testing.assert_allclose(out[1], state[1] * rot, atol=1e-4)  # RK4 at 3 h steps


def test_meridional_wind_makes_warm_and_cold_advection():
    """Air moving poleward across the climate's gradient (colder to the north) warms:
    d theta / dt = -v d theta_clim / dy at the start, with v from the streamfunction. The climate
    theta_clim = -40 K sin^2(phi) keeps the product within the truncation."""
    spec = SpectralGrid(10)
    phi = np.deg2rad(spec.lat)
    gradient = -40.0 * 2 * np.sin(phi) * np.cos(phi) / A   # K/m
    model = dyn.Model(spec, INVISCID, _background(spec, 0.0, gradient), 600.0)  # 10-minute step
    psi = np.zeros(spec.mask.shape, dtype=complex)
    psi[2, 3] = 1e7
    state = np.zeros((3,) + spec.mask.shape, dtype=complex)
    state[0] = spec.lap * psi
    out = _run(model, state, 1)
    v = spec.gradient(psi)[0]                    # v = (1 / (a cos)) dpsi/dlam
    expected = -gradient[:, None] * v * 600.0
    assert np.abs(expected).max() > 1e-3 and np.all(out[2] == 0)
    # first order in the step: v itself turns by ~1.5 % (Rossby) during the 10 minutes
    np.testing.assert_allclose(spec.synth(out[1]), expected, atol=0.02 * np.abs(expected).max())


def test_linear_balance_of_a_zonal_flow():
    """For a zonal psi the balance is exact: grad phi = f grad psi. psi = C sin(phi) gives
    phi = Omega C (sin^2(phi) - 1/3) (global mean zero)."""
    spec = SpectralGrid(10)
    psi = np.zeros(spec.mask.shape, dtype=complex)
    C = 3e7
    psi[0, 1] = C / np.sqrt(3)
    phi = spec.synth(dyn.linear_balance(spec, psi))
    expected = OMEGA * C * (spec.mu ** 2 - 1 / 3)[:, None] * np.ones((1, spec.n_lon))
    np.testing.assert_allclose(phi, expected, atol=1e-9 * abs(OMEGA * C))


def test_forcing_has_the_stated_rms_and_correlation():
    spec = SpectralGrid(21)
    rho = 0.5
    f = dyn._band_forcing(spec, np.random.default_rng(0), 400, (7, 14), 2.0, rho)
    n = spec.n
    assert np.all(f[:, (n < 7) | (n > 14)] == 0) and np.all(f[:, 0].imag == 0)
    ms = np.array([np.mean(spec.synth(c) ** 2 * spec.w[:, None]) / np.mean(spec.w) for c in f[::4]])
    assert np.mean(ms) == pytest.approx(4.0, rel=0.05)
    flat = np.concatenate([f.real.reshape(400, -1), f.imag.reshape(400, -1)], axis=1)
    flat = flat[:, np.abs(flat).sum(0) > 0]
    lag1 = np.mean(flat[1:] * flat[:-1]) / np.mean(flat * flat)
    assert lag1 == pytest.approx(rho, abs=0.05)


def test_tropical_temperature_anomalies_relax_within_a_day():
    """Weak temperature gradients: with no flow, theta decays as exp(-t w(phi)),
    w = exp(-(phi / 20 deg)^2) / 1 day: by e^-0.25 in 6 h at the equator, not at 60 deg."""
    spec = SpectralGrid(21)
    params = dyn.DynamicsParams(theta_days=1e12, hyper_hours=1e15)
    model = dyn.Model(spec, params, _background(spec), DT)
    state = np.zeros((3,) + spec.mask.shape, dtype=complex)
    state[1, 0, 0] = 1.0                                     # theta = 1 K everywhere
    out = spec.synth(_run(model, state, 1)[1])[:, 0]
    expected = np.exp(-0.25 * np.exp(-(spec.lat / 20.0) ** 2))
    eq, mid = np.argmin(np.abs(spec.lat)), np.argmin(np.abs(spec.lat - 60))
    assert out[eq] == pytest.approx(expected[eq], abs=0.02) and out[mid] == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(out, expected, atol=0.03)   # the product is truncated at T21

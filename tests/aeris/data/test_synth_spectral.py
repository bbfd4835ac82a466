"""Spherical-harmonic transforms of the synthetic weather (aeris.data.synth_spectral) against
scipy's harmonics, finite differences and closed forms."""

import numpy as np
import pytest
from scipy.special import sph_harm_y

from aeris.data.synth_spectral import SpectralGrid, legendre_table

A = 6.371e6
OMEGA = 7.292115e-5


def _random(spec, rng, scale=1.0):
    c = (rng.standard_normal(spec.mask.shape) + 1j * rng.standard_normal(spec.mask.shape)) * spec.mask
    c[0] = c[0].real
    return c * scale


def _direct(c, lat, lon):
    """sum_m' sum_n c[m, n] sqrt(4 pi) Y_n^m, straight from scipy (the independent reference)."""
    th = np.deg2rad(90.0 - lat)[:, None]
    lam = np.deg2rad(lon)[None, :]
    out = np.zeros((len(lat), len(lon)))
    for m in range(c.shape[0]):
        for n in range(m, c.shape[1]):
            y = np.sqrt(4 * np.pi) * sph_harm_y(n, m, th, 0.0).real
            term = c[m, n] * y * np.exp(1j * m * lam)
            out += term.real if m == 0 else 2 * term.real
    return out


def test_synthesis_matches_scipy_and_analysis_inverts_it():
    spec = SpectralGrid(10)
    assert (spec.n_lat, spec.n_lon) == (16, 32)
    c = _random(spec, np.random.default_rng(0))
    f = spec.synth(c)
    np.testing.assert_allclose(f, _direct(c, spec.lat, np.arange(32) * 360 / 32), atol=1e-10)
    np.testing.assert_allclose(spec.analyse(f), c, atol=1e-12)
    # and on a regular pole-inclusive grid of another size
    lat, lon = np.linspace(90, -90, 19), np.arange(24) * 15.0
    np.testing.assert_allclose(spec.on_grid(lat, 24).values(c), _direct(c, lat, lon), atol=1e-10)


def test_products_are_not_aliased():
    """The Gaussian grid of T10 (16 x 32) projects the product of two T10 fields exactly: the
    same as on a grid four times finer."""
    spec, fine = SpectralGrid(10), SpectralGrid(10, 40, 80)
    rng = np.random.default_rng(1)
    a, b = _random(spec, rng), _random(spec, rng)
    np.testing.assert_allclose(spec.analyse(spec.synth(a) * spec.synth(b)),
                               fine.analyse(fine.synth(a) * fine.synth(b)), atol=1e-11)
    with pytest.raises(ValueError, match="aliases"):
        SpectralGrid(10, 15, 32)


def test_gradients_and_winds():
    spec = SpectralGrid(8)
    c = _random(spec, np.random.default_rng(2), 1e6)
    fx, fy = spec.gradient(c)
    d = 1e-4  # degrees
    north, south = spec.on_grid(spec.lat + d, spec.n_lon), spec.on_grid(spec.lat - d, spec.n_lon)
    fy_fd = (north.values(c) - south.values(c)) / (A * np.deg2rad(2 * d))
    np.testing.assert_allclose(fy, fy_fd, atol=1e-6 * np.abs(fy).max())
    # f(lam + d) has coefficients c e^{i m d}
    step = np.exp(1j * spec.m * np.deg2rad(d))
    fx_fd = (spec.synth(c * step) - spec.synth(c / step)) / (
        A * np.cos(np.deg2rad(spec.lat))[:, None] * np.deg2rad(2 * d))
    np.testing.assert_allclose(fx, fx_fd, atol=1e-6 * np.abs(fx).max())
    # rotational wind on a pole-inclusive grid: solid-body psi = -alpha a^2 sin(phi) gives
    # u = alpha a cos(phi), v = 0 (sin(phi) = P[0, 1] / sqrt(3))
    lat = np.linspace(90, -90, 33)
    grid = spec.on_grid(lat, 64)
    psi = np.zeros_like(c)
    psi[0, 1] = -1e-5 * A * A / np.sqrt(3)
    u, v = grid.wind(psi)
    np.testing.assert_allclose(u, 1e-5 * A * np.cos(np.deg2rad(lat))[:, None] * np.ones((1, 64)), atol=1e-9)
    np.testing.assert_allclose(v, 0.0, atol=1e-12)
    # v = (1 / (a cos)) dpsi/dlam, finite at the poles (m = 1 crosses them)
    u, v = grid.wind(c)
    val = grid.values(c)
    dl = np.deg2rad(360.0 / 64)
    inner = slice(1, -1)
    v_fd = (np.roll(val, -1, 1) - np.roll(val, 1, 1)) / (2 * dl * A * np.cos(np.deg2rad(lat))[:, None])
    # second-order differences of wavenumbers <= 8 on 64 longitudes: error <= (8 dl)^2 / 6 ~ 10 %
    assert np.corrcoef(v[inner].ravel(), v_fd[inner].ravel())[0, 1] > 0.99
    assert np.all(np.isfinite(v)) and np.abs(v[0]).max() > 0


def test_legendre_table_derivative_and_pole_limit():
    lat = np.array([89.999, 60.0, 0.0, -45.0, -90.0])
    p, dp, pc = legendre_table(lat, 4)
    # dP/dphi against a central difference of P
    pp, _, _ = legendre_table(lat[1:4] + 1e-5, 4)
    pm, _, _ = legendre_table(lat[1:4] - 1e-5, 4)
    np.testing.assert_allclose(dp[:, :, 1:4], (pp - pm) / np.deg2rad(2e-5), atol=1e-5)
    # P / cos(phi) -> finite for m = 1 at the pole, and equal to the ratio elsewhere
    np.testing.assert_allclose(pc[1:, :, 1:4], p[1:, :, 1:4] / np.cos(np.deg2rad(lat[1:4])), rtol=1e-9)
    assert np.all(np.isfinite(pc)) and np.abs(pc[1, 1:, -1]).min() > 0.1
    np.testing.assert_allclose(pc[2:, :, -1], 0.0, atol=1e-5)

"""Spherical-harmonic transforms on a Gaussian grid for the synthetic reanalysis's dynamics.

A field is a triangular truncation T of complex coefficients c[m, n] (0 <= m <= n <= T):

    f(phi, lam) = sum_m' sum_n c[m, n] P[m, n](sin phi) e^{i m lam},   m' = the Hermitian sum
                = sum_n c[0, n] P[0, n] + 2 Re sum_{m >= 1} sum_n c[m, n] P[m, n] e^{i m lam},

with P[m, n] = sqrt(4 pi) Y_n^m(colatitude, 0) (so (1/2) int_{-1}^{1} P[m, n]^2 dmu = 1) and
c[0, n] real. Analysis uses Gauss-Legendre quadrature in mu = sin(phi):

    c[m, n] = (1/2) sum_j w_j P[m, n](mu_j) F_m(mu_j),   F_m = the m-th Fourier coefficient,

exact for every product of two T fields and a harmonic when the grid has >= (3 T + 1) / 2
latitudes and >= 3 T + 1 longitudes (no aliasing of the quadratic advection terms).
Derivatives: d/dlam -> i m; d/dphi uses dP/dphi = -dY/d(colatitude); the Laplacian is
-n (n + 1) / a^2.
"""

from __future__ import annotations

import numpy as np
from scipy.special import sph_harm_y

from aeris.data.synth_physics import EARTH_RADIUS

__all__ = ["SpectralGrid", "legendre_table"]


def legendre_table(lat_deg: np.ndarray, trunc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, dP/dphi, P / cos phi), each (T + 1, T + 1, n_lat) indexed [m, n, lat], zero for n < m.
    P / cos phi is the limit at the poles (finite for m = 1, zero for m > 1 and m = 0, where
    it multiplies i m = 0 anyway)."""
    colat = np.deg2rad(90.0 - np.asarray(lat_deg, dtype=np.float64))
    eps = 1e-7  # the limit at the poles: evaluate a hair inside
    colat_in = np.clip(colat, eps, np.pi - eps)
    k = trunc + 1
    p = np.zeros((k, k, colat.size))
    dp = np.zeros_like(p)
    pc = np.zeros_like(p)
    scale = np.sqrt(4 * np.pi)
    for m in range(k):
        for n in range(m, k):
            y, dy = sph_harm_y(n, m, colat, 0.0, diff_n=1)
            p[m, n] = scale * y.real
            dp[m, n] = -scale * dy[..., 0].real
            if m > 0:
                pc[m, n] = scale * sph_harm_y(n, m, colat_in, 0.0).real / np.sin(colat_in)
    return p, dp, pc


class SpectralGrid:
    """Transforms between T-`trunc` coefficients and a Gaussian grid (`n_lat` x `n_lon`,
    latitudes north -> south, longitudes 0 .. <360), plus synthesis on any other regular grid."""

    def __init__(self, trunc: int, n_lat: int | None = None, n_lon: int | None = None):
        self.trunc = int(trunc)
        self.n_lat = int(n_lat or (3 * trunc + 2) // 2)
        self.n_lon = int(n_lon or 2 * self.n_lat)
        if 2 * self.n_lat < 3 * trunc + 1 or self.n_lon < 3 * trunc + 1:
            raise ValueError(f"a {self.n_lat}x{self.n_lon} Gaussian grid aliases T{trunc} products")
        mu, w = np.polynomial.legendre.leggauss(self.n_lat)
        self.mu, self.w = mu[::-1].copy(), w[::-1].copy()
        self.lat = np.rad2deg(np.arcsin(self.mu))
        self.cos = np.sqrt(1.0 - self.mu ** 2)
        self.P, self.dP, _ = legendre_table(self.lat, trunc)
        k = trunc + 1
        self.m = np.arange(k)[:, None] * np.ones((1, k))
        n = np.arange(k)[None, :] * np.ones((k, 1))
        self.mask = n >= self.m
        self.n = n
        self.lap = -n * (n + 1) / EARTH_RADIUS ** 2
        self.inv_lap = np.where(n > 0, 1.0 / np.where(n > 0, self.lap, 1.0), 0.0)
        # analysis weights (m, lat, n) and the real DFT onto (Re, Im) of F_0 .. F_T
        self._wp = np.ascontiguousarray((0.5 * self.P * self.w[None, None, :]).transpose(0, 2, 1))
        lam = 2 * np.pi * np.arange(self.n_lon) / self.n_lon
        arg = np.arange(k)[None, :] * lam[:, None]
        self._dft = np.concatenate([np.cos(arg), -np.sin(arg)], axis=1) / self.n_lon
        self._fourier = _fourier_matrix(k, self.n_lon)
        self._pdp = np.concatenate([self.P, self.dP], axis=-1)        # (m, n, 2 lat)

    # ---- transforms on the Gaussian grid -----------------------------------------------------
    def synth(self, c: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
        """Grid values (..., n_lat, n_lon) of coefficients (..., m, n) with `basis` (default P)."""
        return _synthesise(c, self.P if basis is None else basis, self._fourier)

    def synth_pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(2, F, n_lat, n_lon): `a` (F, m, n) with basis P and `b` with dP/dphi, in one batched
        product (at these sizes the cost is the number of calls, not the arithmetic)."""
        k, nf = self.trunc + 1, a.shape[0]
        ri = np.concatenate([a.real, a.imag, b.real, b.imag]).transpose(1, 0, 2)   # (m, 4F, n)
        four = (ri @ self._pdp).reshape(k, 2, 2, nf, 2, self.n_lat)   # (m, a|b, re|im, F, P|dP, lat)
        four = np.stack([four[:, 0, :, :, 0], four[:, 1, :, :, 1]])   # (2, m, re|im, F, lat)
        four = four.transpose(0, 3, 4, 2, 1).reshape(2, nf, self.n_lat, 2 * k)
        return four @ self._fourier

    def analyse(self, f: np.ndarray) -> np.ndarray:
        """Coefficients (..., m, n) of a grid field (..., n_lat, n_lon) (Gauss quadrature)."""
        k = self.trunc + 1
        lead = f.shape[:-2]
        f2 = f.reshape((-1,) + f.shape[-2:])
        nf = f2.shape[0]
        ri = f2 @ self._dft                                   # (F, lat, 2k): Re, Im of F_m
        ri = ri.reshape(nf, self.n_lat, 2, k).transpose(3, 2, 0, 1).reshape(k, 2 * nf, self.n_lat)
        c = ri @ self._wp                                     # (m, 2F, n)
        c = (c[:, :nf] + 1j * c[:, nf:]).transpose(1, 0, 2)   # (F, m, n)
        c[:, 0, :] = c[:, 0, :].real
        return c.reshape(lead + c.shape[1:])

    def gradient(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(east, north) components of grad f on the grid: (1/(a cos)) df/dlam, (1/a) df/dphi."""
        fx = self.synth(1j * self.m * c) / (EARTH_RADIUS * self.cos[:, None])
        fy = self.synth(c, self.dP) / EARTH_RADIUS
        return fx, fy

    # ---- synthesis on the store's grid --------------------------------------------------------
    def on_grid(self, lat_deg: np.ndarray, n_lon: int) -> "GridSynthesis":
        """A synthesiser onto the regular grid (`lat_deg`, `n_lon` longitudes from 0)."""
        return GridSynthesis(self, np.asarray(lat_deg, dtype=np.float64), int(n_lon))


class GridSynthesis:
    """Values, and rotational winds of streamfunctions, of T coefficients on a regular grid
    (point values: exact at the grid points whatever the grid's own resolution)."""

    def __init__(self, spec: SpectralGrid, lat_deg: np.ndarray, n_lon: int):
        self.spec, self.n_lon = spec, n_lon
        self.P, self.dP, self.Pc = legendre_table(lat_deg, spec.trunc)
        self._fourier = _fourier_matrix(spec.trunc + 1, n_lon)

    def values(self, c: np.ndarray) -> np.ndarray:
        """f on the grid, (..., n_lat, n_lon)."""
        return _synthesise(c, self.P, self._fourier)

    def wind(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotational wind of the streamfunction psi: u = -(1/a) dpsi/dphi, v = (1/(a cos)) dpsi/dlam."""
        u = -_synthesise(psi, self.dP, self._fourier) / EARTH_RADIUS
        v = _synthesise(1j * self.spec.m * psi, self.Pc, self._fourier) / EARTH_RADIUS
        return u, v


def _fourier_matrix(k: int, n_lon: int) -> np.ndarray:
    """(2k, n_lon): rows w_m cos(m lam) then -w_m sin(m lam), w_0 = 1, w_m = 2 (Hermitian sum)."""
    lam = 2 * np.pi * np.arange(n_lon) / n_lon
    arg = np.arange(k)[:, None] * lam[None, :]
    wm = np.where(np.arange(k) > 0, 2.0, 1.0)[:, None]
    return np.concatenate([wm * np.cos(arg), -wm * np.sin(arg)], axis=0)


def _synthesise(c: np.ndarray, basis: np.ndarray, fourier: np.ndarray) -> np.ndarray:
    """sum over n with basis[m, n, lat], then the Hermitian Fourier sum over m: (..., lat, lon).
    One batched real matrix product per step (batch m), the fastest layout at these sizes."""
    k, n_lat = basis.shape[0], basis.shape[-1]
    lead = c.shape[:-2]
    c2 = c.reshape((-1,) + c.shape[-2:])
    nf = c2.shape[0]
    ri = np.concatenate([c2.real, c2.imag]).transpose(1, 0, 2)          # (m, 2F, n)
    four = (ri @ basis).reshape(k, 2, nf, n_lat).transpose(2, 3, 1, 0)  # (F, lat, 2, m)
    out = four.reshape(nf, n_lat, 2 * k) @ fourier
    return out.reshape(lead + out.shape[1:])

"""Seeded red noise on the sphere for the synthetic reanalysis.

A noise field is a truncated real spherical-harmonic expansion

    f(t, phi, lam) = sum_{n=1..N} sum_{m=0..n} P_nm(phi) [a_nm(t) cos(m lam) + b_nm(t) sin(m lam)]

with orthonormal real harmonics (area mean of Y^2 = 1 / (4 pi) * 4 pi = 1 each after our
scaling) and coefficients following independent stationary AR(1) processes in time:

    c(t + dt) = rho c(t) + sqrt(1 - rho^2) sigma_n eps,   rho = exp(-dt / tau),  eps ~ N(0, 1).

sigma_n ~ 1 / n gives a red spatial spectrum (large scales dominate); the sigmas are
normalised so that the expected area-mean of f^2 is 1. Smooth at the poles by construction.
All random numbers are drawn up front for the whole period, so the result does not depend
on how the caller splits time into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import sph_harm_y

__all__ = ["RedNoise", "legendre_basis", "ar1_series"]


def legendre_basis(lat: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real orthonormal-harmonic latitude factors for 1 <= n <= n_max, 0 <= m <= n.

    Returns (P, n, m): P has shape (K, n_lat), scaled so that P_k(phi) cos(m lam) (and sin for
    m > 0) has area-mean square 1 on the sphere."""
    theta = np.deg2rad(90.0 - np.asarray(lat, dtype=np.float64))  # colatitude
    ns, ms, rows = [], [], []
    for n in range(1, n_max + 1):
        for m in range(0, n + 1):
            y = sph_harm_y(n, m, theta, 0.0).real  # orthonormal: int |Y|^2 dOmega = 1
            rows.append(y * np.sqrt(4 * np.pi) * (np.sqrt(2.0) if m > 0 else 1.0))
            ns.append(n)
            ms.append(m)
    return np.array(rows), np.array(ns), np.array(ms)


def ar1_series(rng: np.random.Generator, n_time: int, n_coef: int, rho: float) -> np.ndarray:
    """(n_time, n_coef) stationary AR(1) series with unit variance and lag-1 correlation rho."""
    if not (0.0 <= rho < 1.0):
        raise ValueError(f"AR(1) coefficient must be in [0, 1), got {rho}")
    eps = rng.standard_normal((n_time, n_coef))
    out = np.empty_like(eps)
    out[0] = eps[0]
    scale = np.sqrt(1.0 - rho * rho)
    for i in range(1, n_time):
        out[i] = rho * out[i - 1] + scale * eps[i]
    return out


@dataclass
class RedNoise:
    """Unit-variance red noise on a (lat, lon) grid over `n_time` steps of `dt_hours`."""

    lat: np.ndarray
    lon: np.ndarray
    n_time: int
    dt_hours: float
    tau_hours: float
    rng: np.random.Generator
    n_max: int = 12
    # eastward drift of the whole pattern (deg/day): the AR(1) evolves in a frame moving with
    # the flow, so the 6-hourly change is partly advection (predictable from the state)
    drift_deg_per_day: float = 0.0

    def __post_init__(self) -> None:
        P, n, m = legendre_basis(self.lat, self.n_max)
        sigma = 1.0 / n
        # E[area-mean f^2] = sum_k sigma_k^2 (each term has area-mean square 1 and unit
        # variance coefficients; cos and sin terms both counted) -> normalise to 1
        total = np.sum(sigma**2 * np.where(m > 0, 2.0, 1.0))
        sigma = sigma / np.sqrt(total)
        rho = float(np.exp(-self.dt_hours / self.tau_hours))
        k = len(n)
        coef = ar1_series(self.rng, self.n_time, 2 * k, rho)
        a = coef[:, :k] * sigma
        b = coef[:, k:] * sigma * (m > 0)
        if self.drift_deg_per_day:
            # f(lam - c t): (a, b) of wavenumber m rotate by the angle m c t
            ang = (np.deg2rad(self.drift_deg_per_day) * self.dt_hours / 24.0
                   * np.arange(self.n_time)[:, None] * m[None, :])
            a, b = a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)
        self._a = a.astype(np.float32)
        self._b = b.astype(np.float32)
        self._P = P.astype(np.float32)
        self._m = m
        lam = np.deg2rad(np.asarray(self.lon, dtype=np.float64))
        m_all = np.arange(self.n_max + 1)
        self._cos = np.cos(m_all[:, None] * lam[None, :]).astype(np.float32)
        self._sin = np.sin(m_all[:, None] * lam[None, :]).astype(np.float32)
        # (K, M, Y): coefficient k contributes P_k(lat) to zonal wavenumber m_k only; the sum
        # over n is done once for the whole period (one large matmul beats many small ones)
        basis = np.zeros((k, self.n_max + 1, len(self.lat)), dtype=np.float32)
        basis[np.arange(k), m] = self._P
        basis = basis.reshape(k, -1)
        shape = (self.n_time, self.n_max + 1, len(self.lat))
        self._ca = np.ascontiguousarray((self._a @ basis).reshape(shape).transpose(0, 2, 1))
        self._cb = np.ascontiguousarray((self._b @ basis).reshape(shape).transpose(0, 2, 1))

    def fields(self, t0: int, t1: int) -> np.ndarray:
        """Noise for time steps [t0, t1): shape (t1 - t0, n_lat, n_lon), float32."""
        # (T, Y, M) @ (M, X) for the cos and sin parts
        return self._ca[t0:t1] @ self._cos + self._cb[t0:t1] @ self._sin

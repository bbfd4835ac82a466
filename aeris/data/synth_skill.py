"""Simple 6-hourly predictors that measure how predictable a (synthetic) reanalysis is.

All three work on fields x[t, lat, lon] of one channel, on the store's regular grid
(latitude 90 -> -90, longitude periodic), and are scored by the latitude-weighted RMSE

    rmse(a, b) = sqrt( sum_t,i,j cos(phi_i) (a - b)^2 / sum_t,i,j cos(phi_i) ).

* persistence: x[t + 1] ~ x[t].
* advection: x[t + 1] ~ x[t] carried by the store's own wind (u, v) at t for one step, i.e.
  the value found upstream at the departure point of a semi-Lagrangian trajectory
  (midpoint rule, two iterations, bilinear interpolation; `advect`).
* linear stencil: x[t + 1] - x[t] ~ sum_s w_s(phi) x[t](shifted by s) + b(phi), least squares
  over a (2 ry + 1) x (2 rx + 1) stencil, one set of weights per latitude row, fitted on one
  period and scored on another (`fit_stencil`, `predict_stencil`).

docs/data.md, "Synthetic reanalysis", gives the figures of the embedded store.
"""

from __future__ import annotations

import numpy as np

from aeris.data.synth_physics import EARTH_RADIUS

__all__ = ["lat_weights", "rmse", "advect", "fit_stencil", "predict_stencil", "stencil_features"]


def lat_weights(lat: np.ndarray) -> np.ndarray:
    """cos(latitude), (n_lat, 1), floored at 0 (the poles get no weight)."""
    return np.maximum(np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64))), 0.0)[:, None]


def rmse(a: np.ndarray, b: np.ndarray, lat: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Latitude-weighted RMSE over all leading axes; `mask` (broadcastable, bool) keeps points."""
    w = np.broadcast_to(lat_weights(lat), np.shape(a)).astype(np.float64)
    if mask is not None:
        w = w * np.broadcast_to(mask, np.shape(a))
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    return float(np.sqrt(np.sum(w * d) / np.sum(w)))


def _sample(field: np.ndarray, fi: np.ndarray, fj: np.ndarray) -> np.ndarray:
    """Bilinear value of field[..., lat, lon] at fractional indices (fi clamped, fj periodic)."""
    ny, nx = field.shape[-2:]
    fi = np.clip(fi, 0.0, ny - 1.0)
    i0 = np.minimum(np.floor(fi).astype(np.int64), ny - 2)
    wi = fi - i0
    j0f = np.floor(fj)
    wj = fj - j0f
    j0 = j0f.astype(np.int64) % nx
    j1 = (j0 + 1) % nx
    t = np.arange(field.shape[0])[:, None, None]
    return ((1 - wi) * ((1 - wj) * field[t, i0, j0] + wj * field[t, i0, j1])
            + wi * ((1 - wj) * field[t, i0 + 1, j0] + wj * field[t, i0 + 1, j1]))


def advect(field: np.ndarray, u: np.ndarray, v: np.ndarray, lat: np.ndarray, lon: np.ndarray,
           dt_s: float, iterations: int = 2) -> np.ndarray:
    """field[t] (t, lat, lon) carried for dt_s seconds by the wind (u, v) (m/s, same shape):
    the departure point of the trajectory arriving at each grid point is found with the wind
    at its midpoint (`iterations` fixed-point steps) and the field is read there bilinearly."""
    lat = np.asarray(lat, dtype=np.float64)
    ny, nx = field.shape[-2:]
    dlat = lat[0] - lat[1]                       # > 0: rows go north -> south
    dlon = 360.0 / nx
    ii, jj = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64),
                         indexing="ij")
    cos_phi = np.maximum(np.cos(np.deg2rad(lat)), 0.05)[:, None]
    deg = np.rad2deg(dt_s / EARTH_RADIUS)
    di = np.zeros(field.shape)
    dj = np.zeros(field.shape)
    for _ in range(iterations):
        um = _sample(u, ii - 0.5 * di, jj - 0.5 * dj)
        vm = _sample(v, ii - 0.5 * di, jj - 0.5 * dj)
        di = -deg * vm / dlat                   # northward wind moves to smaller row indices
        dj = deg * um / (cos_phi * dlon)
    return _sample(field, ii - di, jj - dj)


def stencil_features(x: np.ndarray, ry: int, rx: int) -> np.ndarray:
    """(t, lat, lon, S + 1): x shifted by each stencil offset (lat clamped at the poles, lon
    periodic) and a constant 1 for the bias."""
    ny = x.shape[1]
    feats = []
    for di in range(-ry, ry + 1):
        rows = np.clip(np.arange(ny) + di, 0, ny - 1)
        xr = x[:, rows]
        for dj in range(-rx, rx + 1):
            feats.append(np.roll(xr, -dj, axis=2))
    feats.append(np.ones_like(x))
    return np.stack(feats, axis=-1)


def fit_stencil(x: np.ndarray, ry: int = 1, rx: int = 2, ridge: float = 1e-6) -> np.ndarray:
    """Weights (lat, S + 1) of the per-row linear predictor of x[t + 1] - x[t] from x[t],
    least squares over the times and longitudes of `x` (ridge relative to the trace)."""
    x = np.asarray(x, dtype=np.float64)
    f = stencil_features(x[:-1], ry, rx)
    y = x[1:] - x[:-1]
    w = np.empty((x.shape[1], f.shape[-1]))
    for i in range(x.shape[1]):
        a = f[:, i].reshape(-1, f.shape[-1])
        g = a.T @ a
        g += ridge * np.trace(g) / len(g) * np.eye(len(g))
        w[i] = np.linalg.solve(g, a.T @ y[:, i].reshape(-1))
    return w


def predict_stencil(x: np.ndarray, w: np.ndarray, ry: int = 1, rx: int = 2) -> np.ndarray:
    """x[t] + the fitted change: the prediction of x[t + 1] for every t of `x`."""
    x = np.asarray(x, dtype=np.float64)
    return x + np.einsum("tyxs,ys->tyx", stencil_features(x, ry, rx), w)

"""Simple 6-hourly predictors that measure how predictable a (synthetic) reanalysis is.

All three work on fields x[t, lat, lon] of one channel, on the store's regular grid
(latitude 90 -> -90, longitude periodic), and are scored by the latitude-weighted RMSE

    rmse(a, b) = sqrt( sum_t,i,j cos(phi_i) (a - b)^2 / sum_t,i,j cos(phi_i) ).

* persistence: x[t + 1] ~ x[t].
* advection: x[t + 1] ~ x[t] carried by the store's own wind (u, v) at t for one step, i.e.
  the value found upstream at the departure point of a semi-Lagrangian trajectory
  (midpoint rule, two iterations, bilinear interpolation; `Advection`, `advect`).
* linear stencil: x[t + 1] - x[t] ~ sum_s w_s(phi) x[t](shifted by s) + b(phi), least squares
  over a (2 ry + 1) x (2 rx + 1) stencil, one set of weights per latitude row, fitted on one
  period and scored on another (`fit_stencil`, `predict_stencil`); optionally with extra
  feature fields, e.g. the advected change advect(x) - x (linear in x given the wind).

docs/data.md, "Synthetic reanalysis", gives the figures of the embedded store.
"""

from __future__ import annotations

import numpy as np

from aeris.data.synth_physics import EARTH_RADIUS

__all__ = ["lat_weights", "rmse", "Advection", "advect", "fit_stencil", "predict_stencil",
           "channels", "scores"]


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


class Advection:
    """Semi-Lagrangian transport by the wind (u, v) (m/s, (t, lat, lon)) for dt_s seconds: the
    departure point of the trajectory arriving at each grid point is found with the wind at
    its midpoint (`iterations` fixed-point steps); `apply(field)` reads field[t] there
    bilinearly (latitude clamped at the poles, longitude periodic). The points depend on the
    wind only, so one instance serves every field."""

    def __init__(self, u: np.ndarray, v: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 dt_s: float, iterations: int = 2):
        lat = np.asarray(lat, dtype=np.float64)
        self.shape = np.shape(u)
        nt, ny, nx = self.shape
        dlat = lat[0] - lat[1]                       # > 0: rows go north -> south
        dlon = 360.0 / nx
        ii, jj = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64),
                             indexing="ij")
        cos_phi = np.maximum(np.cos(np.deg2rad(lat)), 0.05)[:, None]
        deg = np.rad2deg(dt_s / EARTH_RADIUS)
        di = np.zeros(self.shape)
        dj = np.zeros(self.shape)
        for _ in range(iterations):
            w = self._weights(ii - 0.5 * di, jj - 0.5 * dj, ny, nx)
            um, vm = self._read(u, w), self._read(v, w)
            di = -deg * vm / dlat                   # northward wind moves to smaller row indices
            dj = deg * um / (cos_phi * dlon)
        self.w = self._weights(ii - di, jj - dj, ny, nx)

    @staticmethod
    def _weights(fi, fj, ny, nx):
        fi = np.clip(fi, 0.0, ny - 1.0)
        i0 = np.minimum(np.floor(fi).astype(np.int64), ny - 2)
        j0f = np.floor(fj)
        j0 = j0f.astype(np.int64) % nx
        return i0, fi - i0, j0, (j0 + 1) % nx, fj - j0f

    def _read(self, field, w):
        i0, wi, j0, j1, wj = w
        t = np.arange(field.shape[0])[:, None, None]
        return ((1 - wi) * ((1 - wj) * field[t, i0, j0] + wj * field[t, i0, j1])
                + wi * ((1 - wj) * field[t, i0 + 1, j0] + wj * field[t, i0 + 1, j1]))

    def apply(self, field: np.ndarray) -> np.ndarray:
        """field[t] carried for one step: the prediction of field[t + 1]."""
        return self._read(np.asarray(field, dtype=np.float64), self.w)


def advect(field: np.ndarray, u: np.ndarray, v: np.ndarray, lat: np.ndarray, lon: np.ndarray,
           dt_s: float, iterations: int = 2) -> np.ndarray:
    """field[t] (t, lat, lon) carried for dt_s seconds by the wind (u, v) (see `Advection`)."""
    return Advection(u, v, lat, lon, dt_s, iterations).apply(field)


def _row_features(x: np.ndarray, i: int, ry: int, rx: int, extra: tuple) -> np.ndarray:
    """(t, lon, S + E + 1) predictors of row i: x shifted by each stencil offset (lat clamped
    at the poles, lon periodic), the `extra` fields of the row and a constant 1."""
    ny = x.shape[1]
    feats = []
    for di in range(-ry, ry + 1):
        row = x[:, min(max(i + di, 0), ny - 1)]
        for dj in range(-rx, rx + 1):
            feats.append(np.roll(row, -dj, axis=-1))
    feats.extend(e[:, i] for e in extra)
    feats.append(np.ones_like(x[:, i]))
    return np.stack(feats, axis=-1)


def fit_stencil(x: np.ndarray, ry: int = 1, rx: int = 2, extra: tuple = (),
                ridge: float = 1e-6) -> np.ndarray:
    """Weights (lat, S + E + 1) of the per-row linear predictor of x[t + 1] - x[t] from x[t]
    (and the `extra` fields at t), least squares over the times and longitudes of `x` (ridge
    relative to the mean diagonal)."""
    x = np.asarray(x, dtype=np.float64)
    extra = tuple(np.asarray(e, np.float64)[:-1] for e in extra)
    y = x[1:] - x[:-1]
    w = []
    for i in range(x.shape[1]):
        a = _row_features(x[:-1], i, ry, rx, extra).reshape(-1, (2 * ry + 1) * (2 * rx + 1) + len(extra) + 1)
        g = a.T @ a
        g += ridge * np.trace(g) / len(g) * np.eye(len(g))
        w.append(np.linalg.solve(g, a.T @ y[:, i].reshape(-1)))
    return np.array(w)


def predict_stencil(x: np.ndarray, w: np.ndarray, ry: int = 1, rx: int = 2,
                    extra: tuple = ()) -> np.ndarray:
    """x[t] + the fitted change: the prediction of x[t + 1] for every t of `x`."""
    x = np.asarray(x, dtype=np.float64)
    extra = tuple(np.asarray(e, np.float64) for e in extra)
    out = x.copy()
    for i in range(x.shape[1]):
        out[:, i] += _row_features(x, i, ry, rx, extra) @ w[i]
    return out


# ---- the scores of a store -------------------------------------------------------------------
SURFACE_CHANNELS = {"t2m": "2m_temperature", "u10": "10m_u_component_of_wind",
                    "v10": "10m_v_component_of_wind", "msl": "mean_sea_level_pressure"}
LEVEL_CHANNELS = {"z": "geopotential", "t": "temperature", "u": "u_component_of_wind",
                  "v": "v_component_of_wind", "q": "specific_humidity"}


def channels(ds, levels=(300, 500, 850)) -> dict[str, np.ndarray]:
    """The demo's 19 channels of an (opened) store as float64 arrays (time, lat, lon)."""
    out = {}
    for lev in levels:
        for short, name in LEVEL_CHANNELS.items():
            out[f"{short}{lev}"] = np.asarray(ds[name].sel(level=lev).values, dtype=np.float64)
    for short, name in SURFACE_CHANNELS.items():
        out[short] = np.asarray(ds[name].values, dtype=np.float64)
    return out


def scores(ds, dt_s: float, steering_level: int = 500) -> dict[str, dict[str, float]]:
    """Per channel, RMSE ratios to persistence: `advected` (by the store's wind at
    `steering_level`, whole period), `stencil` and `stencil_advection` (the stencil plus the
    advected change as one more feature), both fitted on the first half of the times and
    scored on the second half."""
    lat, lon = ds.latitude.values, ds.longitude.values
    ch = channels(ds)
    transport = Advection(ch[f"u{steering_level}"], ch[f"v{steering_level}"], lat, lon, dt_s)
    half = len(ds.time) // 2
    out = {}
    for name, x in ch.items():
        adv = transport.apply(x)
        inc = adv - x
        a, b = slice(0, half), slice(half, None)
        persist_b = rmse(x[half + 1:], x[half:-1], lat)
        lin = predict_stencil(x[b], fit_stencil(x[a]))
        lin_adv = predict_stencil(x[b], fit_stencil(x[a], extra=(inc[a],)), extra=(inc[b],))
        out[name] = {
            "advected": rmse(x[1:], adv[:-1], lat) / rmse(x[1:], x[:-1], lat),
            "stencil": rmse(x[half + 1:], lin[:-1], lat) / persist_b,
            "stencil_advection": rmse(x[half + 1:], lin_adv[:-1], lat) / persist_b,
        }
    return out

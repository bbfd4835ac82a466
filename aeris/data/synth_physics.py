"""Pure physics helpers of the synthetic reanalysis (vertical structure, balance, moisture).

Vertical structure. Temperature on a pressure level is

    T(p) = T_ref(p) + a(p) Theta + w(p) W

with T_ref the US standard atmosphere (288.15 K, 6.5 K/km, isothermal 216.65 K above the
tropopause), Theta a column temperature anomaly (K), a(p) its vertical weight (1 in the
lower troposphere, 0 at 200 hPa, negative above: the stratosphere is warm where the
troposphere is cold), W a storm warm core and w(p) its vertical shape. Geopotential follows
the hypsometric equation exactly:

    Z(p) = Z(1000) + R_d * integral_{ln p}^{ln 1000} T d(ln p')
         = Z(1000) + R_d [I_ref(p) + I_a(p) Theta + I_w(p) W],
    Z(1000) = R_d T(1000) ln(msl / 1000 hPa),

where the I_* are 1-D integrals of the vertical shapes computed once.

Balance. Winds on pressure levels are geostrophic, with 1/f replaced by f / (f^2 + f0^2)
(f0 = f at 10 deg) so that they stay finite and taper to zero at the equator:

    u = -(1 / a) dZ/dphi * f / (f^2 + f0^2),   v = (1 / (a cos phi)) dZ/dlam * f / (f^2 + f0^2).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "R_DRY", "GRAVITY", "OMEGA", "EARTH_RADIUS", "EPSILON",
    "reference_temperature", "theta_weight", "column_integral",
    "saturation_specific_humidity", "balanced_wind", "rotational_wind", "geostrophic_factor",
    "rotate_vectors",
    "msl_climatology", "relative_humidity_climatology",
]

R_DRY = 287.05  # J kg-1 K-1
GRAVITY = 9.80665  # m s-2
OMEGA = 7.292115e-5  # s-1
EARTH_RADIUS = 6.371e6  # m
EPSILON = 0.622  # R_dry / R_vapour
_F0 = 2 * OMEGA * np.sin(np.deg2rad(10.0))


def reference_temperature(p_hpa):
    """US standard atmosphere on pressure: 288.15 (p / 1013.25)^(R_d Gamma / g), >= 216.65 K."""
    p = np.asarray(p_hpa, dtype=np.float64)
    return np.maximum(288.15 * (p / 1013.25) ** (R_DRY * 0.0065 / GRAVITY), 216.65)


def theta_weight(p_hpa):
    """Vertical weight a(p) of the column anomaly: 1 for p >= 400 hPa, linear in ln p through
    0 at 200 hPa, floored at -0.6 (stratospheric reversal of the meridional gradient)."""
    lp = np.log(np.asarray(p_hpa, dtype=np.float64))
    a = 1.0 - (np.log(400.0) - lp) / np.log(2.0)
    return np.clip(a, -0.6, 1.0)


def column_integral(shape, p_hpa, p_bottom: float = 1000.0, n: int = 2001) -> np.ndarray:
    """I(p) = integral from ln p to ln p_bottom of shape(p') d(ln p') (trapezoid, n nodes);
    negative for p > p_bottom."""
    out = []
    for p in np.atleast_1d(np.asarray(p_hpa, dtype=np.float64)):
        x = np.linspace(np.log(p), np.log(p_bottom), n)
        y = shape(np.exp(x))
        out.append(float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))))
    return np.array(out)


def saturation_specific_humidity(t_k, p_pa):
    """q_sat = eps e_s / (p - (1 - eps) e_s), Bolton (1980) e_s = 611.2 exp(17.67 Tc / (Tc + 243.5))."""
    tc = np.asarray(t_k) - 273.15
    es = 611.2 * np.exp(17.67 * tc / (tc + 243.5))
    es = np.minimum(es, 0.5 * np.asarray(p_pa))  # keep the formula finite for hot, low-p cases
    return EPSILON * es / (p_pa - (1.0 - EPSILON) * es)


def geostrophic_factor(lat) -> np.ndarray:
    """f / (f^2 + f0^2) (s): 1 / f away from the equator, tapered to 0 at it."""
    f = 2 * OMEGA * np.sin(np.deg2rad(np.asarray(lat, dtype=np.float64)))
    return f / (f * f + _F0 * _F0)


def balanced_wind(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, scale: float = 1.0):
    """Geostrophic (u, v) of `field` (geopotential in m2 s-2, or pressure / density) on the
    last two axes (lat, lon), with the equatorial taper of the module docstring."""
    return rotational_wind(field, lat, lon, geostrophic_factor(lat) * scale)


def rotational_wind(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, factor=1.0):
    """(u, v) = factor(lat) x (-(1/a) d/dphi, (1/(a cos phi)) d/dlam) of `field` on the last two
    axes (lat, lon): the wind of a streamfunction (factor 1), centred differences."""
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))
    dlam = 2 * np.pi / len(lon)
    fac = np.broadcast_to(np.asarray(factor, dtype=np.float64), phi.shape).astype(np.float32)
    # cos(phi) floored half a row from the pole, where d/dlam of a smooth field vanishes anyway
    cos_phi = np.maximum(np.cos(phi), np.sin(0.5 * abs(phi[1] - phi[0]))).astype(np.float32)
    dz_dphi = np.gradient(field, phi, axis=-2).astype(np.float32)
    dz_dlam = (np.roll(field, -1, axis=-1) - np.roll(field, 1, axis=-1)) / np.float32(2 * dlam)
    k = np.float32(1.0 / EARTH_RADIUS)
    u = -k * dz_dphi * fac[:, None]
    v = k * dz_dlam * (fac / cos_phi)[:, None]
    return u, v


def rotate_vectors(u, v, angle_rad):
    """Rotate (u, v) counter-clockwise by `angle_rad` (broadcastable)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return c * u - s * v, s * u + c * v


def msl_climatology(lat: np.ndarray, itcz_lat: np.ndarray) -> np.ndarray:
    """Zonal-mean MSL (Pa), shape (time, lat): equatorial trough following `itcz_lat` (time,),
    subtropical highs at +-32 deg, subpolar lows at +-62 deg, polar highs."""
    phi = np.asarray(lat, dtype=np.float64)[None, :]
    itcz = np.asarray(itcz_lat, dtype=np.float64)[:, None]
    g = lambda x, c, s: np.exp(-0.5 * ((x - c) / s) ** 2)  # noqa: E731
    return (101325.0 - 350.0 * g(phi, itcz, 8.0)
            + 600.0 * (g(phi, 32.0, 9.0) + g(phi, -32.0, 9.0))
            - 1100.0 * (g(phi, 62.0, 8.0) + g(phi, -62.0, 8.0))
            + 400.0 * (g(phi, 90.0, 10.0) + g(phi, -90.0, 10.0)))


def relative_humidity_climatology(lat: np.ndarray, p_hpa: np.ndarray) -> np.ndarray:
    """Relative humidity (0-1), shape (level, lat): moist tropics and storm tracks, dry
    subtropics, drying with height as (p / 1000)^0.8."""
    phi = np.asarray(lat, dtype=np.float64)[None, :]
    p = np.asarray(p_hpa, dtype=np.float64)[:, None]
    surf = 0.78 - 0.2 * np.exp(-0.5 * ((np.abs(phi) - 25.0) / 8.0) ** 2) + 0.07 * np.exp(
        -0.5 * (phi / 10.0) ** 2)
    return np.clip(surf * (p / 1000.0) ** 0.8, 0.02, 1.0)

"""Channel-wise standardisation of states, residuals and forcings (docs/data.md, "Statistics and standardisation").

    z = (x - mean) / std                      (states, forcings, static fields)
    r = (x(t+dt) - x(t) - diff_mean) / diff_std   (the residual the diffusion model samples)
    x(t+dt) = x(t) + diff_std * r + diff_mean

All arrays are CHANNEL-LAST (..., C) and may be numpy arrays or torch tensors (the result has
the input's type, dtype and device). A zero std (a constant field) is replaced by 1 so the
standardised field is 0 rather than NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Normalizer", "safe_std"]


def safe_std(std: np.ndarray) -> np.ndarray:
    """std with zeros (and non-finite values) replaced by 1."""
    std = np.asarray(std, dtype=np.float64)
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)


def _like(values: np.ndarray, x):
    """`values` as a constant of x's kind (numpy array or torch tensor on x's device)."""
    if isinstance(x, np.ndarray):
        return values.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
    import torch
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.as_tensor(values, dtype=dtype, device=x.device)
    return values


def _check(x, n: int, what: str) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{what}: expected {n} channels in the last dim, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class Normalizer:
    """Statistics of the prognostic channels (state and residual) and of the forcing inputs."""

    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    diff_mean: np.ndarray
    diff_std: np.ndarray
    forcing_channels: tuple[str, ...] = ()
    forcing_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    forcing_std: np.ndarray = field(default_factory=lambda: np.ones(0))

    @classmethod
    def from_record(cls, record: Mapping[str, Mapping[str, float]], channels: Sequence[str],
                    forcing_channels: Sequence[str] = ()) -> "Normalizer":
        """From ``{channel: {"mean":, "std":, "diff_mean":, "diff_std":}}`` (a prepared store's attrs)."""
        def col(chs, key):
            return np.array([float(record[c][key]) for c in chs], dtype=np.float64)
        return cls(tuple(channels), col(channels, "mean"), safe_std(col(channels, "std")),
                   col(channels, "diff_mean"), safe_std(col(channels, "diff_std")),
                   tuple(forcing_channels), col(forcing_channels, "mean"), safe_std(col(forcing_channels, "std")))

    def normalize_state(self, x):
        _check(x, len(self.channels), "normalize_state")
        return (x - _like(self.mean, x)) / _like(self.std, x)

    def denormalize_state(self, z):
        _check(z, len(self.channels), "denormalize_state")
        return z * _like(self.std, z) + _like(self.mean, z)

    def normalize_residual(self, dx):
        """Physical increment x(t+dt) - x(t) -> standardised residual."""
        _check(dx, len(self.channels), "normalize_residual")
        return (dx - _like(self.diff_mean, dx)) / _like(self.diff_std, dx)

    def denormalize_residual(self, r):
        """Standardised residual -> physical increment x(t+dt) - x(t)."""
        _check(r, len(self.channels), "denormalize_residual")
        return r * _like(self.diff_std, r) + _like(self.diff_mean, r)

    def residual_from_states(self, z0, z1):
        """Standardised residual from two STANDARDISED states: (std (z1 - z0) - diff_mean) / diff_std."""
        _check(z0, len(self.channels), "residual_from_states")
        return ((z1 - z0) * _like(self.std, z0) - _like(self.diff_mean, z0)) / _like(self.diff_std, z0)

    def advance(self, z0, r):
        """Next STANDARDISED state from a standardised state and a standardised residual."""
        _check(z0, len(self.channels), "advance")
        return z0 + (r * _like(self.diff_std, r) + _like(self.diff_mean, r)) / _like(self.std, r)

    def normalize_forcing(self, f):
        _check(f, len(self.forcing_channels), "normalize_forcing")
        return (f - _like(self.forcing_mean, f)) / _like(self.forcing_std, f)

    def denormalize_forcing(self, f):
        _check(f, len(self.forcing_channels), "denormalize_forcing")
        return f * _like(self.forcing_std, f) + _like(self.forcing_mean, f)

"""Loss weights: latitude (cos lat, mean 1) and per-variable (docs/training.md, "Loss weights").

Per-token weights are a field (H, W); any layout gets its tokens with a gather
``field.ravel()[ctx.token_ids(0)]`` (see `token_weights`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aeris.data.lexicon import lookup, parse_channel

__all__ = ["latitude_weights", "latitude_weight_field", "variable_weights", "token_weights",
           "DEFAULT_SURFACE_WEIGHTS"]

DEFAULT_SURFACE_WEIGHTS = {"t2m": 1.0, "u10": 0.1, "v10": 0.1, "msl": 0.1, "sst": 0.1}


def latitude_weights(lat_deg: Sequence[float], epsilon: float = 0.0) -> np.ndarray:
    """w(lat) = cos(lat) + epsilon, normalised to mean 1 over the given rows (the model grid).

    With a pole-inclusive grid cos is 0 at the pole rows; epsilon (orig 0.01) keeps them in the loss.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    if lat.ndim != 1 or lat.size == 0:
        raise ValueError(f"latitudes must be a non-empty 1-D array, got shape {lat.shape}")
    if np.any(np.abs(lat) > 90 + 1e-9):
        raise ValueError(f"latitudes must be in [-90, 90] degrees, got min {lat.min()}, max {lat.max()}")
    w = np.clip(np.cos(np.deg2rad(lat)), 0.0, None) + epsilon
    if w.sum() <= 0:
        raise ValueError("latitude weights are all zero (only pole rows and epsilon = 0)")
    return w / w.mean()


def latitude_weight_field(lat_deg: Sequence[float], n_lon: int, epsilon: float = 0.0) -> np.ndarray:
    """`latitude_weights` broadcast to the (H, W) field (mean 1 over the field)."""
    return np.repeat(latitude_weights(lat_deg, epsilon)[:, None], n_lon, axis=1)


def token_weights(field: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Gather a per-pixel field (H, W) at a layout's global token ids -> token_ids.shape."""
    return np.asarray(field).reshape(-1)[np.asarray(token_ids)]


def variable_weights(channels: Sequence[str], surface_weights: Mapping[str, float] | None = None,
                     level_total: float = 1.0) -> np.ndarray:
    """Per-channel loss weights, normalised to mean 1 over the channels.

    Surface channels take ``surface_weights[short name]`` (default t2m 1, u10/v10/msl/sst 0.1).
    A pressure-level variable has total weight ``level_total`` shared over its levels in
    proportion to pressure: w(v, p) = level_total * p / sum_p' p'. Finally all weights are
    divided by their mean, so uniform weights would be 1 and the per-token loss is on the
    scale of a sum of channel errors.
    """
    sw = dict(DEFAULT_SURFACE_WEIGHTS if surface_weights is None else surface_weights)
    parsed = [parse_channel(c) for c in channels]
    if not parsed:
        raise ValueError("no channels given")
    levels: dict[str, float] = {}
    for var, lev in parsed:
        if lev is not None:
            levels[var] = levels.get(var, 0.0) + float(lev)
    w = np.empty(len(parsed))
    for k, (c, (var, lev)) in enumerate(zip(channels, parsed)):
        if lev is None:
            short = lookup(var).short
            if short not in sw:
                raise ValueError(f"no loss weight for surface channel {c!r}; add it to "
                                 f"diffusion.surface_weights (known: {sorted(sw)})")
            w[k] = sw[short]
        else:
            w[k] = level_total * lev / levels[var]
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"variable weights must be non-negative and not all zero, got {w}")
    return w / w.mean()

"""TrigFlow v-prediction objective (docs/training.md, "Objective: TrigFlow"; Lu & Song 2024, sCM).

With data x0 (standardised residual), eps ~ N(0, 1), sigma_d the data scale and
t = atan(sigma / sigma_d) in [0, pi/2):

    x_t = cos(t) x0 + sin(t) sigma_d eps          (the noisy state)
    v   = cos(t) sigma_d eps - sin(t) x0          (= d x_t / d t, the target)
    the network F sees x_t / sigma_d and t; loss per token = sum_c w_lat w_var(c) (sigma_d F - v)^2.

The loss returned is (sum of the weighted token errors this rank holds) / normaliser, with
normaliser = tokens per sample x samples in the WHOLE global batch (docs/training.md, "Gradient normalisation"): the
sum over ranks of their losses is the serial mean over tokens and samples, for any layout.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["sigma_to_t", "t_to_sigma", "trigflow_inputs", "weighted_error_sum", "trigflow_loss",
           "loss_normaliser"]


def sigma_to_t(sigma, sigma_d: float = 1.0):
    """t = atan(sigma / sigma_d) (tensor or float)."""
    if isinstance(sigma, torch.Tensor):
        return torch.atan(sigma / sigma_d)
    return math.atan(sigma / sigma_d)


def t_to_sigma(t, sigma_d: float = 1.0):
    """sigma = sigma_d tan(t)."""
    if isinstance(t, torch.Tensor):
        return sigma_d * torch.tan(t)
    return sigma_d * math.tan(t)


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) matching x's rank."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    return t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def trigflow_inputs(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                    sigma_d: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t / sigma_d, v) for data x0, standard noise eps (same shape) and times t (B,)."""
    if eps.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(eps.shape)} != data shape {tuple(x0.shape)}")
    tt = _bcast(t, x0)
    c, s = torch.cos(tt), torch.sin(tt)
    x_t = c * x0 + s * sigma_d * eps
    v = c * sigma_d * eps - s * x0
    return x_t / sigma_d, v


def weighted_error_sum(F: torch.Tensor, v: torch.Tensor, w_token: torch.Tensor | None,
                       w_channel: torch.Tensor | None, sigma_d: float = 1.0) -> torch.Tensor:
    """sum over tokens and samples of sum_c w_token w_channel(c) (sigma_d F - v)^2.

    F, v: (B, ..., C); w_token broadcastable to (B, ...) (e.g. (n_lw, tpp)); w_channel (C,).
    """
    if F.shape != v.shape:
        raise ValueError(f"prediction shape {tuple(F.shape)} != target shape {tuple(v.shape)}")
    err = (sigma_d * F - v).square()
    if w_channel is not None:
        if w_channel.shape != (F.shape[-1],):
            raise ValueError(f"w_channel must have shape ({F.shape[-1]},), got {tuple(w_channel.shape)}")
        err = err * w_channel.to(err)
    per_token = err.sum(dim=-1)
    if w_token is not None:
        per_token = per_token * w_token.to(per_token)
    return per_token.sum()


def trigflow_loss(model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                  x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                  w_token: torch.Tensor | None, w_channel: torch.Tensor | None,
                  normaliser: float, sigma_d: float = 1.0) -> torch.Tensor:
    """Weighted TrigFlow loss of this rank's tokens, divided by `normaliser`.

    model_fn(x_scaled, cond, t) -> F with x_scaled = x_t / sigma_d (same shape as x0);
    z is STANDARD normal noise (the objective's noise is sigma_d z).
    """
    if normaliser <= 0:
        raise ValueError(f"normaliser must be positive, got {normaliser}")
    x_scaled, v = trigflow_inputs(x0, z, t, sigma_d)
    F = model_fn(x_scaled, cond, t)
    return weighted_error_sum(F, v, w_token, w_channel, sigma_d) / normaliser


def loss_normaliser(tokens_per_sample: int, global_samples: int) -> float:
    """Tokens per sample x samples in the whole global batch (micro-batches x dp x per-rank batch)."""
    if tokens_per_sample < 1 or global_samples < 1:
        raise ValueError(f"normaliser needs positive sizes, got {tokens_per_sample}, {global_samples}")
    return float(tokens_per_sample * global_samples)

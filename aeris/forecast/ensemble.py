"""One ensemble forecast step in token layout: members = different initial noise only.

Member m of the forecast started at init time T0 (integer hours since 1970), at rollout step k,
draws its noise from keys (seed, T0, m, k): any member can be regenerated alone, under any layout.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.objective import network_input
from aeris.diffusion.sampler import sample_members

__all__ = ["init_hours", "member_keys", "sample_residuals"]

_NS_PER_HOUR = 3_600_000_000_000


def init_hours(t) -> int:
    """Whole hours since 1970-01-01 of an initial time (datetime64, or int ns since 1970)."""
    ns = int(np.datetime64(t, "ns").astype(np.int64)) if not isinstance(t, (int, np.integer)) else int(t)
    if ns % _NS_PER_HOUR:
        raise ValueError(f"initial time {np.datetime64(ns, 'ns')} is not a whole hour "
                         f"(noise keys use hours since 1970)")
    return ns // _NS_PER_HOUR


def member_keys(seed: int, init_hours: int, members: Sequence[int], step: int) -> list[tuple[int, ...]]:
    """Keys of `members` at rollout step `step` of the forecast started `init_hours` after 1970."""
    return [(int(seed), int(init_hours), int(m), int(step)) for m in members]


@torch.no_grad()
def sample_residuals(model, ctx, cond: torch.Tensor, keys: Sequence[Sequence[int]],
                     n_out: int, cfg: DiffusionConfig, progress: bool = False) -> torch.Tensor:
    """Standardised residual samples for each key: cond (n_lw, tpp, C_cond) of ONE state, or
    (len(keys), n_lw, tpp, C_cond) one per key -> (len(keys), n_lw, tpp, n_out)."""
    B = len(keys)
    if cond.dim() == 3:
        cond = cond.unsqueeze(0).expand(B, *cond.shape)
    if cond.shape[0] != B:
        raise ValueError(f"cond batch {cond.shape[0]} != number of member keys {B}")

    def denoise(x_scaled, t):
        return model(network_input(x_scaled, cond), t, ctx)

    return sample_members(denoise, ctx.layout, ctx.rank, keys, n_out, cfg,
                          dtype=cond.dtype, device=cond.device, progress=progress)

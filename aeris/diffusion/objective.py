"""The training objective applied to a batch in token layout (any SWiPe layout).

Noise (counter-based, per global token, drawn on the data's device) and noise levels come from
the sample keys (seed, step, sample), so the loss of a sample does not depend on the layout or
on which rank computes it; the loss is divided by the global normaliser so that summing it
over ranks and micro-batches gives the serial mean.
"""

from __future__ import annotations

from typing import Sequence

import torch

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.noise import members_noise, sample_sigmas
from aeris.diffusion.trigflow import sigma_to_t, trigflow_loss
from swipe.layout import WindowLayout

__all__ = ["batch_noise", "diffusion_loss", "network_input"]


def network_input(x_scaled: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Per-pixel network input: [noisy residual / sigma_d | standardised state | forcings]."""
    return torch.cat([x_scaled, cond.to(x_scaled.dtype)], dim=-1)


def batch_noise(layout: WindowLayout, rank: int, sample_keys: Sequence[Sequence[int]],
                n_channels: int, cfg: DiffusionConfig, dtype=torch.float32, device=None):
    """(z (B, n_lw, tpp, C), t (B,)) on `device` for samples keyed e.g. (seed, step, dataset index)."""
    z = members_noise(layout, rank, sample_keys, n_channels, dtype, device)
    t = sigma_to_t(sample_sigmas(sample_keys, cfg.sigma_min, cfg.sigma_max), cfg.sigma_data)
    return z, t.to(device=z.device, dtype=dtype)


def diffusion_loss(model, ctx, batch: dict, sample_keys: Sequence[Sequence[int]], cfg: DiffusionConfig,
                   w_token: torch.Tensor, w_channel: torch.Tensor, normaliser: float,
                   noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """TrigFlow loss of one micro-batch on this rank's tokens / normaliser (see trigflow_loss).

    ``noise``: the micro-batch's ``batch_noise`` (z, t) when the caller drew it (e.g. to time
    it); drawn here otherwise."""
    x0 = batch["target"]
    cond = torch.cat([batch["cond"], batch["forcing"]], dim=-1)
    z, t = noise if noise is not None else \
        batch_noise(ctx.layout, ctx.rank, sample_keys, x0.shape[-1], cfg, x0.dtype, x0.device)

    def model_fn(x_scaled, cond_, t_):
        return model(network_input(x_scaled, cond_), t_, ctx)

    return trigflow_loss(model_fn, x0, cond, t, z, w_token, w_channel, normaliser, cfg.sigma_data)

"""Exponential moving average of the weights, with its half-life given in training samples."""

from __future__ import annotations

import torch

__all__ = ["EMA", "ema_decay"]


def ema_decay(samples_per_step: int, halflife_samples: float) -> float:
    """Per-step decay beta with beta ** (steps covering `halflife_samples` samples) = 1/2."""
    if halflife_samples <= 0:
        return 0.0
    return 0.5 ** (samples_per_step / halflife_samples)


class EMA:
    """EMA weights ``e <- beta e + (1 - beta) w`` kept in fp32 beside the model's parameters.

    Keyed by parameter name so it can be saved, resharded and loaded like a state dict.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            p.copy_(self.shadow[n].to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks parameters {sorted(missing)[:5]}...")
        self.decay = float(state["decay"])
        self.shadow = {n: state["shadow"][n].float().clone() for n in self.shadow}

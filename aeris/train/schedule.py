"""Learning-rate schedule: linear warm-up then cosine decay to a floor (docs/training.md, "Learning-rate schedule")."""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based).

    warm-up:  lr * (step + 1) / warmup                                   for step < warmup
    cosine:   lr * (r + (1 - r) * (1 + cos(pi * p)) / 2),  p = (step - warmup) / (total - 1 - warmup)
    with r = min_ratio, so the rate is lr at step `warmup`, reaches lr * r at the last step
    (total - 1, when the cosine phase has two steps or more) and stays there.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - 1 - warmup, 1)  # a cosine phase of one step stays at lr
    p = min((step - warmup) / span, 1.0)
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))

"""AdamW with weight decay on matrix weights only (docs/training.md, "Optimizer and weight decay").

The original meant to decay matrix weights and not embeddings, norms, biases or the head,
but its grouping put every parameter in the no-decay group. Here the groups are built from
the model's own declaration (`decay_parameter_names`) and checked to cover every trainable
parameter exactly once.
"""

from __future__ import annotations

import torch

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: torch.nn.Module, weight_decay: float, decay_names: set[str]) -> list[dict]:
    """Two AdamW groups: `decay_names` with `weight_decay`, every other trainable parameter without."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    unknown = set(decay_names) - set(named)
    if unknown:
        raise ValueError(f"decay names not parameters of the model: {sorted(unknown)[:5]}")
    decay = [p for n, p in named.items() if n in decay_names]
    no_decay = [p for n, p in named.items() if n not in decay_names]
    return [
        {"params": decay, "weight_decay": weight_decay, "names": sorted(decay_names)},
        {"params": no_decay, "weight_decay": 0.0, "names": sorted(set(named) - set(decay_names))},
    ]


def build_optimizer(model: torch.nn.Module, *, lr: float, betas, eps: float, weight_decay: float,
                    decay_names: set[str]) -> torch.optim.AdamW:
    groups = [{k: v for k, v in g.items() if k != "names"}
              for g in param_groups(model, weight_decay, decay_names)]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)

"""AdamW with weight decay on matrix weights only (docs/training.md, "Optimizer and weight decay").

The original meant to decay matrix weights and not embeddings, norms, biases or the head,
but its grouping put every parameter in the no-decay group. Here the groups are built from
the model's own declaration (`decay_parameter_names`) and checked to cover every trainable
parameter exactly once.

Kernel (`adamw_kernel`): the fused AdamW kernel on CUDA/XPU, the multi-tensor (foreach) one
elsewhere, each only after a one-element trial step of that kernel on a tensor of the
parameters' kind (device, dtype, DTensor placements) succeeded; otherwise the next one, with
the reason. The update maths is the same in all three (foreach = the per-tensor loop bit for
bit on CPU; fused reorders the arithmetic, ~1 ulp).
"""

from __future__ import annotations

import logging

import torch

__all__ = ["param_groups", "build_optimizer", "adamw_kernel", "adamw"]

log = logging.getLogger(__name__)

_FUSED_DEVICES = ("cuda", "xpu")
_TRIED: dict[tuple, str | None] = {}  # (kind, device, dtype, placements) -> None (works) or the error


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


def _like(p: torch.Tensor) -> torch.Tensor:
    """A one-element tensor of p's kind: same device and dtype; a DTensor on p's mesh with p's
    placements when p is one (built from a local tensor: no communication)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        DTensor = ()
    local = torch.zeros(1, dtype=p.dtype, device=p.device)
    if isinstance(p, DTensor):
        return DTensor.from_local(local, p.device_mesh, p.placements, run_check=False)
    return local


def _trial(kind: str, p: torch.Tensor) -> str | None:
    """None if one AdamW step with ``kind`` (fused | foreach) runs on a tensor like p, else why not."""
    key = (kind, p.device.type, p.dtype, type(p).__name__, tuple(map(str, getattr(p, "placements", ()))))
    if key not in _TRIED:
        try:
            q = torch.nn.Parameter(_like(p))
            q.grad = torch.ones_like(q)
            torch.optim.AdamW([q], lr=1e-3, **{kind: True}).step()
            _TRIED[key] = None
        except Exception as e:  # any failure means: not this kernel, here
            _TRIED[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return _TRIED[key]


def adamw_kernel(params) -> tuple[dict, str]:
    """(AdamW keyword arguments, reason) for these parameters: ``{"fused": True}`` on CUDA/XPU,
    else ``{"foreach": True}``, each if its trial step works on a tensor of their kind, else
    the per-tensor loop ``{"foreach": False}``."""
    params = [p for p in params]
    if not params:
        return {"foreach": False}, "no parameters"
    kinds = {(p.device.type, p.dtype, type(p).__name__) for p in params}
    if len(kinds) > 1:
        return {"foreach": False}, f"parameters of several kinds {sorted(map(str, kinds))}: per-tensor loop"
    p = params[0]
    tag = f"{type(p).__name__} {p.dtype} on {p.device.type}"
    why = []
    if p.device.type in _FUSED_DEVICES:
        err = _trial("fused", p)
        if err is None:
            return {"fused": True}, f"fused kernel ({tag})"
        why.append(f"fused failed its trial step ({err})")
    else:
        why.append(f"no fused kernel used on {p.device.type}")
    err = _trial("foreach", p)
    if err is None:
        return {"foreach": True}, f"foreach kernel ({tag}; {'; '.join(why)})"
    why.append(f"foreach failed its trial step ({err})")
    return {"foreach": False}, f"per-tensor loop ({tag}; {'; '.join(why)})"


def adamw(groups: list[dict], *, lr: float, betas, eps: float) -> torch.optim.AdamW:
    """torch AdamW over ``groups`` with the kernel `adamw_kernel` picks (logged)."""
    kw, why = adamw_kernel([p for g in groups for p in g["params"]])
    log.info("AdamW: %s", why)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kw)


def build_optimizer(model: torch.nn.Module, *, lr: float, betas, eps: float, weight_decay: float,
                    decay_names: set[str]) -> torch.optim.AdamW:
    groups = [{k: v for k, v in g.items() if k != "names"}
              for g in param_groups(model, weight_decay, decay_names)]
    return adamw(groups, lr=lr, betas=betas, eps=eps)

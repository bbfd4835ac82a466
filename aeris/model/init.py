"""Keyed initialisation: every parameter drawn from a generator keyed by its GLOBAL name.

    init_parameters(module, seed)   # module: AerisNet or any AerisStage, on any device

Parameter ``blocks.3.attn.qkv.weight`` gets the same values whether it lives in the whole
network of one process or in the stage of pipeline rank 2 of any mesh, so a stage can be built
on the meta device, materialised on its rank's device and initialised without the whole
network existing anywhere (docs/model.md, "Initialisation"). The rules (adaLN-Zero):

* matrix weights of the input embedding, attention, SwiGLU and the modulation's hidden layer:
  truncated normal N(0, std^2) cut at +-2 std, std = sqrt(2 / (5 d));
* biases, the modulation's output layer and the output Linear: zero (every residual gate and
  the network output start at 0);
* RMSNorm gains: one.

Values are drawn on the CPU in float32 (the same numbers on every device) and handed to
``assign(parameter, whole)``, by default a copy; a sharded stage passes one that keeps the
rank's slice (aeris.distributed.stage.assign_slice), so it holds exactly the shards of the
unsharded weights.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

import torch

from torch import nn

from aeris.model.layers import default_std

__all__ = ["init_parameters", "init_rule", "materialise", "parameter_seed"]

_TRUNC = re.compile(r"(^input\.weight$|\.attn\.(qkv|proj)\.weight$|\.mlp\.fc(1_g|1_x|2)\.weight$"
                    r"|modulation\.hidden\.weight$)")
_ZERO = re.compile(r"(\.bias$|modulation\.out\.weight$|^out\.linear\.weight$)")
_ONE = re.compile(r"(norm\d?\.weight$|^out\.norm\.weight$)")


def init_rule(name: str) -> str:
    """'trunc_normal', 'zeros' or 'ones' for a global parameter name (ValueError if none)."""
    for rule, pat in (("zeros", _ZERO), ("trunc_normal", _TRUNC), ("ones", _ONE)):
        if pat.search(name):
            return rule
    raise ValueError(f"no initialisation rule for parameter {name!r}: add one in aeris.model.init")


def parameter_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed of (run seed, global parameter name)."""
    digest = hashlib.blake2b(f"init|{int(seed)}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _copy(p: torch.Tensor, whole: torch.Tensor) -> None:
    p.copy_(whole)


@torch.no_grad()
def init_parameters(module: nn.Module, seed: int,
                    assign: Callable[[torch.Tensor, torch.Tensor], None] = _copy) -> nn.Module:
    """Initialise every parameter of ``module`` (names as in the whole network) in place."""
    std = default_std(module.cfg.dim)
    for name, p in module.named_parameters():
        rule = init_rule(name)
        if rule == "zeros":
            p.zero_()
        elif rule == "ones":
            p.fill_(1.0)
        else:
            g = torch.Generator().manual_seed(parameter_seed(seed, name))
            w = torch.empty(p.shape, dtype=torch.float32)
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=g)
            assign(p, w)
            del w  # at most one whole parameter exists at a time
    return module


def materialise(module: nn.Module, device: torch.device | str, seed: int,
                assign: Callable[[torch.Tensor, torch.Tensor], None] = _copy) -> nn.Module:
    """A meta-device module (the whole network, a stage, or a sharded stage with its
    ``assign``) allocated on ``device`` and initialised by `init_parameters`: the same weights
    in every layout."""
    return init_parameters(module.to_empty(device=device), seed, assign)

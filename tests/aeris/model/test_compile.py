"""model.compile: the compiled blocks give the eager network's output and gradients (fp32),
with and without activation checkpointing, and compile each block function once, not per block.

The default suite traces with the ``aot_eager`` backend (dynamo + AOT autograd, no code
generation: seconds); the inductor case (the default backend, C++ code generated on the CPU)
takes over a minute here and is marked slow.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from aeris.model.config import ModelConfig
from aeris.model.network import AerisNet
from swipe.context import SerialContext
from swipe.layout import WindowLayout

H, W = 8, 16


def _pair(backend: str, **over):
    cfg = ModelConfig(**{**dict(dim=16, depth=3, heads=2, mlp_hidden=24, window=[4, 4]), **over})
    eager = AerisNet(cfg, 2, 3, (H, W))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every layer non-zero (the adaLN-Zero init would make blocks identities)
        for p in eager.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    comp = AerisNet(ModelConfig(**{**cfg.__dict__, "compile": True, "compile_backend": backend}), 2, 3, (H, W))
    comp.load_state_dict(eager.state_dict())
    return eager, comp


def _check(backend: str, **over):
    eager, comp = _pair(backend, **over)
    layout = WindowLayout(H, W, 4, 4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, layout.n_local_windows, layout.tokens_per_piece, 3, generator=g)
    t = torch.rand(2, generator=g)
    w = torch.randn(2, layout.n_local_windows, layout.tokens_per_piece, 2, generator=g)
    graphs = counters["stats"]["unique_graphs"]
    outs = []
    for net in (eager, comp):
        out = net(x, t, SerialContext(layout))
        (out * w).sum().backward()
        outs.append(out.detach())
    assert outs[0].abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for (name, pe), pc in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=name)
    # at most the two block functions were (re)compiled for the whole network
    assert counters["stats"]["unique_graphs"] - graphs <= 2


@pytest.mark.parametrize("checkpoint_blocks", [False, True])
def test_compiled_blocks_equal_eager_aot_eager(checkpoint_blocks):
    _check("aot_eager", checkpoint_blocks=checkpoint_blocks, pole_mask=True)


@pytest.mark.slow
def test_compiled_blocks_equal_eager_inductor():
    _check("inductor", checkpoint_blocks=True, norm_order="modulate_norm", depth=4)


def test_compiled_model_still_deep_copies():
    import copy

    _, comp = _pair("aot_eager")
    twin = copy.deepcopy(comp)
    assert twin.blocks[0].compile_backend == "aot_eager"

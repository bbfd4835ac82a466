"""A training step does no host work per block: no host->device copies, no device->host syncs.

On the CPU a copy to the device is invisible, so the test counts the calls that would copy or
sync on an accelerator, made anywhere during a warm serial forward + backward of a small
AerisNet: tensors made from host data (``torch.as_tensor``, ``torch.tensor``,
``torch.from_numpy``), ``Tensor.to`` with a device, ``Tensor.cpu`` / ``item`` / ``tolist`` /
``numpy`` / ``__bool__``, and ``torch.nonzero`` (a data-dependent shape). A second context of
another grid would rebuild its tables once, so the step is taken twice on one context and
counted the second time: the count must not grow with depth (the pole windows, RoPE and the
frame changes are per block) and may only contain the per-step conversions of the inputs.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from aeris.model.config import ModelConfig
from aeris.model.network import AerisNet
from swipe.context import SerialContext
from swipe.layout import WindowLayout

_TORCH = ("as_tensor", "tensor", "from_numpy", "nonzero")
_TENSOR = ("cpu", "item", "tolist", "numpy", "__bool__")


def _has_device(args, kwargs) -> bool:
    return "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args)


@pytest.fixture
def host_calls(monkeypatch):
    """A Counter of the host-touching calls made while the fixture is active."""
    calls: Counter = Counter()

    def wrap(owner, name, when=lambda a, k: True):
        fn = getattr(owner, name)

        def counted(*args, **kwargs):
            if when(args[1:] if owner is torch.Tensor else args, kwargs):
                calls[name] += 1
            return fn(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    for name in _TORCH:
        wrap(torch, name)
    for name in _TENSOR:
        wrap(torch.Tensor, name)
    wrap(torch.Tensor, "to", _has_device)
    yield calls


def _step_calls(depth: int, host_calls: Counter) -> Counter:
    cfg = ModelConfig(dim=16, depth=depth, heads=2, mlp_hidden=24, window=[4, 4], pole_mask=True, rope=True,
                      shift_every=1)
    H, W = 8, 16
    layout = WindowLayout(H, W, 4, 4)
    net = AerisNet(cfg, 2, 3, (H, W))
    with torch.no_grad():
        for blk in net.blocks:  # open the gates so every block is on the autograd path
            blk.modulation.out.bias.fill_(0.1)
        net.out.linear.weight.fill_(0.1)
    ctx = SerialContext(layout)
    x = torch.randn(2, layout.n_local_windows, layout.tokens_per_piece, 3)
    t = torch.rand(2)

    def step():
        net(x, t, ctx).square().sum().backward()

    step()  # builds the context's tables
    host_calls.clear()
    step()
    got = Counter(host_calls)
    assert net.blocks[0].attn.qkv.weight.grad.abs().max() > 0
    return got


def test_training_step_does_no_host_work_per_block(host_calls):
    shallow, deep = _step_calls(2, host_calls), _step_calls(6, host_calls)
    assert deep == shallow, (shallow, deep)
    # what is left is per step, not per block: time_embedding's conversion of t to the model device
    assert set(deep) <= {"as_tensor", "to"} and sum(deep.values()) <= 2, deep

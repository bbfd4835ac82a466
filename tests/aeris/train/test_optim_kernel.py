"""AdamW kernel choice: foreach on CPU (also for FSDP2 DTensor shards), fused where the device
has it, a per-tensor loop as the last resort; the update equals torch's per-tensor loop."""

from __future__ import annotations

import pytest
import torch

from aeris.train import optim
from aeris.train.optim import adamw, adamw_kernel


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GELU(), torch.nn.Linear(5, 3)).double()


def _steps(model, opt, n=3):
    for s in range(n):
        x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def test_cpu_takes_foreach_and_matches_the_loop():
    m = _net()
    kw, why = adamw_kernel(list(m.parameters()))
    assert kw == {"foreach": True} and "no fused kernel used on cpu" in why
    a = _steps(m, adamw([{"params": list(m.parameters()), "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.95),
                        eps=1e-8))
    ref = _net()
    b = _steps(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                                      weight_decay=0.1, foreach=False))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=0)


def test_fused_when_the_device_has_it(monkeypatch):
    # CPU stands in for an accelerator here: torch has a fused CPU kernel the trial step can run
    monkeypatch.setattr(optim, "_FUSED_DEVICES", ("cpu",))
    m = _net()
    kw, why = adamw_kernel(list(m.parameters()))
    assert kw == {"fused": True} and why.startswith("fused kernel")
    a = _steps(m, adamw([{"params": list(m.parameters())}], lr=1e-2, betas=(0.9, 0.95), eps=1e-8))
    ref = _net()
    b = _steps(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False))
    for x, y in zip(a, b):  # the same update up to the order of its arithmetic
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_fallbacks_say_why(monkeypatch):
    monkeypatch.setattr(optim, "_FUSED_DEVICES", ("cpu",))
    monkeypatch.setattr(optim, "_trial", lambda kind, p: "RuntimeError: no kernel" if kind == "fused" else None)
    kw, why = adamw_kernel(list(_net().parameters()))
    assert kw == {"foreach": True} and "fused failed its trial step (RuntimeError: no kernel)" in why
    monkeypatch.setattr(optim, "_trial", lambda kind, p: "RuntimeError: nope")
    kw, why = adamw_kernel(list(_net().parameters()))
    assert kw == {"foreach": False} and "foreach failed" in why
    mixed = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert adamw_kernel(mixed)[0] == {"foreach": False}


def _sharded_kernel(rank, world):
    """FSDP2 shards (DTensor) on gloo: the trial step runs on a DTensor like them."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    m = _net()
    fully_shard(m, mesh=init_device_mesh("cpu", (world,)))
    params = list(m.parameters())
    assert all(isinstance(p, DTensor) for p in params)
    kw, why = adamw_kernel(params)
    opt = adamw([{"params": params, "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    after = [p.full_tensor() for p in _steps(m, opt)]
    return kw, why, [t.tolist() for t in after]


@pytest.mark.multiproc
def test_fsdp2_dtensor_shards_take_foreach_and_match_the_serial_loop():
    from swipe.testing import run_distributed
    results = run_distributed(_sharded_kernel, 2, timeout=120)
    ref = _net()
    want = _steps(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                                         weight_decay=0.1, foreach=False))
    for kw, why, after in results:
        assert kw == {"foreach": True}, why
        assert "DTensor" in why
        for x, y in zip(after, want):
            torch.testing.assert_close(torch.tensor(x, dtype=torch.float64), y, rtol=1e-12, atol=1e-14)

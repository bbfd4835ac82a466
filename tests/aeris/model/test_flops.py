"""FLOP accounting: exact matmul count vs torch's FlopCounterMode; the paper formula by hand."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aeris.config import load_config
from aeris.model.config import ModelConfig
from aeris.model.flops import exact_flops_per_sample, forward_macs, mfu, paper_flops_per_sample, parameter_count
from aeris.model.network import AerisNet
from swipe.context import SerialContext
from swipe.layout import WindowLayout


@pytest.mark.parametrize("over", [dict(), dict(adaln_hidden=False, mlp_hidden=40), dict(window=[4, 8], pole_mask=False)])
def test_exact_count_matches_flop_counter(over):
    cfg = ModelConfig(**{**dict(dim=16, depth=3, heads=2, window=[4, 4]), **over})
    H, W, B, n_in, n_out = 8, 16, 2, 7, 3
    net = AerisNet(cfg, n_out, n_in, (H, W))
    layout = WindowLayout(H, W, *cfg.window)
    x = torch.randn(B, layout.n_local_windows, layout.tokens_per_piece, n_in)
    t = torch.rand(B)
    # FlopCounterMode has no formula for the fused CPU flash-attention kernel: count through the
    # math kernel, which runs the same QK^T and AV matmuls as (counted) bmm calls
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd:
            with torch.no_grad():
                net(x, t, SerialContext(layout))
        assert fwd.get_total_flops() == B * exact_flops_per_sample(net, training=False)
        with FlopCounterMode(display=False) as train:
            net(x, t, SerialContext(layout)).square().sum().backward()
        assert train.get_total_flops() == B * exact_flops_per_sample(net)


def test_paper_formula_by_hand():
    cfg = ModelConfig(dim=8, depth=2, heads=2, mlp_hidden=12, window=[2, 4])
    T, C = 32, 5
    # 6 * [2 * (4*32*64 + 2*32*8*8 + 3*32*12*8) + 2*32*5*8]
    assert paper_flops_per_sample(cfg, T, C) == 6 * (2 * (8192 + 4096 + 9216) + 2560)


def test_exact_and_paper_counts_at_scale():
    """1.3B on 720x1440: the exact count adds adaLN and the head to the paper's blocks; the
    paper's attention/MLP/qkv terms are the same matmuls (3 x forward = 6 x MACs)."""
    cfg = load_config("aeris-1.3b-6h").model
    T, n_in, n_out = 720 * 1440, 142, 69
    macs = forward_macs(cfg, T, n_in, n_out)
    blocks = macs["qkv"] + macs["proj"] + macs["attention"] + macs["mlp"]
    paper = paper_flops_per_sample(cfg, T, n_in)
    assert paper == pytest.approx(6 * blocks + 6 * 2 * T * n_in * cfg.dim)
    with torch.device("meta"):
        net = AerisNet(cfg, n_out, n_in, (720, 1440))
    exact = exact_flops_per_sample(net)
    # at 1e6 tokens the per-sample adaLN and the head are negligible: ~6.05e15 FLOP per sample
    assert exact / paper == pytest.approx(1.0, abs=1e-3)
    assert exact == pytest.approx(6.05e15, rel=1e-3)
    # adaLN weights act once per sample, not per token: 6 T P overestimates by the 7d^2 per block
    d, L = cfg.dim, cfg.depth
    per_token_params = parameter_count(cfg, n_in, n_out) - L * 7 * d * d - 3 * d * d
    assert exact == pytest.approx(6 * T * per_token_params + 12 * T * L * 900 * d, rel=2e-3)


def test_mfu():
    assert mfu(5e14, 1e15) == 0.5
    with pytest.raises(ValueError, match="peak"):
        mfu(1.0, 0.0)

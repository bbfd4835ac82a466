"""Layers of the AERIS network against plain formulas (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aeris.model.layers import (Modulation, RmsNorm, SwiGLU, apply_rope, axial_rope_angles, init_linear,
                                modulate, position_embedding_2d, sincos_1d, swiglu, timestep_embedding)


@pytest.fixture(autouse=True)
def _float64():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


def test_rmsnorm_formula_and_unit_gain_init():
    norm = RmsNorm(8, eps=1e-6)
    assert torch.equal(norm.weight, torch.ones(8))
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 8)
    ref = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), ref)


def test_swiglu_matches_formula():
    mlp = SwiGLU(6, 10, bias=False)
    x = torch.randn(4, 6)
    ref = swiglu(x, mlp.fc1_g.weight, mlp.fc1_x.weight, mlp.fc2.weight)
    # independent: silu(a) = a * sigmoid(a)
    a, b = x @ mlp.fc1_g.weight.T, x @ mlp.fc1_x.weight.T
    ref2 = (a * torch.sigmoid(a) * b) @ mlp.fc2.weight.T
    torch.testing.assert_close(mlp(x), ref)
    torch.testing.assert_close(mlp(x), ref2)
    assert sum(p.numel() for p in mlp.parameters()) == 3 * 6 * 10


def test_modulate_broadcasts_per_sample():
    x = torch.randn(2, 3, 4, 5)
    shift, scale = torch.randn(2, 5), torch.randn(2, 5)
    out = modulate(x, shift, scale)
    for b in range(2):
        torch.testing.assert_close(out[b], x[b] * (1 + scale[b]) + shift[b])


@pytest.mark.parametrize("hidden", [True, False])
def test_modulation_zero_init_and_shapes(hidden):
    m = Modulation(8, 6, hidden, std=0.1)
    c = torch.randn(3, 8)
    parts = m(c)
    assert len(parts) == 6 and all(p.shape == (3, 8) for p in parts)
    assert all(torch.equal(p, torch.zeros(3, 8)) for p in parts)
    n = sum(p.numel() for p in m.parameters())
    assert n == (8 * 8 + 8 if hidden else 0) + 8 * 48 + 48
    with torch.no_grad():
        m.out.weight.normal_()
    h = torch.nn.functional.silu(c @ m.hidden.weight.T + m.hidden.bias) if hidden else c
    torch.testing.assert_close(torch.cat(m(c), -1), h @ m.out.weight.T + m.out.bias)


def test_init_linear_truncated_normal():
    torch.manual_seed(0)
    lin = nn.Linear(400, 500)
    std = math.sqrt(2 / (5 * 400))
    init_linear(lin, std)
    w = lin.weight
    assert w.abs().max() <= 2 * std + 1e-12
    # std of N(0, s^2) truncated at +-2s is 0.8796 s
    assert abs(w.std().item() / std - 0.8796) < 0.01
    assert torch.equal(lin.bias, torch.zeros(500))


def _rope_complex_reference(x: torch.Tensor, coords: torch.Tensor, theta: float) -> torch.Tensor:
    """Pairs (x_i, x_{i+dh/2}) as complex numbers times exp(i angle); angle = row/col * theta^(-k/n)."""
    dh = x.shape[-1]
    n = dh // 4
    out = torch.empty_like(x)
    for i in range(dh // 2):
        axis, k = divmod(i, n)
        ang = coords[:, axis].double() * theta ** (-k / n)  # (T,)
        z = torch.complex(x[..., i], x[..., i + dh // 2]) * torch.exp(1j * ang)[:, None]
        out[..., i], out[..., i + dh // 2] = z.real, z.imag
    return out


def test_rope_matches_complex_rotation():
    T, heads, dh = 6, 2, 8
    coords = torch.tensor([[0, 0], [0, 3], [2, 1], [5, 5], [1, 4], [3, 0]])
    x = torch.randn(2, 3, T, heads, dh)
    out = apply_rope(x, axial_rope_angles(coords, dh, 100.0))
    torch.testing.assert_close(out, _rope_complex_reference(x, coords, 100.0))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_rope_scores_depend_only_on_relative_position():
    dh = 16
    q, k = torch.randn(dh), torch.randn(dh)

    def score(pq, pk):
        c = torch.tensor([pq, pk])
        ang = axial_rope_angles(c, dh, 100.0)
        r = apply_rope(torch.stack([q, k])[:, None, :], ang)[:, 0]
        return torch.dot(r[0], r[1])

    s = score((1, 2), (4, 7))
    torch.testing.assert_close(score((11, -3), (14, 2)), s)  # same offset (3, 5)
    torch.testing.assert_close(score((0, 0), (3, 5)), s)
    assert abs(score((0, 0), (3, 6)) - s) > 1e-6  # another offset changes the score
    assert abs(score((0, 0), (4, 5)) - s) > 1e-6  # both axes are encoded
    with pytest.raises(ValueError, match="head_dim % 4"):
        axial_rope_angles(torch.zeros(1, 2), 6, 100.0)


def test_sinusoidal_embeddings():
    p = torch.tensor([0.0, 1.0, 7.5])
    e = sincos_1d(p, 6, base=10000.0)
    w = 10000.0 ** (-np.arange(3) / 3)
    ref = np.concatenate([np.sin(p.numpy()[:, None] * w), np.cos(p.numpy()[:, None] * w)], axis=1)
    np.testing.assert_allclose(e.numpy(), ref, rtol=1e-12, atol=1e-12)
    te = timestep_embedding(torch.tensor([0.3, 1.2]), 8, scale=1000.0)
    assert te.dtype == torch.float32 and te.shape == (2, 8)
    np.testing.assert_allclose(te.numpy(), sincos_1d(torch.tensor([300.0, 1200.0]), 8).numpy(), rtol=1e-6)


def test_position_embedding_uses_global_row_and_column():
    W, d = 10, 8
    ids = np.array([[0, 13], [27, 9]])
    pe = position_embedding_2d(ids, W, d)
    assert pe.shape == (2, 2, d)
    for g, row in zip(ids.ravel(), pe.reshape(-1, d)):
        y, x = divmod(int(g), W)
        np.testing.assert_allclose(row[:4].numpy(), sincos_1d(torch.tensor([float(y)]), 4)[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(row[4:].numpy(), sincos_1d(torch.tensor([float(x)]), 4)[0].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="dim % 4"):
        position_embedding_2d(ids, W, 6)

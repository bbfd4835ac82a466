"""Layers of the AERIS network against plain formulas (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aeris.model.layers import (Modulation, RMSNorm, SwiGLU, apply_rope, axial_rope_angles, compute_dtype,
                                context_constant, init_linear, modulate, periodic_sincos, position_embedding_2d,
                                rope_tables, sincos_1d, swiglu, timestep_embedding)


@pytest.fixture(autouse=True)
def _float64():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


def test_rmsnorm_formula_and_unit_gain_init():
    norm = RMSNorm(8, eps=1e-6)
    assert torch.equal(norm.weight, torch.ones(8)) and [n for n, _ in norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 8)
    ref = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), ref)
    # bf16 activations with a float32 gain: computed with the gain in bf16, output bf16
    xb = x.float().bfloat16()
    out = RMSNorm(8, eps=1e-6).float()
    with torch.no_grad():
        out.weight.copy_(norm.weight)
    got = out(xb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), ref, rtol=2e-2, atol=2e-2)


def test_compute_dtype_follows_autocast():
    w = torch.zeros(2, dtype=torch.float32)
    assert compute_dtype(w) is torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(w) is torch.bfloat16
        assert compute_dtype(w.double()) is torch.float64  # autocast leaves float64 alone
    assert compute_dtype(torch.zeros(2, device="meta", dtype=torch.float32)) is torch.float32


def test_context_constant_is_built_once_per_context_and_key():
    class Ctx:
        pass

    a, b, calls = Ctx(), Ctx(), []

    def build(tag):
        calls.append(tag)
        return object()

    first = context_constant(a, ("t", 1), lambda: build("a1"))
    assert context_constant(a, ("t", 1), lambda: build("again")) is first
    assert context_constant(a, ("t", 2), lambda: build("a2")) is not first
    assert context_constant(b, ("t", 1), lambda: build("b1")) is not first
    assert calls == ["a1", "a2", "b1"]
    with torch.inference_mode():  # a table first built by an inference pass is a normal tensor
        table = context_constant(a, ("t", 3), lambda: torch.ones(2))
    assert not table.is_inference()
    x = torch.ones(2, requires_grad=True)
    (x * table).sum().backward()  # may be saved for backward


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
    cos, sin = rope_tables(coords.numpy(), dh, 100.0, torch.float64)
    assert cos.shape == sin.shape == (T, dh)
    out = apply_rope(x, cos[:, None], sin[:, None])
    torch.testing.assert_close(out, _rope_complex_reference(x, coords, 100.0))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation
    c32, s32 = rope_tables(coords.numpy(), dh, 100.0, torch.float32)
    assert c32.dtype == s32.dtype == torch.float32
    torch.testing.assert_close(c32.double(), cos, rtol=0, atol=1e-7)


def test_rope_scores_depend_only_on_relative_position():
    dh = 16
    q, k = torch.randn(dh), torch.randn(dh)

    def score(pq, pk):
        cos, sin = rope_tables(np.array([pq, pk]), dh, 100.0, torch.float64)
        r = apply_rope(torch.stack([q, k]), cos, sin)
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


def _circle_reference(x: float, n: int, W: int) -> np.ndarray:
    """[sin, cos] of x at harmonics m = 1, 2, ... of the circle of W points (below Nyquist, cycling)."""
    m = np.array([1 + k % max(1, (W - 1) // 2) for k in range(n // 2)], dtype=np.float64)
    a = 2 * np.pi * m * x / W
    return np.concatenate([np.sin(a), np.cos(a)])


def test_position_embedding_uses_global_row_and_column():
    W, d = 10, 8
    ids = np.array([[0, 13], [27, 9]])
    pe = position_embedding_2d(ids, W, d)
    assert pe.shape == (2, 2, d) and pe.dtype == torch.float32
    for g, row in zip(ids.ravel(), pe.reshape(-1, d)):
        y, x = divmod(int(g), W)
        np.testing.assert_allclose(row[:4].numpy(), sincos_1d(torch.tensor([float(y)]), 4)[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(row[4:].numpy(), _circle_reference(x, 4, W), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="dim % 4"):
        position_embedding_2d(ids, W, 6)


@pytest.mark.parametrize("W,n", [(1440, 64), (16, 16), (7, 6)])
def test_longitude_encoding_is_periodic_without_a_seam(W, n):
    """x and x + W encode the same (to the bit); columns W-1 and 0 are as close as 0 and 1."""
    x = torch.arange(W, dtype=torch.float64)
    e = periodic_sincos(x, n, W)
    assert torch.equal(periodic_sincos(x + W, n, W), e)
    assert torch.equal(periodic_sincos(x - 3 * W, n, W), e)
    np.testing.assert_allclose(e.numpy(), np.stack([_circle_reference(float(v), n, W) for v in range(W)]),
                               rtol=1e-12, atol=1e-12)
    step = (e - torch.roll(e, -1, dims=0)).norm(dim=1)  # |e(x) - e(x+1 mod W)|, the seam included
    np.testing.assert_allclose(step.numpy(), np.full(W, step[0].item()), rtol=1e-10)
    assert step[0] > 0


def test_the_latitude_ladder_would_have_a_seam_in_longitude():
    """What periodic_sincos fixes: with sincos_1d on x, columns 1439 and 0 of a 0.25 deg grid are
    far apart while their neighbours elsewhere are close."""
    e = sincos_1d(torch.arange(1440, dtype=torch.float64), 64)
    assert (e[-1] - e[0]).norm() > 5 * (e[1] - e[0]).norm()


def test_position_embedding_rows_are_distinct_on_a_grid():
    """Every (y, x) of a 16 x 32 grid gets its own encoding (no two tokens collide)."""
    H, W, d = 16, 32, 16
    pe = position_embedding_2d(np.arange(H * W), W, d, torch.float64)
    dist = torch.cdist(pe, pe) + torch.eye(H * W) * 1e9
    assert dist.min() > 1e-3

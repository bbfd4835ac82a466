"""Counter-based keyed noise (docs/training.md, "Keyed noise"): known answers, a scalar reference,
layout invariance, reproducibility and statistics against N(0, 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from aeris.diffusion.noise import (_cos_sin, _ln_uniform, _tables, field_noise, key_seed, members_noise, philox2x32,
                                   rank_token_ids, token_noise, window_noise)
from swipe.layout import WindowLayout

M32 = 0xFFFFFFFF


# ---- independent references -------------------------------------------------------------------
def ref_philox(c0: int, c1: int, k: int, rounds: int = 10) -> tuple[int, int]:
    """Philox-2x32 on Python integers (exact arithmetic, no tensors)."""
    for _ in range(rounds):
        p = 0xD256D193 * c0
        c0, c1 = ((p >> 32) ^ k ^ c1) & M32, p & M32
        k = (k + 0x9E3779B9) & M32
    return c0, c1


def ref_mix(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def ref_noise(keys, g: int, c: int) -> float:
    """z(keys, g, c) written out from the documented formula, in float64 with the math module."""
    s = key_seed("noise", keys)
    t0, t1 = ref_philox(g, s >> 32, s & M32)
    j = c // 2
    h_r, h_a = ref_mix(t0 ^ ((j * 0x9E3779B9) & M32)), ref_mix(t1 ^ ((j * 0x7F4A7C15) & M32))
    r = math.sqrt(-2.0 * math.log((h_r + 0.5) / 2 ** 32))
    theta = 2 * math.pi * h_a / 2 ** 32
    return r * (math.cos(theta) if c % 2 == 0 else math.sin(theta))


def test_philox_known_answers():
    """Philox-2x32-10 known-answer vectors published with the Random123 library."""
    cases = [((0, 0), 0, (0xFF1DAE59, 0x6CD10DF2)),
             ((M32, M32), M32, (0x2C3F628B, 0xAB4FD7AD)),
             ((0x243F6A88, 0x85A308D3), 0x13198A2E, (0xDD7CE038, 0xF62A4C12))]
    x0 = torch.tensor([c[0][0] for c in cases])
    x1 = torch.tensor([c[0][1] for c in cases])
    keys = [torch.tensor([(c[1] + r * 0x9E3779B9) & M32 for c in cases]) for r in range(10)]
    y0, y1 = philox2x32(x0, x1, keys)
    assert y0.tolist() == [c[2][0] for c in cases] and y1.tolist() == [c[2][1] for c in cases]
    assert [ref_philox(*c[0], c[1]) for c in cases] == [c[2] for c in cases]


def test_values_match_the_scalar_reference():
    ids = torch.tensor([0, 1, 2, 1439, 1440, 1_036_799, 2 ** 31, M32], dtype=torch.int64)
    keys = [(0, 7, 3), (12345, -1, 2 ** 40)]
    z = token_noise(keys, ids, 5)
    assert z.shape == (2, 8, 5) and z.dtype == torch.float32
    ref = np.array([[[ref_noise(k, g, c) for c in range(5)] for g in ids.tolist()] for k in keys])
    np.testing.assert_allclose(z.numpy(), ref, rtol=0, atol=1e-6)


EDGES = torch.tensor([0, 1, 2, 255, 2 ** 24 - 1, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 3 << 30, M32 - 1000, M32 - 1, M32])


def test_ln_and_angle_against_float64():
    """The table-and-polynomial ln, cos, sin against float64 math (inputs: edges, runs, random)."""
    g = torch.Generator().manual_seed(0)
    h = torch.cat([EDGES, torch.arange(4096), M32 - torch.arange(4096), 2 ** 31 + torch.arange(-2048, 2048),
                   torch.randint(0, 2 ** 32, (1 << 16,), generator=g)])[:, None]
    tables = _tables(torch.device("cpu"))
    x = h.to(torch.float32) + 0.5  # the fp32 input both sides see
    ref = torch.log(x.double() / 2 ** 32)
    err = (_ln_uniform(h, tables).double() - ref).abs()
    assert (err <= 2.4e-7 * ref.abs() + 2e-10).all()  # ~2 ulp, and no cancellation near u = 1
    theta = 2 * math.pi * (h.double() + 0.5) / 2 ** 32
    cos, sin = _cos_sin(h, tables)
    assert (cos.double() - torch.cos(theta)).abs().max() < 1.2e-7
    assert (sin.double() - torch.sin(theta)).abs().max() < 1.2e-7


# ---- contract ---------------------------------------------------------------------------------
WINDOW_LAYOUTS = [  # (ws_h, ws_w, wpy, wpx, sp) on an 8 x 16 grid
    (4, 4, 1, 1, 1), (4, 4, 2, 1, 1), (4, 4, 1, 2, 2), (4, 4, 2, 2, 4), (4, 4, 1, 1, 8),
    (2, 4, 2, 2, 2), (8, 8, 1, 2, 4), (2, 2, 4, 4, 1), (8, 16, 1, 1, 16),
]


def test_same_noise_for_a_token_under_every_layout_and_window_size():
    H, W, C, keys = 8, 16, 3, (7, 123, 2)
    ref = field_noise(WindowLayout(H, W, 4, 4), keys, C).numpy()  # (C, H, W)
    assert ref.shape == (C, H, W)
    flat = token_noise([keys], torch.arange(H * W), C)[0]  # token order = global id
    np.testing.assert_array_equal(ref, flat.T.reshape(C, H, W).numpy())
    for ws_h, ws_w, wpy, wpx, sp in WINDOW_LAYOUTS:
        layout = WindowLayout(H, W, ws_h, ws_w, wpy, wpx, sp)
        pieces = [np.moveaxis(window_noise(layout, r, keys, C).numpy(), -1, 0) for r in range(layout.n_ranks)]
        assert pieces[0].shape == (C, layout.n_local_windows, layout.tokens_per_piece)
        np.testing.assert_array_equal(layout.assemble(pieces, 0), ref)
        np.testing.assert_array_equal(field_noise(layout, keys, C).numpy(), ref)


def test_members_reproducible_alone_and_keys_distinct():
    layout = WindowLayout(8, 16, 4, 4, 2, 1, 2)
    keys = [(0, 1, 0), (0, 1, 1), (3, 1, 0)]
    both = members_noise(layout, 1, keys, 4)
    assert both.shape == (3, layout.n_local_windows, layout.tokens_per_piece, 4)
    for b, k in enumerate(keys):
        torch.testing.assert_close(both[b], window_noise(layout, 1, k, 4), rtol=0, atol=0)
    assert not torch.allclose(both[0], both[1]) and not torch.allclose(both[0], both[2])
    torch.testing.assert_close(members_noise(layout, 1, keys, 4), both, rtol=0, atol=0)  # deterministic
    assert members_noise(layout, 1, [], 4).shape == (0, layout.n_local_windows, layout.tokens_per_piece, 4)


def test_channel_values_do_not_depend_on_the_channel_count_and_dtype_is_a_cast():
    ids = torch.arange(50, dtype=torch.int64) * 37
    z7 = token_noise([(1, 2)], ids, 7)
    torch.testing.assert_close(token_noise([(1, 2)], ids, 4), z7[..., :4], rtol=0, atol=0)
    torch.testing.assert_close(token_noise([(1, 2)], ids, 1), z7[..., :1], rtol=0, atol=0)
    z64 = token_noise([(1, 2)], ids, 7, torch.float64)
    assert z64.dtype == torch.float64 and torch.equal(z64, z7.double())


def test_device_argument_and_cached_ids():
    layout = WindowLayout(8, 16, 4, 4, 2, 2, 2)
    ids = rank_token_ids(layout, 3, "cpu")
    assert ids is rank_token_ids(layout, 3, torch.device("cpu"))  # cached: no copy per call
    np.testing.assert_array_equal(ids.numpy(), layout.index_map(0, 3).ravel())
    assert window_noise(layout, 3, (1,), 2, device="cpu").device.type == "cpu"
    assert field_noise(layout, (1,), 2, device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="2\\^32"):
        rank_token_ids(WindowLayout(2 ** 17, 2 ** 16, 2, 2), 0)
    with pytest.raises(ValueError, match="n_channels"):
        window_noise(layout, 0, (1,), 0)
    with pytest.raises(TypeError, match="integers"):
        window_noise(layout, 0, (1, 2.5), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draw_matches_the_cpu_draw():
    layout = WindowLayout(8, 16, 4, 4, 2, 1, 2)
    keys = [(0, 1, 0), (5, 2, 1)]
    z = members_noise(layout, 1, keys, 5, device="cuda")
    assert z.device.type == "cuda"
    # identical integer bits; log/sin/cos of the two devices may differ in the last place
    torch.testing.assert_close(z.cpu(), members_noise(layout, 1, keys, 5), rtol=1e-5, atol=1e-5)


# ---- statistics -------------------------------------------------------------------------------
N_TOK, N_CH = 1 << 14, 64  # 2^20 values


@pytest.fixture(scope="module")
def draw() -> torch.Tensor:
    return token_noise([(0, 11, 5)], torch.arange(N_TOK), N_CH, torch.float64)[0]  # (N_TOK, N_CH)


def test_moments_and_distribution(draw):
    z = draw.ravel()
    n = z.numel()
    bound = 5.0 / math.sqrt(n)  # 5 standard errors
    assert abs(z.mean().item()) < bound
    assert abs((z ** 2).mean().item() - 1) < bound * math.sqrt(2)        # Var(z^2) = 2
    assert abs((z ** 3).mean().item()) < bound * math.sqrt(15)           # Var(z^3) = 15
    assert abs((z ** 4).mean().item() - 3) < bound * math.sqrt(96)       # Var(z^4) = 105 - 9
    tail = (z.abs() > 3).double().mean().item()
    p3 = 2 * stats.norm.sf(3)
    assert abs(tail - p3) < 5 * math.sqrt(p3 * (1 - p3) / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-4
    for c in (0, 1, N_CH - 1):  # each channel (cos and sin lanes) on its own
        assert stats.kstest(draw[:, c].numpy(), "norm").pvalue > 1e-4
    assert torch.isfinite(z).all() and z.abs().max() < 6.8  # Box-Muller radius <= sqrt(2 ln 2^33)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_no_correlation_between_neighbours(draw):
    H, W = 128, 128  # the draw's tokens as a 128 x 128 grid: g = y W + x
    grid = draw.reshape(H, W, N_CH)
    pairs = {
        "token g, g+1": (draw[:-1], draw[1:]),
        "token g, g+W": (grid[:-1], grid[1:]),
        "channel 2j, 2j+1 (one Box-Muller pair)": (draw[:, 0::2], draw[:, 1::2]),
        "channel 2j+1, 2j+2": (draw[:, 1:-1:2], draw[:, 2::2]),
    }
    other = token_noise([(0, 11, 6)], torch.arange(N_TOK), N_CH, torch.float64)[0]
    pairs["key (0, 11, 5), (0, 11, 6)"] = (draw, other)
    for name, (a, b) in pairs.items():
        lim = 4 / math.sqrt(a.numel())
        assert abs(corr(a, b)) < lim, name
        assert abs(corr(a ** 2, b ** 2)) < lim, f"{name} (squares)"

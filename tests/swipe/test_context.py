"""swipe.context: the pole mask as a split of windows, window attention through it (forward
and backward) against masked softmax attention written out, and the per-device caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swipe.context import PoleSplit, SerialContext, WindowContext, pole_split, window_attention
from swipe.layout import WindowLayout, latitude_wrap_mask


def masked_softmax_attention(q, k, v, allowed):
    """(B, n, T, h, dh) windows, allowed (n, T, T) bool: softmax(q k^T / sqrt(dh)) over allowed keys."""
    s = torch.einsum("bnthd,bnshd->bnhts", q, k) / q.shape[-1] ** 0.5
    if allowed is not None:
        s = s.masked_fill(~allowed[None, :, None], float("-inf"))
    return torch.einsum("bnhts,bnshd->bnthd", s.softmax(-1), v)


@pytest.mark.parametrize("H,W,ws,wpy,wpx", [(8, 16, (4, 4), 1, 1), (16, 16, (4, 8), 2, 1), (24, 16, (4, 4), 3, 2),
                                            (12, 8, (6, 4), 1, 2)])
def test_pole_split_is_the_latitude_mask(H, W, ws, wpy, wpx):
    """Every window rank of every layout: frame 0 and the ranks off the last window row have no
    split; the others have the tail of their windows (their last local row), cut in halves."""
    lay = WindowLayout(H, W, *ws, wpy, wpx)
    T = lay.window_tokens
    for wy in range(wpy):
        for wx in range(wpx):
            ctx = WindowContext(lay, wy, wx)
            assert ctx.pole_split(0) is None
            split = ctx.pole_split(1)
            if wy != wpy - 1:
                assert split is None and latitude_wrap_mask(lay, 1, wy, wx) is None
                continue
            assert split == PoleSplit((lay.n_local_windows_y - 1) * lay.n_local_windows_x)
            mask = latitude_wrap_mask(lay, 1, wy, wx)
            assert pole_split(mask) == split
            half = np.arange(T) < T // 2
            expect = np.ones_like(mask)
            expect[split.start:] = half[:, None] == half[None, :]
            np.testing.assert_array_equal(mask, expect)


def test_pole_split_refuses_other_masks():
    T = 8
    half = np.arange(T) < T // 2
    two = half[:, None] == half[None, :]
    ones = np.ones((T, T), bool)
    assert pole_split(np.stack([ones, ones])) is None                    # nothing wraps
    assert pole_split(np.stack([ones, two])) == PoleSplit(1)
    assert pole_split(np.stack([two, ones])) is None                     # not a tail
    third = np.arange(T) < 3
    assert pole_split(np.stack([ones, third[:, None] == third[None, :]])) is None  # not halves
    assert pole_split(np.stack([ones, np.eye(T, dtype=bool)])) is None


@pytest.mark.parametrize("B,start", [(1, 3), (2, 3), (2, 0)])
def test_split_attention_equals_masked_attention(B, start):
    """Forward and every input gradient, float64: the split, the general bool mask, the general
    additive mask and the written-out masked softmax agree; the q, k, v views of one stacked
    tensor (the model's layout) are used as they are."""
    n, T, h, dh = 5, 8, 2, 3
    half = torch.arange(T) < T // 2
    allowed = torch.ones(n, T, T, dtype=torch.bool)
    allowed[start:] = half[:, None] == half[None, :]
    additive = torch.zeros(n, T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    g = torch.Generator().manual_seed(0)
    qkv0 = torch.randn(B, n, T, 3, h, dh, generator=g, dtype=torch.float64)
    w = torch.randn(B, n, T, h, dh, generator=g, dtype=torch.float64)
    results = []
    for mask in (PoleSplit(start), allowed, additive, "reference"):
        qkv = qkv0.clone().requires_grad_(True)
        q, k, v = qkv.unbind(3)
        out = masked_softmax_attention(q, k, v, allowed) if isinstance(mask, str) else window_attention(q, k, v, mask)
        (out * w).sum().backward()
        results.append((out.detach(), qkv.grad))
    for out, grad in results[:-1]:
        torch.testing.assert_close(out, results[-1][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, results[-1][1], rtol=1e-12, atol=1e-12)
    # the mask matters: without it the pole windows differ, the others do not
    free = window_attention(*qkv0.unbind(3))
    torch.testing.assert_close(free[:, :start], results[-1][0][:, :start], rtol=1e-12, atol=1e-12)
    assert (free[:, start:] - results[-1][0][:, start:]).abs().max() > 1e-3


def test_window_attention_refuses_masks_that_do_not_fit():
    q = torch.randn(1, 3, 4, 1, 2)
    with pytest.raises(ValueError, match="does not fit"):
        window_attention(q, q, q, PoleSplit(3))
    with pytest.raises(ValueError, match="mask of shape"):
        window_attention(q, q, q, torch.ones(2, 4, 4, dtype=torch.bool))


def test_serial_frame_change_is_cached_on_the_device():
    """The permutation of a frame change lives on the activations' device after the first call."""
    from swipe.context import _permutation

    lay = WindowLayout(8, 16, 4, 4)
    ctx = SerialContext(lay)
    x = torch.randn(1, lay.n_local_windows, lay.tokens_per_piece, 2)
    y = ctx.change_frame(x, 0, 1)
    info = _permutation.cache_info()
    ctx.change_frame(x, 0, 1)
    assert _permutation.cache_info().hits == info.hits + 1
    torch.testing.assert_close(ctx.change_frame(y, 1, 0), x, rtol=0, atol=0)
    meta = ctx.change_frame(x.to("meta"), 0, 1)  # another device: its own entry, made there
    assert meta.device.type == "meta"

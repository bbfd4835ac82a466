"""SwipeContext (attention + change_frame under SWiPe) equals SerialContext on the whole field,
forward and backward, in float64, for several meshes of up to 8 gloo ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swipe.comm import CommCounter
from swipe.context import SerialContext
from swipe.layout import WindowLayout
from swipe.mesh import MeshError, SwipeMesh
from swipe.parallel_context import SwipeContext
from swipe.testing import run_distributed

B, HEADS, DH, C = 2, 4, 3, 5
F64 = 8


def rand(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gather(field: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """(B, H*W, *f) global tokens -> (B, n_lw, tpp, *f)."""
    return field[:, torch.from_numpy(ids)]


def scatter_back(t: torch.Tensor, ids: np.ndarray, n_tokens: int) -> torch.Tensor:
    """(B, n_lw, tpp, *f) local tokens -> (B, H*W, *f) global (single-rank layout covers all)."""
    out = torch.empty(t.shape[0], n_tokens, *t.shape[3:], dtype=t.dtype)
    out[:, torch.from_numpy(ids.ravel())] = t.reshape(t.shape[0], -1, *t.shape[3:])
    return out


def serial_attention(q, k, v, w, lay: WindowLayout, frame: int, mask_poles: bool):
    """Serial reference on global tokens (B, H*W, heads, dh): output and grads of sum(out*w)."""
    one = WindowLayout(lay.H, lay.W, lay.ws_h, lay.ws_w)
    ids = one.index_map(frame, 0)
    qs, ks, vs = (gather(t, ids).requires_grad_(True) for t in (q, k, v))
    out = SerialContext(one).attention(torch.stack((qs, ks, vs), 3), frame, mask_poles)
    (out * gather(w, ids)).sum().backward()
    n = lay.H * lay.W
    return [scatter_back(t, ids, n) for t in (out.detach(), qs.grad, ks.grad, vs.grad)]


def _check_context(rank, world, cases):
    for mesh_shape, grid in cases:
        mesh = SwipeMesh.build(*mesh_shape)
        lay = mesh.layout(*grid, heads=HEADS)
        ctr = CommCounter()
        ctx = SwipeContext(mesh, lay, counter=ctr)
        n, seed = lay.H * lay.W, 1000 * mesh.coords.dp  # different samples per replica
        q, k, v, w = (rand(seed + i, B, n, HEADS, DH) for i in range(4))
        for frame in (0, 1):
            for mask_poles in (False, True):
                ref = serial_attention(q, k, v, w, lay, frame, mask_poles)
                ids = ctx.token_ids(frame)
                ql, kl, vl = (gather(t, ids).requires_grad_(True) for t in (q, k, v))
                ctr.reset()
                out = ctx.attention(torch.stack((ql, kl, vl), 3), frame, mask_poles)
                fwd_calls = ctr.calls["all_to_all"]
                (out * gather(w, ids)).sum().backward()
                for got, want in zip((out, ql.grad, kl.grad, vl.grad), ref):
                    torch.testing.assert_close(got, gather(want, ids), rtol=1e-12, atol=1e-12)
                # bytes: (sp-1)/sp of q, k, v and of the output, forward and backward; calls:
                # stacked q, k, v in one all-to-all, the output in one, and the same backward
                sp = lay.sp
                assert ctr.bytes["all_to_all"] == 8 * ql.numel() * F64 * (sp - 1) // sp
                assert (fwd_calls, ctr.calls["all_to_all"]) == ((2, 4) if sp > 1 else (0, 0))
        # change_frame: the field's tokens move like the serial permutation
        x = rand(seed + 9, B, n, C)
        for src, dst in [(0, 1), (1, 0)]:
            xl = gather(x, ctx.token_ids(src)).requires_grad_(True)
            y = ctx.change_frame(xl, src, dst)
            torch.testing.assert_close(y, gather(x, ctx.token_ids(dst)), rtol=0, atol=0)
            y.sum().backward()
            assert torch.equal(xl.grad, torch.ones_like(xl))
        assert ctx.change_frame(xl, 1, 1) is xl
    # errors
    mesh = SwipeMesh.build(1, 1, 1, 2, 4)
    try:
        SwipeContext(mesh, WindowLayout(8, 16, 4, 4, 1, 2, 2))
        raise AssertionError("layout/mesh mismatch not detected")
    except MeshError as e:
        assert "does not match the mesh" in str(e)
    ctx = SwipeContext(mesh, mesh.layout(8, 16, 4, 4))
    t = torch.zeros(1, ctx.layout.n_local_windows, ctx.layout.tokens_per_piece, 6, 2)
    try:
        ctx.attention(torch.stack((t, t, t), 3), 0)
        raise AssertionError("heads % sp not detected")
    except MeshError as e:
        assert "heads=6 is not divisible by sp=4" in str(e)
    return True


CASES = [
    ((1, 1, 2, 2, 2), (16, 16, 4, 4)),   # sp 2 on a 2x2 window grid
    ((1, 1, 1, 2, 4), (8, 16, 4, 4)),    # sp 4, non-square window grid 2x4 on 1x2
    ((1, 1, 2, 4, 1), (16, 32, 4, 4)),   # sp 1, window parallel only
    ((2, 1, 2, 1, 2), (16, 8, 4, 4)),    # dp 2 with different samples, sp 2
    ((1, 1, 1, 1, 4), (8, 8, 4, 4)),     # sp 4, one window rank, world 8 with dp 2 below
]


@pytest.mark.multiproc
def test_swipe_context_matches_serial_8_ranks():
    cases = [c for c in CASES if np.prod(c[0]) == 8] + [((2, 1, 1, 1, 4), (8, 8, 4, 4))]
    assert all(run_distributed(_check_context, 8, args=(cases,), timeout=180))


def test_pole_mask_matters_in_reference():
    """Guard against a vacuous test: masking changes the shifted-frame serial attention."""
    lay = WindowLayout(8, 16, 4, 4)
    n = lay.H * lay.W
    q, k, v, w = (rand(i, 1, n, HEADS, DH) for i in range(4))
    a = serial_attention(q, k, v, w, lay, 1, False)[0]
    b = serial_attention(q, k, v, w, lay, 1, True)[0]
    wrapped = torch.from_numpy(lay.window_ids(1, 0, 0)[-1])  # a window of the last row
    assert not torch.allclose(a[:, wrapped], b[:, wrapped])
    c = serial_attention(q, k, v, w, lay, 0, True)[0]
    torch.testing.assert_close(c, serial_attention(q, k, v, w, lay, 0, False)[0])

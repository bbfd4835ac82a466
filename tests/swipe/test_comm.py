"""Communication primitives under multi-process gloo, against serial references.

One 8-rank run checks many meshes (spawning is the slow part): Ulysses all-to-all forward and
backward, shift exchange vs SerialContext.change_frame (sp in {1, 2, 4}, non-square window
grids, dp > 1, both directions, gradients), re-addressed pipeline sends, byte counts vs
analytic values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from swipe.comm import (CommCounter, all_reduce_sum, recv_routed, send_routed, shift_exchange,
                        ulysses_qkv_to_heads, ulysses_to_heads, ulysses_to_tokens)
from swipe.context import SerialContext
from swipe.layout import WindowLayout
from swipe.mesh import SwipeMesh
from swipe.testing import run_distributed

B, C = 2, 3
F64 = 8  # bytes per float64


def gather(field: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """(B, H, W, *f) global field -> (B, n_lw, tpp, *f) tokens of the given ids."""
    flat = field.reshape(field.shape[0], -1, *field.shape[3:])
    return flat[:, torch.from_numpy(ids)]


def random_field(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def serial_change_frame(field, wgt, lay: WindowLayout, src: int, dst: int):
    """Serial reference: frame change of the whole field on one rank, and the gradient of
    sum(out * wgt_dst) w.r.t. the input; both returned as global (B, H, W, C) fields."""
    one = WindowLayout(lay.H, lay.W, lay.ws_h, lay.ws_w)
    ctx = SerialContext(one)
    x = gather(field, one.index_map(src, 0)).requires_grad_(True)
    y = ctx.change_frame(x, src, dst)
    (y * gather(wgt, one.index_map(dst, 0))).sum().backward()

    def to_field(t, frame):
        out = torch.empty(B, lay.H * lay.W, C, dtype=t.dtype)
        out[:, torch.from_numpy(one.index_map(frame, 0).ravel())] = t.reshape(B, -1, C).detach()
        return out.reshape(B, lay.H, lay.W, C)

    return to_field(y, dst), to_field(x.grad, src)


# entering the shifted frame, quadrant q (TL, TR, BL, BR) moves by (-dy, -dx) window ranks
QUADRANT_SHIFT = {0: (1, 1), 1: (1, 0), 2: (0, 1), 3: (0, 0)}


def analytic_p2p(lay: WindowLayout, r: int) -> tuple[int, int]:
    """(tokens sent to other ranks, messages) of window rank r entering the shifted frame,
    from the quadrant table of docs/layout.md, "Shift routes" (independent of layout.route)."""
    wy, wx, s = lay.rank_coords(r)
    qtok = lay.window_tokens // 4 * lay.n_local_windows
    if lay.sp % 4 == 0:
        quads = {s // (lay.sp // 4): lay.tokens_per_rank}
    else:  # sp in (1, 2): the piece holds 4/sp whole quadrants
        quads = {q: qtok for q in range(s * 4 // lay.sp, (s + 1) * 4 // lay.sp)}
    dsts = {}
    for q, n in quads.items():
        dy, dx = QUADRANT_SHIFT[q]
        if lay.sp % 4 == 0:
            s2 = (3 - q) * (lay.sp // 4) + s % (lay.sp // 4)
        else:
            s2 = (3 - q) * lay.sp // 4
        d = lay.rank_index((wy - dy) % lay.wpy, (wx - dx) % lay.wpx, s2)
        dsts[d] = dsts.get(d, 0) + n
    dsts.pop(r, None)  # tokens that stay are copied, not sent
    return sum(dsts.values()), len(dsts)


# ---- per-rank checks ------------------------------------------------------------------------
def _check_ulysses(rank, mesh: SwipeMesh, heads=4, dh=3, n_lw=2, tpp=3):
    sp = mesh.shape.sp
    s, w = mesh.coords.sp, mesh.rank // sp  # w: which sp group (different data per group)
    T, hs = tpp * sp, heads // sp
    full = random_field(100 + w, B, n_lw, T, heads, dh)  # all tokens, all heads of my windows
    x = full[:, :, s * tpp:(s + 1) * tpp].clone().requires_grad_(True)
    ctr = CommCounter()
    y = ulysses_to_heads(x, mesh.sp_group, ctr)
    torch.testing.assert_close(y, full[:, :, :, s * hs:(s + 1) * hs], rtol=0, atol=0)
    # backward: d/dx sum(y * w_s) puts every sp rank's weights back on the tokens I hold
    wts = [random_field(200 + w * 16 + j, B, n_lw, T, hs, dh) for j in range(sp)]
    (y * wts[s]).sum().backward()
    torch.testing.assert_close(x.grad, torch.cat(wts, dim=3)[:, :, s * tpp:(s + 1) * tpp], rtol=0, atol=0)
    a2a = x.numel() * F64 * (sp - 1) // sp
    assert ctr.bytes["all_to_all"] == 2 * a2a and ctr.messages["all_to_all"] == 2 * (sp - 1)
    assert ctr.calls["all_to_all"] == 2
    # the inverse, and round trip
    z = y.detach().clone().requires_grad_(True)
    back = ulysses_to_tokens(z, mesh.sp_group, ctr)
    torch.testing.assert_close(back, x.detach(), rtol=0, atol=0)
    g = random_field(300 + rank, *back.shape)
    (back * g).sum().backward()
    gfull = torch.cat(run_allgather(g, mesh.sp_group), dim=2)  # (B, n, T, heads, dh)
    torch.testing.assert_close(z.grad, gfull[:, :, :, s * hs:(s + 1) * hs], rtol=0, atol=0)
    assert ctr.bytes["all_to_all"] == 4 * a2a


def _check_ulysses_qkv(rank, mesh: SwipeMesh, heads=4, dh=3, n_lw=2, tpp=3):
    """Stacked q, k, v in ONE all-to-all: the same values as three separate ones."""
    sp = mesh.shape.sp
    s, w = mesh.coords.sp, mesh.rank // sp
    T, hs = tpp * sp, heads // sp
    full = random_field(400 + w, B, n_lw, T, 3, heads, dh)
    x = full[:, :, s * tpp:(s + 1) * tpp].clone().requires_grad_(True)
    ctr = CommCounter()
    y = ulysses_qkv_to_heads(x, mesh.sp_group, ctr)
    assert y.shape == (B, n_lw, T, 3, hs, dh)
    torch.testing.assert_close(y, full[..., s * hs:(s + 1) * hs, :], rtol=0, atol=0)
    # a view of the received buffer, not a copy of it: its storage holds exactly y's elements
    assert not y.is_contiguous() and y.untyped_storage().nbytes() == y.numel() * F64
    assert ctr.calls["all_to_all"] == 1 and ctr.messages["all_to_all"] == sp - 1
    assert ctr.bytes["all_to_all"] == x.numel() * F64 * (sp - 1) // sp  # = 3 separate ones
    wts = [random_field(500 + w * 16 + j, B, n_lw, T, 3, hs, dh) for j in range(sp)]
    (y * wts[s]).sum().backward()
    torch.testing.assert_close(x.grad, torch.cat(wts, dim=4)[:, :, s * tpp:(s + 1) * tpp], rtol=0, atol=0)
    assert ctr.calls["all_to_all"] == 2 and ctr.bytes["all_to_all"] == 2 * x.numel() * F64 * (sp - 1) // sp
    assert ctr.seconds["all_to_all"] > 0  # the blocking calls are timed


def run_allgather(t, group):
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return out


def _check_shift(rank, mesh: SwipeMesh, lay: WindowLayout):
    r = mesh.window_rank
    seed = 10 * mesh.coords.dp  # different samples per replica
    field = random_field(seed + 1, B, lay.H, lay.W, C)
    wgt = random_field(seed + 2, B, lay.H, lay.W, C)
    for src, dst in [(0, 1), (1, 0)]:
        ref_y, ref_g = serial_change_frame(field, wgt, lay, src, dst)
        x = gather(field, lay.index_map(src, r)).requires_grad_(True)
        ctr = CommCounter()
        y = shift_exchange(x, lay.route(src, dst), r, mesh.window_group, ctr)
        torch.testing.assert_close(y, gather(ref_y, lay.index_map(dst, r)), rtol=0, atol=0)
        fwd = ctr.snapshot()["p2p"]
        (y * gather(wgt, lay.index_map(dst, r))).sum().backward()
        torch.testing.assert_close(x.grad, gather(ref_g, lay.index_map(src, r)), rtol=0, atol=0)
        if src == 0:
            tokens, msgs = analytic_p2p(lay, r)
            assert fwd["bytes"] == tokens * B * C * F64, (lay, r, fwd, tokens)
            assert fwd["messages"] == msgs, (lay, r, fwd, msgs)
            # backward moves every gradient token back: the same volume again
            assert ctr.bytes["p2p"] == 2 * fwd["bytes"]


def _check_routed(rank, mesh: SwipeMesh, lay: WindowLayout):
    """Stage 0 sends its activation to stage 1 along a route; gradients come back inverted."""
    r, p = mesh.window_rank, mesh.coords.pp
    field = random_field(7, B, lay.H, lay.W, C)
    grad_field = random_field(8, B, lay.H, lay.W, C)
    out = {}
    for src, dst in [(0, 1), (1, 0), (0, 0)]:
        route = lay.route(src, dst)
        ctr = CommCounter()
        if p == 0:
            x = gather(field, lay.index_map(src, r)).contiguous()
            send_routed(x, route, r, mesh.next_stage_ranks, ctr)
            g = recv_routed(torch.empty_like(x), route.inverse(), r, mesh.next_stage_ranks)
            torch.testing.assert_close(g, gather(grad_field, lay.index_map(src, r)), rtol=0, atol=0)
            out[(src, dst)] = (ctr.bytes["p2p"], ctr.messages["p2p"], x.numel() * F64)
        else:
            y = torch.empty(B, lay.n_local_windows, lay.tokens_per_piece, C, dtype=torch.float64)
            recv_routed(y, route, r, mesh.prev_stage_ranks)
            # serial reference: roll+partition of the whole field = the stage-0 field in frame dst
            ref_y, _ = serial_change_frame(field, grad_field, lay, src, dst)
            torch.testing.assert_close(y, gather(ref_y, lay.index_map(dst, r)), rtol=0, atol=0)
            send_routed(gather(grad_field, lay.index_map(dst, r)).contiguous(), route.inverse(), r,
                        mesh.prev_stage_ranks, ctr)
    return out


def _all_checks(rank, world):
    results = {}
    # Ulysses over sp = 4 and sp = 2 groups
    _check_ulysses(rank, SwipeMesh.build(1, 1, 1, 2, 4))
    _check_ulysses(rank, SwipeMesh.build(2, 1, 2, 1, 2))
    _check_ulysses_qkv(rank, SwipeMesh.build(1, 1, 1, 2, 4))
    _check_ulysses_qkv(rank, SwipeMesh.build(2, 1, 2, 1, 2))
    # shift exchange: (mesh, layout) with sp in {1, 2, 4, 8}, non-square window grids, dp > 1
    for mesh_shape, grid in [((1, 1, 2, 4, 1), (16, 32, 4, 4)),   # sp 1, 4x8 windows on 2x4
                             ((1, 1, 2, 2, 2), (16, 24, 4, 4)),   # sp 2, 4x6 windows on 2x2
                             ((1, 1, 1, 2, 4), (8, 16, 4, 4)),    # sp 4, 2x4 windows on 1x2
                             ((2, 1, 2, 1, 2), (16, 8, 4, 4)),    # dp 2, sp 2, 4x2 windows on 2x1
                             ((1, 1, 1, 1, 8), (8, 8, 4, 4))]:    # sp 8 only
        mesh = SwipeMesh.build(*mesh_shape)
        _check_shift(rank, mesh, mesh.layout(*grid))
    # re-addressed pipeline sends (pp = 2): sp = 2 (2 messages) and sp = 4 (1 message)
    for mesh_shape, grid in [((1, 2, 1, 2, 2), (8, 16, 4, 4)), ((1, 2, 1, 1, 4), (8, 8, 4, 4)),
                             ((2, 2, 2, 1, 1), (16, 8, 4, 4))]:
        mesh = SwipeMesh.build(*mesh_shape)
        results[mesh_shape] = _check_routed(rank, mesh, mesh.layout(*grid))
    # counted all-reduce
    ctr = CommCounter()
    t = torch.full((5,), float(rank), dtype=torch.float64)
    all_reduce_sum(t, None, ctr)
    assert torch.equal(t, torch.full((5,), float(sum(range(world))), dtype=torch.float64))
    results["all_reduce"] = ctr.snapshot()["all_reduce"]
    return results


@pytest.mark.multiproc
def test_comm_primitives_8_ranks():
    results = run_distributed(_all_checks, 8, timeout=180)
    for rank, res in enumerate(results):
        ar = dict(res["all_reduce"])
        assert ar.pop("seconds") > 0
        assert ar == {"bytes": 2 * 7 * 5 * F64 // 8, "messages": 14, "calls": 1}
        for mesh_shape in [(1, 2, 1, 2, 2), (1, 2, 1, 1, 4), (2, 2, 2, 1, 1)]:
            n_window = mesh_shape[2] * mesh_shape[3] * mesh_shape[4]
            if (rank // n_window) % 2:  # stage 1 ranks only receive
                continue
            sp = mesh_shape[4]
            for direction, (sent, msgs, plain) in res[mesh_shape].items():
                assert sent == plain, (mesh_shape, direction)  # same bytes as a plain send
                if direction == (0, 0) or sp % 4 == 0:
                    assert msgs == 1, (mesh_shape, direction, msgs)  # one re-addressed message
                elif sp == 2:
                    assert msgs == (2 if mesh_shape[3] > 1 else 1)


# ---- no processes needed --------------------------------------------------------------------
def test_counter_api():
    c = CommCounter()
    c.add("p2p", 10, 2)
    c.add("p2p", 5, 1, seconds=0.25)
    c.add_wait("p2p", 0.5)  # a deferred wait: time only, no call
    snap = c.snapshot()
    c.add("all_reduce", 3, 1)
    assert snap["p2p"] == {"bytes": 15, "messages": 3, "calls": 2, "seconds": 0.75}
    assert snap["all_reduce"]["bytes"] == 0 and c.total_bytes == 18
    c.reset()
    assert c.total_bytes == 0 and c.calls["p2p"] == 0 and c.seconds["p2p"] == 0
    with pytest.raises(ValueError, match="unknown communication kind"):
        c.add("broadcast", 1, 1)
    with pytest.raises(ValueError, match="unknown communication kind"):
        c.add_wait("broadcast", 1.0)


def test_analytic_table_matches_route():
    """The analytic byte/message model used above agrees with layout.route (sanity of the test)."""
    for lay in [WindowLayout(16, 32, 4, 4, 2, 4, 1), WindowLayout(16, 24, 4, 4, 2, 2, 2),
                WindowLayout(8, 16, 4, 4, 1, 2, 4), WindowLayout(16, 8, 4, 4, 2, 1, 2)]:
        route = lay.route(0, 1)
        for r in range(lay.n_ranks):
            sends = [m for m in route.sends(r) if m.dst != r]
            assert analytic_p2p(lay, r) == (sum(m.n_tokens for m in sends), len(sends))


def test_shape_errors():
    with pytest.raises(ValueError, match="expects \\(B, n_lw, tokens, heads, dh\\)"):
        ulysses_to_heads(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="expects \\(B, n_lw, tokens, 3, heads, dh\\)"):
        ulysses_qkv_to_heads(torch.zeros(2, 3, 4, 2, 4, 2))
    with pytest.raises(ValueError, match="expects \\(B, n_lw, tokens_per_piece"):
        shift_exchange(torch.zeros(4, 4), WindowLayout(8, 8, 4, 4).route(0, 1), 0)


# ---- the multi-process helper itself --------------------------------------------------------
def _raise_on_rank_one(rank, world):
    if rank == 1:
        raise RuntimeError("rank one exploded")
    dist.barrier()


def _hang(rank, world):
    import time
    if rank == 1:
        time.sleep(120)  # rank 0 waits for it in the helper's closing barrier


def test_run_distributed_propagates_rank_traceback():
    with pytest.raises(RuntimeError, match="rank 1 failed first") as e:
        run_distributed(_raise_on_rank_one, 2, timeout=60)
    assert "rank one exploded" in str(e.value) and "_raise_on_rank_one" in str(e.value)


def test_run_distributed_timeout():
    import time
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        run_distributed(_hang, 2, timeout=3)
    assert time.monotonic() - t0 < 30

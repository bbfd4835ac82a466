"""swipe.pipeline: stage split and frames (pure), and the executor on a toy model under gloo.

The toy "transformer" (no weather, no attention) makes routing observable: every block
multiplies each token by a weight looked up at the token's GLOBAL id in the block's frame
(``ctx.token_ids(frame)``), so a token delivered to the wrong slot meets the wrong weight.
Serial reference: the same maths on the whole field with plain tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swipe.pipeline import (PipelineError, inner_frame_changes, plan_stages, stage_routes,
                            stage_split)
from swipe.layout import WindowLayout
from swipe.testing import run_distributed


# ---- pure ------------------------------------------------------------------------------------
def counts(ranges):
    return [len(r) for r in ranges]


@pytest.mark.parametrize("n, pp, expect", [
    (4, 1, [4]), (4, 2, [2, 2]), (5, 2, [3, 2]), (4, 3, [0, 4, 0]), (6, 4, [0, 3, 3, 0]),
    (7, 5, [0, 3, 2, 2, 0]), (24, 10, [0, 3, 3, 3, 3, 3, 3, 3, 3, 0]),
])
def test_default_split(n, pp, expect):
    r = stage_split(n, pp)
    assert counts(r) == expect
    assert [i for rr in r for i in rr] == list(range(n))  # contiguous, in order, each block once


def test_explicit_split_and_errors():
    assert counts(stage_split(4, 3, [1, 2, 1])) == [1, 2, 1]
    with pytest.raises(PipelineError, match="summing"):
        stage_split(4, 2, [1, 1])
    with pytest.raises(PipelineError, match="2 entries for pp=3"):
        stage_split(4, 3, [2, 2])
    with pytest.raises(PipelineError, match="at least 3 blocks"):
        stage_split(2, 5)


def swin(every):
    return lambda i: (i // every) % 2


def test_plan_frames_and_routes():
    # pp 4, 4 blocks, shift every 2: embed | 0,1 (frame 0) | 2,3 (frame 1) | head (frame 0)
    plans = plan_stages(4, 4, swin(2))
    assert [(p.start_frame, p.end_frame) for p in plans] == [(0, 0), (0, 0), (1, 1), (0, 0)]
    assert [inner_frame_changes(p, swin(2)) for p in plans] == [0, 0, 0, 0]
    lay = WindowLayout(8, 16, 4, 4, 2, 2, 1)
    assert [(r.src_frame, r.dst_frame) for r in stage_routes(lay, plans, 2)] == [(0, 1), (1, 0)]
    assert stage_routes(lay, plans, 0)[0] is None and stage_routes(lay, plans, 3)[1] is None
    # odd pp with classic Swin: embed | blocks 0-3 (frames 0,1,0,1: 3 inner changes) | head;
    # stage 1 ends in frame 1 and the route into the head stage carries the un-shift 1 -> 0
    plans = plan_stages(4, 3, swin(1))
    assert [(p.start_frame, p.end_frame) for p in plans] == [(0, 0), (0, 1), (0, 0)]
    assert inner_frame_changes(plans[1], swin(1)) == 3
    assert (stage_routes(lay, plans, 2)[0].src_frame, stage_routes(lay, plans, 2)[0].dst_frame) == (1, 0)
    # pp 2, blocks 0,1 | 2,3, shift every 1: stage 0 sends in frame 1, stage 1 starts in frame 0
    # (the route un-shifts), changes to 1 for block 3 and back to 0 for the head
    plans = plan_stages(4, 2, swin(1))
    assert [(p.start_frame, p.end_frame) for p in plans] == [(0, 1), (0, 0)]
    assert inner_frame_changes(plans[1], swin(1)) == 2
    # pp 1: everything inside; blocks 0..3 alternate, then back to frame 0 for the head
    (p,) = plan_stages(4, 1, swin(1))
    assert (p.start_frame, p.end_frame) == (0, 0) and inner_frame_changes(p, swin(1)) == 4


# ---- toy pipeline under gloo -----------------------------------------------------------------
H, W, C, N, DEPTH = 8, 16, 3, 3, 4
LAY = dict(H=H, W=W, ws_h=4, ws_w=4)


def toy_params():
    g = torch.Generator().manual_seed(0)
    return {"w_in": torch.randn(C, C, generator=g, dtype=torch.float64),
            "w": torch.randn(DEPTH, C, C, generator=g, dtype=torch.float64) * 0.5,
            "pos": 0.5 + torch.rand(DEPTH, H * W, generator=g, dtype=torch.float64),
            "x": torch.randn(N, H * W, C, generator=g, dtype=torch.float64),
            "target": torch.randn(N, H * W, C, generator=g, dtype=torch.float64)}


def toy_serial(P):
    w_in = P["w_in"].clone().requires_grad_(True)
    w = P["w"].clone().requires_grad_(True)
    h = P["x"] @ w_in
    for i in range(DEPTH):
        h = torch.tanh(h @ w[i]) * P["pos"][i][None, :, None]
    (h * P["target"]).sum().backward()
    return h.detach(), w_in.grad, w.grad


def _toy_rank(rank, world, pp, wy, wx, P, shift_every, post_ahead=None):
    import torch.distributed as dist
    from swipe.comm import CommCounter, all_reduce_sum
    from swipe.mesh import SwipeMesh
    from swipe.parallel_context import SwipeContext
    from swipe.pipeline import PipelineExecutor

    mesh = SwipeMesh.build(1, pp, wy, wx, 1)
    lay = mesh.layout(**LAY)
    ctx = SwipeContext(mesh, lay, CommCounter())
    frame_of = swin(shift_every)
    plans = plan_stages(DEPTH, pp, frame_of)
    plan = plans[mesh.coords.pp]
    recv, send = stage_routes(lay, plans, plan.index)
    ex = PipelineExecutor(plan.index, pp, mesh.window_rank, prev_ranks=mesh.prev_stage_ranks,
                          next_ranks=mesh.next_stage_ranks, recv_route=recv, send_route=send,
                          post_ahead=post_ahead)
    w_in = P["w_in"].clone().requires_grad_(True)
    w = P["w"].clone().requires_grad_(True)
    ids0 = torch.from_numpy(ctx.token_ids(0))
    mbs = [[0, 1], [2]]   # uneven micro-batches: act_shape follows them

    def forward(k, x, loss=True):
        sel = mbs[k]
        frame = plan.start_frame
        h = P["x"][sel][:, ids0] @ w_in if plan.is_first else x
        for i in plan.blocks:
            if frame_of(i) != frame:
                h, frame = ctx.change_frame(h, frame, frame_of(i)), frame_of(i)
            pos = P["pos"][i][torch.from_numpy(ctx.token_ids(frame))]
            h = torch.tanh(h @ w[i]) * pos[None, :, :, None]
        if frame != plan.end_frame:
            h = ctx.change_frame(h, frame, plan.end_frame)
        if plan.is_last and loss:
            return (h * P["target"][sel][:, ids0]).sum()
        return h

    shape = lambda k: (len(mbs[k]), lay.n_local_windows, lay.tokens_per_piece, C)
    losses = ex.train(len(mbs), forward, shape, torch.float64)
    grads = {}
    for name, t in (("w_in", w_in), ("w", w)):
        g = t.grad if t.grad is not None else torch.zeros_like(t)
        grads[name] = all_reduce_sum(g, mesh.window_group)  # sum over the stage's window ranks
    outs = ex.infer(len(mbs), lambda k, x: forward(k, x, loss=False), shape, torch.float64)
    return {"stage": plan.index, "wr": mesh.window_rank, "loss": sum(float(l) for l in losses),
            "grads": grads, "outs": outs, "in_stage": [i for i in plan.blocks]}


@pytest.mark.parametrize("pp, wy, wx, shift_every, post_ahead", [(3, 2, 1, 1, None), (2, 1, 2, 2, None),
                                                                  (3, 1, 2, 1, False)],
                         ids=["pp3-wy2", "pp2-wx2", "pp3-wx2-grouped"])
def test_executor_matches_serial(pp, wy, wx, shift_every, post_ahead):
    """post_ahead None = receives posted a step ahead (gloo); False = one batch per step, the
    way a backend with in-order communicators (nccl) runs."""
    P = toy_params()
    h_ref, g_in_ref, g_ref = toy_serial(P)
    res = run_distributed(_toy_rank, pp * wy * wx, args=(pp, wy, wx, P, shift_every, post_ahead),
                          timeout=120)
    lay = WindowLayout(**LAY, wpy=wy, wpx=wx)
    last = sorted((r for r in res if r["stage"] == pp - 1), key=lambda r: r["wr"])
    total = sum(r["loss"] for r in last)
    assert np.isclose(total, float((h_ref * P["target"]).sum()), rtol=1e-12)
    # forward-only outputs: micro-batch 0 = samples 0, 1; micro-batch 1 = sample 2
    out = torch.cat([torch.from_numpy(lay.assemble([r["outs"][k].permute(0, 3, 1, 2).numpy() for r in last], 0))
                     for k in range(2)])
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(N, H * W, C), h_ref, rtol=1e-12, atol=1e-12)
    # gradients: each stage's parameters from that stage (first: w_in, blocks: their w[i])
    for r in res:
        if r["stage"] == 0:
            torch.testing.assert_close(r["grads"]["w_in"], g_in_ref, rtol=1e-10, atol=1e-12)
        for i in r["in_stage"]:
            torch.testing.assert_close(r["grads"]["w"][i], g_ref[i], rtol=1e-10, atol=1e-12)
    assert sorted(i for r in res if r["wr"] == 0 for i in r["in_stage"]) == list(range(DEPTH))


# ---- when the executor posts its receives -----------------------------------------------------
def _event_rank(rank, world, post_ahead):
    """pp 2 on 2 ranks, 3 micro-batches: the order of p2p posts and computes on each stage."""
    import torch.distributed as dist
    from swipe.comm import CommCounter
    from swipe.pipeline import PipelineExecutor

    events = []
    real = dist.batch_isend_irecv

    def logged(ops):
        events.append(("post", tuple("send" if op.op is dist.isend else "recv" for op in ops)))
        return real(ops)

    dist.batch_isend_irecv = logged
    route = WindowLayout(4, 4, 4, 4).route(0, 0)
    ctr = CommCounter()
    ex = PipelineExecutor(rank, 2, 0, prev_ranks=[0] if rank else None, next_ranks=None if rank else [1],
                          recv_route=route if rank else None, send_route=None if rank else route,
                          counter=ctr, post_ahead=post_ahead)
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)

    def forward(k, x):
        events.append(("fwd", k))
        if rank == 0:
            return torch.full((1, 1, 16, 1), float(k + 1), dtype=torch.float64) * w
        return (x * w).sum()

    losses = ex.train(3, forward, lambda k: (1, 1, 16, 1), torch.float64,
                      before_backward=lambda k, last: events.append(("bwd", k)))
    dist.batch_isend_irecv = real
    return {"events": events, "loss": [float(l) for l in losses], "grad": float(w.grad),
            "p2p": ctr.snapshot()["p2p"]}


@pytest.mark.parametrize("post_ahead", [None, False], ids=["ahead", "grouped"])
def test_receives_posted_ahead(post_ahead):
    """With gloo the last stage posts the receive of micro-batch k+1's activation BEFORE it
    runs micro-batch k's backward (the activation travels meanwhile); grouped, after it. Both
    give the same numbers."""
    first, last = run_distributed(_event_rank, 2, args=(post_ahead,), timeout=60)
    ev = last["events"]
    recvs = [i for i, e in enumerate(ev) if e[0] == "post" and "recv" in e[1]]
    assert len(recvs) == 3                                  # one per micro-batch
    before = recvs[1] < ev.index(("bwd", 0)) and recvs[2] < ev.index(("bwd", 1))
    assert before == (post_ahead is None), ev
    if post_ahead is None:  # a receive posted ahead travels alone, the step's sends after compute
        assert all(ev[i][1] == ("recv",) for i in recvs), ev
    else:                   # one batch per step: the gradient send with the next receive
        assert ev[recvs[1]][1] == ("send", "recv"), ev
    # the same numbers either way: loss = sum_k 16 (k+1) w^2 with w = 2, d/dw = 2 * 96 w / 2
    assert last["loss"] == [16 * 4.0 * (k + 1) for k in range(3)]
    assert first["grad"] + last["grad"] == pytest.approx(2 * 96 * 2.0)
    # calls: stage 0 sends 3 activations, the last stage 3 gradients; every wait is timed
    assert first["p2p"]["calls"] == last["p2p"]["calls"] == 3
    assert first["p2p"]["seconds"] > 0 and last["p2p"]["seconds"] > 0


def test_post_ahead_refused_off_gloo(monkeypatch):
    import swipe.pipeline as sp
    ex = sp.PipelineExecutor(0, 1, 0, post_ahead=True)
    monkeypatch.setattr(sp.dist, "get_backend", lambda group=None: "nccl")
    with pytest.raises(PipelineError, match="post_ahead=True needs the gloo backend"):
        ex._posts_ahead()
    assert sp.PipelineExecutor(0, 1, 0)._posts_ahead() is False  # auto: grouped off gloo

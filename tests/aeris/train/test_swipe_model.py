"""Whole-model equality: AerisNet trained under SWiPe meshes vs the serial model (docs/architecture.md, "Correctness tests").

For each mesh (dp, pp, wy, wx, sp) one multi-process gloo run does one optimizer step through
aeris.train.swipe_engine (1F1B pipeline with re-addressed sends, Ulysses, shift exchanges,
weight-group gradient sum, global clipping, ZeRO AdamW) on a tiny float64 model with the pole
mask on; the parent computes the same step serially (SerialContext + aeris.diffusion.objective
+ torch AdamW + clip_grad_norm_) and compares forward outputs, loss, every gradient and every
parameter after the step. Also: a run whose frame changes sit exactly on stage boundaries moves
as many p2p bytes as a run without any shift, and that many bytes are the plain activation sends.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.objective import diffusion_loss
from aeris.model.config import ModelConfig
from aeris.model.network import AerisNet
from aeris.train.optim import build_optimizer
from swipe.context import SerialContext
from swipe.layout import WindowLayout
from swipe.testing import run_distributed

H, W, C, NF = 16, 32, 3, 2          # grid, prognostic channels, forcing channels
N_IN = 2 * C + NF
SEED, STEP = 7, 3
SAMPLES = [5, 2, 7, 0]              # the step's global batch (dataset indices)
LR, BETAS, EPS, WD = 1e-3, (0.85, 0.9), 1e-8, 0.1
DIFF = DiffusionConfig()


def model_cfg(window=(4, 4), depth=4, shift_every=1) -> ModelConfig:
    return ModelConfig(dim=32, depth=depth, heads=4, mlp_hidden=64, window=list(window),
                       shift_every=shift_every, pole_mask=True, rope=True)


def make_state(cfg: ModelConfig) -> dict:
    """An AerisNet with every parameter perturbed away from the adaLN-Zero init (so every path
    carries gradient), float64."""
    torch.manual_seed(0)
    net = AerisNet(cfg, n_out=C, n_in=N_IN, grid=(H, W)).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net.state_dict()


def make_data() -> dict[str, torch.Tensor]:
    """Global fields of 8 samples: target/cond (8, H, W, C), forcing (8, H, W, NF); lat weights (H, W)."""
    g = torch.Generator().manual_seed(2)
    return {"target": torch.randn(8, H, W, C, generator=g, dtype=torch.float64),
            "cond": torch.randn(8, H, W, C, generator=g, dtype=torch.float64),
            "forcing": torch.randn(8, H, W, NF, generator=g, dtype=torch.float64),
            "w_lat": (0.5 + torch.rand(H, W, generator=g, dtype=torch.float64)).numpy(),
            "w_channel": torch.tensor([1.0, 0.4, 1.7], dtype=torch.float64)}


def tokens(field: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """(N, H, W, c) -> (N, n_lw, tpp, c) at the global token ids."""
    return field.reshape(field.shape[0], H * W, -1)[:, torch.from_numpy(ids)]


def micro_batches(samples, per_mb):
    return [samples[k:k + per_mb] for k in range(0, len(samples), per_mb)]


# ---- the distributed side ---------------------------------------------------------------------
def _swipe_step(rank, world, mesh_sizes, cfg, state, data, per_mb, grad_clip, split):
    from swipe.mesh import SwipeMesh
    from swipe.comm import CommCounter
    from aeris.train.swipe_engine import MicroBatch, SwipeEngine

    dp, pp, wy, wx, sp = mesh_sizes
    mesh = SwipeMesh.build(dp, pp, wy, wx, sp)
    net = AerisNet(cfg, n_out=C, n_in=N_IN, grid=(H, W)).double()
    net.load_state_dict(state)
    counter = CommCounter()
    eng = SwipeEngine(net, mesh, DIFF, w_lat_field=data["w_lat"], w_channel=data["w_channel"],
                      split=split, counter=counter)
    eng.build_optimizer(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ids = eng.ctx.token_ids(0)
    per_rep = len(SAMPLES) // dp
    mine = SAMPLES[mesh.coords.dp * per_rep:(mesh.coords.dp + 1) * per_rep]
    mbs = []
    for sel in micro_batches(mine, per_mb):
        d = None
        if eng.plan.is_first or eng.plan.is_last:
            d = {k: tokens(data[k][sel], ids) for k in ("target", "cond", "forcing")}
        mbs.append(MicroBatch([(SEED, STEP, i) for i in sel], d))
    normaliser = float(H * W * len(SAMPLES))
    loss, gnorm = eng.train_step(mbs, normaliser, lr=LR, grad_clip=grad_clip, keep_outputs=True)
    return {"coords": tuple(mesh.coords), "window_rank": mesh.window_rank, "samples": mine,
            "loss": loss, "gnorm": gnorm, "outputs": [o.clone() for o in eng.outputs],
            # the stage's state is sharded over its weight group: compare whole tensors
            "grads": eng.full_weights({n: p.grad for n, p in eng.model.named_parameters()}),
            "params": eng.full_weights(),
            "bytes": counter.snapshot()}


# ---- the serial reference ---------------------------------------------------------------------
def serial_step(cfg, state, data, grad_clip):
    net = AerisNet(cfg, n_out=C, n_in=N_IN, grid=(H, W)).double()
    net.load_state_dict(state)
    lay = WindowLayout(H, W, *cfg.window)
    ctx = SerialContext(lay)
    ids = ctx.token_ids(0)
    w_tok = torch.as_tensor(data["w_lat"].reshape(-1)[ids])
    opt = build_optimizer(net, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                          decay_names=set(net.decay_parameter_names()))
    normaliser = float(H * W * len(SAMPLES))
    outputs, total = {}, 0.0
    # the forward output of each sample (in the field layout), via a hook on the head
    def keep(module, inputs, out):
        outputs["last"] = out.detach()   # returns None: the output is not replaced

    hook = net.out.register_forward_hook(keep)
    for i in SAMPLES:
        batch = {k: tokens(data[k][[i]], ids) for k in ("target", "cond", "forcing")}
        loss = diffusion_loss(net, ctx, batch, [(SEED, STEP, i)], DIFF, w_tok, data["w_channel"], normaliser)
        loss.backward()
        total += float(loss.detach())
        F = outputs.pop("last")[0].reshape(-1, C)
        field = torch.empty(H * W, C, dtype=F.dtype)
        field[torch.from_numpy(ids.ravel())] = F
        outputs[i] = field
    hook.remove()
    params = [p for p in net.parameters()]
    if grad_clip > 0:
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    else:
        gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    opt.step()
    return {"loss": total, "gnorm": gnorm, "outputs": outputs, "grads": grads,
            "params": {n: p.detach().clone() for n, p in net.named_parameters()}}


def assert_close(a, b, what, rtol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max()) / scale
    assert err <= rtol, f"{what}: max |diff| / max |ref| = {err:.3e}"


def check_mesh(mesh_sizes, window=(4, 4), per_mb=1, grad_clip=0.0, split=None, depth=4):
    cfg = model_cfg(window, depth)
    state, data = make_state(cfg), make_data()
    ref = serial_step(cfg, state, data, grad_clip)
    dp, pp, wy, wx, sp = mesh_sizes
    world = dp * pp * wy * wx * sp
    res = run_distributed(_swipe_step, world, args=(mesh_sizes, cfg, state, data, per_mb, grad_clip, split),
                          timeout=240)
    lay = WindowLayout(H, W, *cfg.window, wy, wx, sp)
    for r in res:  # loss and norm: every rank reports the global values
        assert abs(r["loss"] - ref["loss"]) <= 1e-9 * abs(ref["loss"]), (r["coords"], r["loss"], ref["loss"])
        assert abs(r["gnorm"] - ref["gnorm"]) <= 1e-9 * ref["gnorm"]
    # forward outputs: the last stage's ranks of each replica tile every sample's field
    for d in range(dp):
        last = [r for r in res if r["coords"][0] == d and r["coords"][1] == pp - 1]
        for k, i in enumerate(last[0]["samples"]):
            mb, j = divmod(k, per_mb)
            pieces = [None] * lay.n_ranks
            for r in last:
                pieces[r["window_rank"]] = r["outputs"][mb][j].permute(2, 0, 1).numpy()
            field = lay.assemble(pieces, 0)  # (C, H, W)
            assert_close(torch.from_numpy(field).permute(1, 2, 0).reshape(-1, C), ref["outputs"][i],
                         f"forward output of sample {i}")
    # every gradient and parameter, from whichever stage holds it (all ranks of a stage agree)
    seen = set()
    for r in res:
        for n, g in r["grads"].items():
            assert_close(g, ref["grads"][n], f"grad {n} on rank {r['coords']}")
            assert_close(r["params"][n], ref["params"][n], f"param {n} on rank {r['coords']}")
            seen.add(n)
    assert seen == set(ref["grads"]), f"parameters held by no stage: {set(ref['grads']) - seen}"
    # the step moved the parameters (the comparison above is not trivially of unchanged weights)
    moved = max(float((ref["params"][n] - state[n]).abs().max()) for n in ref["params"])
    assert moved > 1e-4
    return res


@pytest.mark.parametrize("mesh_sizes, kw", [
    ((1, 2, 2, 1, 2), {"grad_clip": 0.05}),          # pp 2 x wy 2 x sp 2, clipping active
    ((1, 3, 1, 1, 2), {}),                           # odd pp: embed | blocks | head
    ((2, 2, 1, 1, 2), {"per_mb": 1}),                # dp 2: different samples per replica
], ids=["pp2-wy2-sp2", "pp3-sp2", "dp2-pp2-sp2"])
def test_swipe_equals_serial(mesh_sizes, kw):
    check_mesh(mesh_sizes, **kw)


@pytest.mark.parametrize("mesh_sizes, kw", [
    ((1, 1, 2, 2, 1), {"per_mb": 2}),                # pp 1: standalone shift exchanges, wy x wx
    ((1, 1, 2, 1, 4), {"window": (4, 8)}),           # sp 4, non-square window (4x4 window grid... 4x4)
    ((1, 2, 1, 2, 4), {"window": (4, 4)}),           # sp 4 on the 4x8 (non-square) window grid
    ((1, 4, 1, 1, 2), {"split": [1, 1, 1, 1]}),      # explicit split, blocks on every stage
], ids=["pp1-wy2-wx2", "sp4-window4x8", "pp2-wx2-sp4", "pp4-split"])
def test_swipe_equals_serial_more(mesh_sizes, kw):
    check_mesh(mesh_sizes, **kw)


def _bytes_run(rank, world, shift_every, state):
    cfg = model_cfg(depth=4, shift_every=shift_every)
    return _swipe_step(rank, world, (1, 4, 2, 1, 1), cfg, state, make_data(), 2, 0.0, None)


def test_fused_shift_costs_no_extra_bytes():
    """pp 4 (embed | blocks 0-1 | blocks 2-3 | head), wy 2, sp 1: shift_every = 2 puts both frame
    changes (0 -> 1 and the un-shift 1 -> 0 into the head) on stage boundaries; shift_every = 4
    has no shift at all. Same p2p bytes on every rank, and they equal the plain activation
    sends (forward) + gradient sends (backward) of B x tokens_per_rank x dim float64 values."""
    state = make_state(model_cfg(depth=4))   # shift_every does not change the parameters
    fused = run_distributed(_bytes_run, 8, args=(2, state), timeout=240)
    plain = run_distributed(_bytes_run, 8, args=(4, state), timeout=240)
    lay = WindowLayout(H, W, 4, 4, 2, 1, 1)
    act = len(SAMPLES) * lay.tokens_per_rank * 32 * 8   # all micro-batches, one direction
    for f, p in zip(fused, plain):
        stage = f["coords"][1]
        expect = act * ((stage < 3) + (stage > 0))       # activations forward + gradients back
        assert f["bytes"]["p2p"]["bytes"] == p["bytes"]["p2p"]["bytes"] == expect, (f["coords"], f["bytes"], p["bytes"])
        assert f["bytes"]["all_to_all"]["bytes"] == 0
    # the shifted run really changed frames across ranks: its messages are re-addressed
    assert sum(f["bytes"]["p2p"]["messages"] for f in fused) > sum(p["bytes"]["p2p"]["messages"] for p in plain)

"""Checkpoints reshard: pp 2 x wy 2 x sp 2 -> pp 1 x sp 4 -> the serial optimizer (one format).

Run A (8 ranks, pp 2 x wy 2 x sp 2) takes step 0, saves, and takes step 1. Run B (4 ranks,
pp 1 x sp 4) loads A's checkpoint and takes step 1: its parameters and EMA must equal A's (the
AdamW moments moved across other element shards and another stage split; without them step 1
would differ). B then saves and takes step 2; the serial model + AdamW + EMA loaded from B's
checkpoint (the same format, read in one process) take step 2 and must land on B's parameters
and EMA. Float64, tiny model, the micro-batches fed directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aeris.model.network import AerisNet
from aeris.train.ema import EMA
from aeris.train.optim import build_optimizer
from swipe.testing import run_distributed
from tests.aeris.train.test_swipe_model import (BETAS, C, DIFF, EPS, H, LR, N_IN, SEED, W, WD, assert_close, make_data,
                              make_state, model_cfg, tokens)

SAMPLES_PER_STEP = [[5, 2], [7, 0], [1, 3]]
EMA_DECAY = 0.5


def _mbs(eng, data, step):
    from aeris.train.swipe_engine import MicroBatch
    ids = eng.ctx.token_ids(0)
    out = []
    for i in SAMPLES_PER_STEP[step]:
        d = None
        if eng.plan.is_first or eng.plan.is_last:
            d = {k: tokens(data[k][[i]], ids) for k in ("target", "cond", "forcing")}
        out.append(MicroBatch([(SEED, step, i)], d))
    return out


def _run(rank, world, mesh_sizes, state, steps, load_from, save_to, save_after):
    from aeris.checkpoint.training import load_checkpoint, save_checkpoint
    from aeris.train.swipe_engine import SwipeEngine
    from swipe.mesh import SwipeMesh

    cfg = model_cfg()
    data = make_data()
    mesh = SwipeMesh.build(*mesh_sizes)
    net = AerisNet(cfg, n_out=C, n_in=N_IN, grid=(H, W)).double()
    net.load_state_dict(state)
    eng = SwipeEngine(net, mesh, DIFF, w_lat_field=data["w_lat"], w_channel=data["w_channel"])
    eng.build_optimizer(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ema = EMA(eng.model, EMA_DECAY)
    if load_from is not None:
        load_checkpoint(load_from, model=eng.model, ema=ema, optimizer=eng.optimizer, distributed=True)
    for step in steps:
        eng.train_step(_mbs(eng, data, step), float(H * W * 2), lr=LR, grad_clip=0.0)
        ema.update(eng.model)
        if step == save_after:
            save_checkpoint(save_to, model=eng.model, ema=ema, optimizer=eng.optimizer, distributed=True,
                            record={"step": step + 1, "samples_seen": 2 * (step + 1), "config": "", "meta": {}})
    # the state is sharded over the weight group: whole tensors to compare
    return {"params": eng.full_weights(), "ema": eng.full_weights(ema.shadow)}


def merged(results, key):
    out = {}
    for r in results:
        out.update(r[key])
    return out


def _saved_tensors(path: Path) -> dict[str, set[str]]:
    """Parameter names per part ("model", "ema", "optim") in a checkpoint's DCP metadata."""
    import torch.distributed.checkpoint as dcp
    keys = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    out: dict[str, set[str]] = {"model": set(), "ema": set(), "optim": set()}
    for k in keys:
        part, _, rest = k.partition(".")
        if part == "optim" and rest.startswith("state."):
            rest = rest[len("state."):].rsplit(".", 1)[0]  # state.<name>.exp_avg -> <name>
        elif part == "optim":
            continue
        out[part].add(rest)
    return out


def test_reshard_round_trip(tmp_path: Path):
    from aeris.checkpoint.training import load_checkpoint, read_record
    from aeris.diffusion.objective import diffusion_loss
    from swipe.context import SerialContext
    from swipe.layout import WindowLayout

    cfg = model_cfg()
    state = make_state(cfg)
    ck_a, ck_b = tmp_path / "a" / "step_00000001", tmp_path / "b" / "step_00000002"
    # A: pp 2 x wy 2 x sp 2, steps 0 and 1, checkpoint after step 0
    a = run_distributed(_run, 8, args=((1, 2, 2, 1, 2), state, [0, 1], None, ck_a, 0), timeout=240)
    assert ck_a.is_dir() and not ck_a.with_name(ck_a.name + ".tmp").exists()
    assert read_record(ck_a)["step"] == 1
    assert _saved_tensors(ck_a) == {"model": set(state), "ema": set(state), "optim": set(state)}
    # B: pp 1 x sp 4 resumes A's checkpoint, steps 1 and 2, checkpoint after step 1
    b = run_distributed(_run, 4, args=((1, 1, 1, 1, 4), state, [1, 2], ck_a, ck_b, 1), timeout=240)
    a1_params, a1_ema = merged(a, "params"), merged(a, "ema")
    rec = read_record(ck_b)
    assert rec["step"] == 2 and rec["samples_seen"] == 4
    # serial: model + AdamW (build_optimizer) + EMA from B's checkpoint, as Trainer.load does
    net = AerisNet(cfg, n_out=C, n_in=N_IN, grid=(H, W)).double()
    opt = build_optimizer(net, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                          decay_names=set(net.decay_parameter_names()))
    ema = EMA(net, 0.0)
    rec = load_checkpoint(ck_b, model=net, optimizer=opt, ema=ema, distributed=False)
    assert rec["step"] == 2 and rec["samples_seen"] == 4
    for n, p in net.named_parameters():   # B's step 1 (other mesh, other shards) == A's step 1
        assert_close(p.detach(), a1_params[n], f"param {n} after the resharded step 1", rtol=1e-9)
        assert_close(ema.shadow[n].double(), a1_ema[n].double(), f"EMA {n} after the resharded step 1", rtol=1e-6)
    assert ema.decay == EMA_DECAY
    data = make_data()
    ctx = SerialContext(WindowLayout(H, W, *cfg.window))
    ids = ctx.token_ids(0)
    w_tok = torch.as_tensor(data["w_lat"].reshape(-1)[ids])
    opt.zero_grad(set_to_none=True)
    for i in SAMPLES_PER_STEP[2]:
        batch = {k: tokens(data[k][[i]], ids) for k in ("target", "cond", "forcing")}
        diffusion_loss(net, ctx, batch, [(SEED, 2, i)], DIFF, w_tok, data["w_channel"], float(H * W * 2)).backward()
    opt.step()
    ema.update(net)
    b2_params, b2_ema = merged(b, "params"), merged(b, "ema")
    for n, p in net.named_parameters():
        assert_close(p.detach(), b2_params[n], f"serial step 2 from the checkpoint: {n}", rtol=1e-5)
        assert_close(ema.shadow[n], b2_ema[n], f"serial EMA after step 2: {n}", rtol=1e-5)


def test_incomplete_checkpoint_is_rejected(tmp_path: Path):
    from aeris.checkpoint.training import CheckpointError, latest_checkpoint, read_record

    d = tmp_path / "checkpoints" / "step_00000003"
    d.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no run.json"):
        read_record(d)
    assert latest_checkpoint(tmp_path) is None   # a directory without its record is not a checkpoint

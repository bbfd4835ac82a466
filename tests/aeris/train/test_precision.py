"""The precision policy: bf16 compute with fp32 master state; activations travel in bf16."""

from __future__ import annotations

import pytest
import torch

from aeris.train.trainer import autocast_dtype
from swipe.testing import run_distributed
from tests.aeris.train.test_swipe_model import (BETAS, C, DIFF, EPS, H, LR, N_IN, SEED, W, WD, make_data,
                                               make_state, micro_batches, model_cfg, tokens)


def test_compute_dtype_rule():
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) is None          # CPU: fp32 unless asked
    assert autocast_dtype("auto", torch.device("xpu")) is torch.bfloat16  # Intel XPU: bf16 by default
    if torch.cuda.is_available():
        assert autocast_dtype("auto", torch.device("cuda")) is (torch.bfloat16 if torch.cuda.is_bf16_supported()
                                                               else None)


def _step(rank, world, amp, state):
    from aeris.model.network import AerisNet
    from aeris.train.swipe_engine import MicroBatch, SwipeEngine
    from swipe.comm import CommCounter
    from swipe.mesh import SwipeMesh

    mesh = SwipeMesh.build(1, 2, 1, 1, 2)
    net = AerisNet(model_cfg(), n_out=C, n_in=N_IN, grid=(H, W))  # float32 master weights
    net.load_state_dict({k: v.float() for k, v in state.items()})
    data = make_data()
    counter = CommCounter()
    eng = SwipeEngine(net, mesh, DIFF, w_lat_field=data["w_lat"], w_channel=data["w_channel"], counter=counter,
                      amp=amp, reduce_dtype=amp)
    eng.build_optimizer(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ids = eng.ctx.token_ids(0)
    mbs = []
    for sel in micro_batches([0, 1, 2, 3], 2):
        d = {k: tokens(data[k][sel], ids).float() for k in ("target", "cond", "forcing")} \
            if eng.plan.is_first or eng.plan.is_last else None
        mbs.append(MicroBatch([(SEED, 0, i) for i in sel], d))
    loss, gnorm = eng.train_step(mbs, float(H * W * 4), lr=LR, grad_clip=0.0)
    dtypes = {str(p.dtype) for p in eng.model.parameters()} | {str(v.dtype) for s in eng.optimizer.state.values()
                                                                for k, v in s.items() if k != "step"}
    return {"loss": loss, "bytes": dict(counter.bytes), "state_dtypes": dtypes}


def test_bf16_activations_move_half_the_bytes_and_master_state_stays_fp32():
    state = make_state(model_cfg())
    fp32 = run_distributed(_step, 4, args=(None, state), timeout=240)
    bf16 = run_distributed(_step, 4, args=(torch.bfloat16, state), timeout=240)
    for a, b in zip(fp32, bf16):
        assert b["bytes"]["p2p"] * 2 == a["bytes"]["p2p"] > 0             # pipeline sends
        assert b["bytes"]["all_to_all"] * 2 == a["bytes"]["all_to_all"] > 0  # Ulysses q, k, v, out
        assert b["bytes"]["reduce_scatter"] * 2 == a["bytes"]["reduce_scatter"] > 0  # bf16 reduction
        assert b["state_dtypes"] == a["state_dtypes"] == {"torch.float32"}  # master weights, AdamW moments
        assert b["loss"] == pytest.approx(a["loss"], rel=5e-2)

"""Scale-true state: per-stage construction with keyed init, element-sharded optimizer state,
reduce-scattered gradients (no full-gradient all-reduce)."""

from __future__ import annotations

import pytest
import torch

from aeris.model.init import init_rule, materialise, parameter_seed
from aeris.model.network import AerisNet
from swipe.testing import run_distributed
from tests.aeris.train.test_swipe_model import (BETAS, C, DIFF, EPS, H, LR, N_IN, SEED, W, WD, make_data,
                                               micro_batches, model_cfg, tokens)


def _meta_net():
    with torch.device("meta"):
        return AerisNet(model_cfg(), n_out=C, n_in=N_IN, grid=(H, W))


def _build(rank, world, mesh_sizes, step, reshard=False):
    from aeris.train.swipe_engine import MicroBatch, SwipeEngine
    from swipe.comm import CommCounter
    from swipe.mesh import SwipeMesh

    mesh = SwipeMesh.build(*mesh_sizes)
    data = make_data()
    counter = CommCounter()
    eng = SwipeEngine(_meta_net(), mesh, DIFF, w_lat_field=data["w_lat"], w_channel=data["w_channel"],
                      device="cpu", seed=7, counter=counter, reshard_after_forward=reshard)
    eng.build_optimizer(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    out = {"init": eng.full_weights(), "stage_params": sum(p.numel() for p in eng.model.parameters()),
           "local_params": sum(p.to_local().numel() for p in eng.model.parameters())}
    if step:
        ids = eng.ctx.token_ids(0)
        mbs = []
        per = 4 // mesh.shape.dp
        mine = list(range(mesh.coords.dp * per, (mesh.coords.dp + 1) * per))
        for sel in micro_batches(mine, 1):
            d = {k: tokens(data[k][sel], ids).float() for k in ("target", "cond", "forcing")} \
                if eng.plan.is_first or eng.plan.is_last else None
            mbs.append(MicroBatch([(SEED, 0, i) for i in sel], d))
        eng.train_step(mbs, float(H * W * 4), lr=LR, grad_clip=1.0)
        out["optim_elems"] = sum(v.to_local().numel() for s in eng.optimizer.state.values()
                                 for k, v in s.items() if k in ("exp_avg", "exp_avg_sq"))
        out["bytes"] = dict(counter.bytes)
        out["after"] = eng.full_weights()
        out["weight_group"] = mesh.shape.world_size // mesh.shape.pp
    return out


@pytest.mark.parametrize("mesh_sizes", [(1, 2, 2, 1, 2), (2, 2, 1, 1, 1), (1, 3, 1, 1, 2)],
                         ids=["pp2-wy2-sp2", "dp2-pp2", "pp3-sp2"])
def test_keyed_init_equals_the_serial_init_on_every_mesh(mesh_sizes):
    serial = materialise(_meta_net(), "cpu", 7)
    ref = {n: p.detach() for n, p in serial.named_parameters()}
    world = mesh_sizes[0] * mesh_sizes[1] * mesh_sizes[2] * mesh_sizes[3] * mesh_sizes[4]
    seen = set()
    for r in run_distributed(_build, world, args=(mesh_sizes, False), timeout=240):
        for n, t in r["init"].items():
            assert torch.equal(t, ref[n]), n
            seen.add(n)
    assert seen == set(ref)  # the stages together hold the whole network


def test_init_is_keyed_by_name_and_seed():
    a, b = materialise(_meta_net(), "cpu", 7), materialise(_meta_net(), "cpu", 8)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    q = "blocks.1.attn.qkv.weight"
    assert init_rule(q) == "trunc_normal" and not torch.equal(pa[q], pb[q])
    assert not torch.equal(pa[q], pa["blocks.2.attn.qkv.weight"])   # another name, other values
    assert parameter_seed(7, q) != parameter_seed(7, "blocks.2.attn.qkv.weight")
    assert torch.equal(pa["out.linear.weight"], torch.zeros_like(pa["out.linear.weight"]))
    with pytest.raises(ValueError, match="no initialisation rule"):
        init_rule("blocks.0.new_thing.weight")


def test_optimizer_state_is_element_sharded_and_gradients_reduce_scattered():
    results = run_distributed(_build, 8, args=((2, 2, 1, 1, 2), True), timeout=240)
    for r in results:
        n = r["weight_group"]
        assert n == 4
        # AdamW's two moments: per rank 2 x (stage parameters / weight group), to 1 %
        assert r["optim_elems"] == pytest.approx(2 * r["stage_params"] / n, rel=0.01)
        assert r["local_params"] == pytest.approx(r["stage_params"] / n, rel=0.01)
        b = r["bytes"]
        assert b["reduce_scatter"] > 0 and b["all_gather"] > 0
        assert b["all_reduce"] < 64 * 8  # only scalars (loss, gradient norm): no full-gradient all-reduce


def test_gathering_once_per_step_or_every_micro_batch_gives_the_same_step():
    once = run_distributed(_build, 4, args=((1, 2, 1, 1, 2), True, False), timeout=240)
    every = run_distributed(_build, 4, args=((1, 2, 1, 1, 2), True, True), timeout=240)
    for a, b in zip(once, every):
        for n, t in a["after"].items():
            torch.testing.assert_close(t, b["after"][n], rtol=1e-6, atol=1e-7, msg=n)
        # 4 micro-batches: gathered and reduced once per step, or 2 x 4 gathers and 4 reductions
        assert b["bytes"]["all_gather"] == 8 * a["bytes"]["all_gather"] > 0
        assert b["bytes"]["reduce_scatter"] == 4 * a["bytes"]["reduce_scatter"] > 0

"""Communication CALLS of a SWiPe training step, per block and micro-batch, as the trainer logs
them (SwipeEngine.comm_record, docs/layout.md, "Communication primitives").

With sp > 1 every block's attention moves the stacked q, k, v in one Ulysses all-to-all and its
output in one: 2 forward, 2 backward, and 2 more when activation checkpointing recomputes the
block in backward. p2p calls: one per frame change with traffic for the rank, forward and
backward (the changes sit between blocks, outside the recomputed part), and the pipeline's
activation / gradient sends, one per micro-batch each. The expectation is counted from the
layout's routes and the stage plan, not from the counter.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aeris.diffusion.config import DiffusionConfig
from aeris.model.config import ModelConfig
from aeris.model.network import AerisNet
from swipe.comm import KINDS
from swipe.testing import run_distributed

H, W, C, NF = 8, 16, 3, 2
M = 2  # micro-batches


def model_cfg(checkpoint: bool) -> ModelConfig:
    return ModelConfig(dim=16, depth=4, heads=2, mlp_hidden=32, window=[4, 4], shift_every=1,
                       pole_mask=True, checkpoint_blocks=checkpoint)


def expected_p2p_calls(net: AerisNet, lay, plan, r: int) -> int:
    """p2p calls of window rank r in one step of M micro-batches (module docstring)."""
    def moves(src, dst):  # the rank sends or receives something on this route
        return any(m.src != m.dst and r in (m.src, m.dst) for m in lay.route(src, dst).messages)

    changes, frame = 0, plan.start_frame
    for i in plan.blocks:
        changes += net.block_frame(i) != frame and moves(frame, net.block_frame(i))
        frame = net.block_frame(i)
    changes += frame != plan.end_frame and moves(frame, plan.end_frame)
    return M * (2 * changes + (not plan.is_last) + (not plan.is_first))


def _steps(rank, world, meshes):
    return {m: _step(m) for m in meshes}


def _step(mesh_sizes):
    from aeris.train.swipe_engine import MicroBatch, SwipeEngine
    from swipe.mesh import SwipeMesh

    mesh = SwipeMesh.build(*mesh_sizes)
    out = {}
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = AerisNet(model_cfg(checkpoint), n_out=C, n_in=2 * C + NF, grid=(H, W))
        eng = SwipeEngine(net, mesh, DiffusionConfig(), w_lat_field=np.ones((H, W)),
                          w_channel=torch.ones(C))
        eng.build_optimizer(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        g = torch.Generator().manual_seed(1)
        shape = (1, eng.layout.n_local_windows, eng.layout.tokens_per_piece)
        mbs = [MicroBatch([(0, 0, k)], {"target": torch.randn(*shape, C, generator=g),
                                        "cond": torch.randn(*shape, C, generator=g),
                                        "forcing": torch.randn(*shape, NF, generator=g)})
               for k in range(M)]
        eng.train_step(mbs, float(H * W * M), lr=1e-4, grad_clip=1.0)
        out[checkpoint] = {"rec": eng.comm_record(), "calls": dict(eng.counter.calls),
                           "blocks": len(eng.plan.blocks),
                           "p2p": expected_p2p_calls(net, eng.layout, eng.plan, mesh.window_rank),
                           "times": eng.step_times(), "rows": eng.gather_rows([torch.distributed.get_rank(), 1.5])}
    return out


MESHES = [(2, 1, 1, 1, 2), (1, 2, 1, 1, 2)]  # (dp, pp, wy, wx, sp): pp 1 x sp 2 (x dp 2), pp 2 x sp 2


@pytest.mark.multiproc
def test_calls_per_block():
    for rank_res in run_distributed(_steps, 4, args=(MESHES,), timeout=240):
        for (dp, pp, *_), res in rank_res.items():
            for checkpoint, r in res.items():
                check_calls(pp, checkpoint, r)


def check_calls(pp: int, checkpoint: bool, r: dict) -> None:
    rec, per = r["rec"], r["blocks"] * M
    assert r["blocks"] > 0
    # 2 forward + 2 backward all-to-alls per block, +2 for the recomputed forward
    assert r["calls"]["all_to_all"] == per * (6 if checkpoint else 4)
    assert rec["calls_all_to_all_per_block_rank0"] == (6 if checkpoint else 4)
    assert r["p2p"] > 0 and r["calls"]["p2p"] == r["p2p"]
    assert rec["calls_p2p_per_block_rank0"] == r["p2p"] / per
    # the step's scalars: grad norm^2 and loss over the weight group (+ the pp group)
    assert r["calls"]["all_reduce"] == (4 if pp > 1 else 2)
    assert rec["seconds_all_to_all_rank0"] > 0 and rec["seconds_p2p_rank0"] > 0
    # the step-time split (docs/training.md, "Step time"): every stage here draws noise (the first
    # for its input, the last for its target); pipeline waits only with pp > 1
    t = r["times"]
    assert t["noise_s"] > 0 and t["comm_wait_s"] > 0
    assert (t["bubble_s"] > 0) == (pp > 1)
    assert t["comm_wait_s"] + t["bubble_s"] == pytest.approx(sum(rec[f"seconds_{k}_rank0"] for k in KINDS))
    assert r["rows"] == [[float(k), 1.5] for k in range(4)]   # every rank's row, in rank order


def test_step_line_shows_calls_per_block():
    from aeris.train.trainer import Trainer
    rec = {"step": 3, "loss": 0.5, "grad_norm": 1.0, "samples_per_s": 2.0, "tflops": 0.1,
           **{f"bytes_{k}_{w}": 0 for k in ("all_to_all", "p2p", "all_reduce") for w in ("rank0", "all")},
           "calls_all_to_all_per_block_rank0": 4.0, "calls_p2p_per_block_rank0": 1.5}
    line = Trainer._step_line(SimpleNamespace(_tag=""), rec)
    assert line.endswith("calls/block/micro-batch rank 0: a2a 4 p2p 1.5")
    rec["calls_all_to_all_per_block_rank0"] = None  # a stage without blocks: nothing to show
    assert "calls/block" not in Trainer._step_line(SimpleNamespace(_tag=""), rec)

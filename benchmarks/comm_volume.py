"""Communication volume of one SWiPe training step: analytic vs measured bytes, by kind.

    python benchmarks/comm_volume.py            # a few meshes of 4-8 CPU ranks (gloo), ~1-2 min

For each mesh one optimizer step of a tiny float32 AerisNet runs on forked gloo ranks and every
rank's swipe.comm.CommCounter is read. Analytic bytes SENT per rank per step (b = 4 bytes,
B = samples per micro-batch, m = micro-batches, t = tokens per rank, d = model width):

* p2p, pipeline: a stage that is not last sends its activation (B t d b per micro-batch), one
  that is not first sends the input gradient back (same size); a frame change on a stage
  boundary rides on that send (re-addressed, same bytes);
* p2p, in-stage frame changes (pp = 1 or several frame groups in one stage): the tokens that
  leave the rank on the route (from swipe.layout), forward and backward;
* all_to_all (Ulysses): per block, q, k, v and the output, forward and backward, each moving
  (sp-1)/sp of B t d b; with model.checkpoint_blocks the backward recomputes the forward and
  its four all-to-alls again (12 per block instead of 8);
* all_gather / reduce_scatter (FSDP2 over the weight group of n ranks, P the stage's
  parameters): the stage is gathered once per step, (n-1)/n P b, and its accumulated
  gradients reduce-scattered once, (n-1)/n P b (2 m and m times that with
  train.reshard_after_forward; counted by the engine from that schedule, not intercepted);
* all_reduce: scalars only, the gradient norm^2 and the loss (float64) over the weight group
  and the pp group, 2 (n-1)/n 8 bytes per call.

Prints a table and writes benchmarks/results/comm_volume.json (atomically).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aeris.diffusion.config import DiffusionConfig  # noqa: E402
from aeris.model.config import ModelConfig  # noqa: E402
from aeris.model.network import AerisNet  # noqa: E402
from swipe.layout import WindowLayout  # noqa: E402
from swipe.pipeline import plan_stages  # noqa: E402
from swipe.testing import run_distributed  # noqa: E402

H, W, C, NF = 16, 32, 3, 2
B, M = 1, 2          # samples per micro-batch, micro-batches
BYTES = 4            # float32
MESHES = [(1, 2, 2, 1, 2), (1, 3, 1, 1, 2), (1, 1, 2, 2, 1), (2, 2, 1, 1, 2), (1, 2, 1, 1, 4)]


def model_cfg() -> ModelConfig:
    return ModelConfig(dim=32, depth=4, heads=4, mlp_hidden=64, window=[4, 4], shift_every=1)


def _leaving_tokens(lay: WindowLayout, src: int, dst: int, r: int) -> int:
    return sum(m.n_tokens for m in lay.route(src, dst).sends(r) if m.dst != r)


def analytic(mesh, rank: int, net: AerisNet | None = None, micro_batch: int = B, n_micro: int = M,
             value_bytes: int = BYTES) -> dict[str, int]:
    """Bytes rank `rank` sends in one training step, by kind (module docstring); ``net`` (may
    live on the meta device) and the batch default to this benchmark's."""
    dp, pp, wy, wx, sp = mesh
    if net is None:
        net = AerisNet(model_cfg(), n_out=C, n_in=2 * C + NF, grid=(H, W))
    cfg, (H_, W_) = net.cfg, net.grid
    B, M, BYTES = micro_batch, n_micro, value_bytes  # noqa: N806 (the docstring's symbols)
    lay = WindowLayout(H_, W_, *cfg.window, wy, wx, sp)
    n_win = wy * wx * sp
    p = (rank // n_win) % pp
    r = rank % n_win
    plans = plan_stages(net.n_blocks, pp, net.block_frame)
    plan = plans[p]
    act = B * lay.tokens_per_rank * cfg.dim * BYTES
    p2p = M * act * ((not plan.is_last) + (not plan.is_first))
    frame = plan.start_frame
    for i in plan.blocks:          # in-stage frame changes, forward + backward
        if net.block_frame(i) != frame:
            p2p += M * B * cfg.dim * BYTES * (_leaving_tokens(lay, frame, net.block_frame(i), r)
                                              + _leaving_tokens(lay, net.block_frame(i), frame, r))
            frame = net.block_frame(i)
    if frame != plan.end_frame:
        p2p += M * B * cfg.dim * BYTES * (_leaving_tokens(lay, frame, plan.end_frame, r)
                                          + _leaving_tokens(lay, plan.end_frame, frame, r))
    a2a = len(plan.blocks) * (12 if cfg.checkpoint_blocks else 8) * M * act * (sp - 1) // sp
    n_params = 0
    for name, prm in net.named_parameters():
        blk = name.split(".")[1] if name.startswith("blocks.") else None
        if (blk is not None and int(blk) in plan.blocks) or (name.startswith("input.") and plan.is_first) \
                or (name.startswith("out.") and plan.is_last):
            n_params += prm.numel()
    n = dp * n_win
    scalar = 2 * (2 * (n - 1) * 8 // n + (2 * (pp - 1) * 8 // pp if pp > 1 else 0))
    return {"p2p": p2p, "all_to_all": a2a, "all_reduce": scalar,
            "all_gather": (n - 1) * n_params * BYTES // n,       # once per step (default),
            "reduce_scatter": (n - 1) * n_params * BYTES // n}   # see train.reshard_after_forward


def _step(rank, world, mesh):
    from aeris.train.swipe_engine import MicroBatch, SwipeEngine
    from swipe.comm import CommCounter
    from swipe.mesh import SwipeMesh

    dp, pp, wy, wx, sp = mesh
    sm = SwipeMesh.build(*mesh)
    torch.manual_seed(0)
    net = AerisNet(model_cfg(), n_out=C, n_in=2 * C + NF, grid=(H, W))
    counter = CommCounter()
    g = torch.Generator().manual_seed(1)
    eng = SwipeEngine(net, sm, DiffusionConfig(), w_lat_field=torch.ones(H, W).numpy(),
                      w_channel=torch.ones(C), counter=counter)
    eng.build_optimizer(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    lay = eng.layout
    mbs = []
    for k in range(M):
        shape = (B, lay.n_local_windows, lay.tokens_per_piece)
        data = {"target": torch.randn(*shape, C, generator=g), "cond": torch.randn(*shape, C, generator=g),
                "forcing": torch.randn(*shape, NF, generator=g)}
        mbs.append(MicroBatch([(0, 0, sm.coords.dp * M + k)], data))
    counter.reset()
    t0 = time.perf_counter()
    eng.train_step(mbs, float(H * W * B * M * dp), lr=1e-4, grad_clip=1.0)
    return {"bytes": dict(counter.bytes), "messages": dict(counter.messages), "seconds": time.perf_counter() - t0}


def main() -> int:
    rows = []
    for mesh in MESHES:
        world = 1
        for s in mesh:
            world *= s
        res = run_distributed(_step, world, args=(mesh,), timeout=300)
        for kind in ("p2p", "all_to_all", "all_reduce", "all_gather", "reduce_scatter"):
            ana = [analytic(mesh, r)[kind] for r in range(world)]
            meas = [r["bytes"][kind] for r in res]
            rows.append({"mesh": dict(zip(("dp", "pp", "wy", "wx", "sp"), mesh)), "kind": kind,
                         "analytic_rank0": ana[0], "measured_rank0": meas[0],
                         "analytic_all": sum(ana), "measured_all": sum(meas),
                         "messages_all": sum(r["messages"][kind] for r in res),
                         "match": ana == meas})
    print(f"{'mesh (dp,pp,wy,wx,sp)':<22}{'kind':<12}{'analytic r0':>13}{'measured r0':>13}"
          f"{'analytic all':>14}{'measured all':>14}{'msgs':>7}  match")
    for row in rows:
        m = tuple(row["mesh"].values())
        print(f"{str(m):<22}{row['kind']:<12}{row['analytic_rank0']:>13}{row['measured_rank0']:>13}"
              f"{row['analytic_all']:>14}{row['measured_all']:>14}{row['messages_all']:>7}  {row['match']}")
    out = ROOT / "benchmarks" / "results" / "comm_volume.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"grid": [H, W], "model": {"dim": 32, "depth": 4, "heads": 4, "window": [4, 4]},
                               "micro_batch": B, "micro_batches": M, "dtype": "float32", "rows": rows}, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0 if all(r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

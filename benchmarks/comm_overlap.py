"""Communication calls and blocked time: stacked vs separate Ulysses all-to-alls, and the
pipeline executor with receives posted ahead vs one batch per step.

    python benchmarks/comm_overlap.py            # 2 + 4 + 2 forked gloo ranks, ~1 min on 2 cores

* ``ulysses``: one SwipeContext-style attention, forward + backward, on sp = 2 and sp = 4:
  q, k, v stacked in ONE all-to-all (swipe.comm.ulysses_qkv_to_heads, what SwipeContext does)
  vs three separate ones (ulysses_to_heads of q, k and v), the output in one either way.
  Reports all-to-all calls, bytes (equal by construction), wall ms per attention and the
  seconds blocked in the all-to-alls (swipe.comm.CommCounter), medians over repeats.
* ``pipeline``: a 2-stage toy (swipe.pipeline.PipelineExecutor, 1F1B, 4 micro-batches) whose
  stages burn a fixed number of matmuls per forward (twice that in backward), with
  ``post_ahead`` True (gloo default) and False (one batch per step, the nccl order). Reports
  wall ms per step and the p2p seconds each stage spent blocked in waits.

Prints tables and writes benchmarks/results/comm_overlap.json (atomically). Timings on a
shared CPU machine are indicative only; the call counts are exact.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swipe.testing import run_distributed  # noqa: E402

REPEATS = 5
B, N_LW, TPP, HEADS, DH = 2, 8, 64, 8, 32      # a rank's q, k, v: 2 x 8 x 64 tokens x 8 heads x 32
PIPE_TOKENS, PIPE_DIM, PIPE_WORK, MICRO = 2048, 64, 6, 4


def _ulysses(rank, world, stacked: bool):
    from swipe.comm import CommCounter, ulysses_qkv_to_heads, ulysses_to_heads, ulysses_to_tokens
    from swipe.context import window_attention
    from swipe.mesh import SwipeMesh

    mesh = SwipeMesh.build(1, 1, 1, 1, world)
    g = mesh.sp_group
    ctr = CommCounter()
    qkv = torch.randn(B, N_LW, TPP, 3, HEADS, DH, generator=torch.Generator().manual_seed(rank))
    walls, blocked, calls = [], [], []
    for _ in range(REPEATS + 1):   # the first one warms up
        x = qkv.clone().requires_grad_(True)
        ctr.reset()
        t0 = time.perf_counter()
        if stacked:
            q, k, v = ulysses_qkv_to_heads(x, g, ctr).unbind(3)
        else:
            q, k, v = (ulysses_to_heads(t, g, ctr) for t in x.unbind(3))
        out = ulysses_to_tokens(window_attention(q, k, v), g, ctr)
        out.sum().backward()
        walls.append(time.perf_counter() - t0)
        blocked.append(ctr.seconds["all_to_all"])
        calls.append(ctr.calls["all_to_all"])
    return {"wall_ms": 1e3 * statistics.median(walls[1:]), "blocked_ms": 1e3 * statistics.median(blocked[1:]),
            "calls": calls[-1], "bytes": ctr.bytes["all_to_all"]}


def _burn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    for _ in range(PIPE_WORK):
        x = torch.tanh(x @ w)
    return x


def _pipeline(rank, world, post_ahead: bool):
    from swipe.comm import CommCounter
    from swipe.layout import WindowLayout
    from swipe.pipeline import PipelineExecutor

    route = WindowLayout(32, 64, 32, 64).route(0, 0)   # one window rank: a plain send of 2048 tokens
    ctr = CommCounter()
    ex = PipelineExecutor(rank, 2, 0, prev_ranks=[0] if rank else None, next_ranks=None if rank else [1],
                          recv_route=route if rank else None, send_route=None if rank else route,
                          counter=ctr, post_ahead=post_ahead)
    gen = torch.Generator().manual_seed(rank)
    w = (torch.randn(PIPE_DIM, PIPE_DIM, generator=gen) / PIPE_DIM ** 0.5).requires_grad_(True)
    data = torch.randn(1, 1, PIPE_TOKENS, PIPE_DIM, generator=gen)

    def forward(k, x):
        h = _burn(data if x is None else x, w)
        return h if rank == 0 else h.sum()

    walls, waits = [], []
    for _ in range(REPEATS + 1):
        ctr.reset()
        t0 = time.perf_counter()
        ex.train(MICRO, forward, lambda k: (1, 1, PIPE_TOKENS, PIPE_DIM), torch.float32)
        walls.append(time.perf_counter() - t0)
        waits.append(ctr.seconds["p2p"])
    return {"wall_ms": 1e3 * statistics.median(walls[1:]), "p2p_wait_ms": 1e3 * statistics.median(waits[1:]),
            "p2p_calls": ctr.calls["p2p"]}


def main() -> int:
    out = {"ulysses": [], "pipeline": [], "repeats": REPEATS,
           "shapes": {"ulysses_qkv": [B, N_LW, TPP, 3, HEADS, DH],
                      "pipeline": {"tokens": PIPE_TOKENS, "dim": PIPE_DIM, "matmuls_per_forward": PIPE_WORK,
                                   "micro_batches": MICRO}}}
    for sp in (2, 4):
        for stacked in (True, False):
            res = run_distributed(_ulysses, sp, args=(stacked,), timeout=300)
            out["ulysses"].append({"sp": sp, "qkv": "stacked" if stacked else "separate",
                                   "calls": res[0]["calls"], "bytes_rank0": res[0]["bytes"],
                                   "wall_ms": max(r["wall_ms"] for r in res),
                                   "blocked_ms": max(r["blocked_ms"] for r in res)})
    for ahead in (True, False):
        res = run_distributed(_pipeline, 2, args=(ahead,), timeout=300)
        out["pipeline"].append({"post_ahead": ahead, "wall_ms": max(r["wall_ms"] for r in res),
                                "p2p_wait_ms_stage0": res[0]["p2p_wait_ms"],
                                "p2p_wait_ms_stage1": res[1]["p2p_wait_ms"],
                                "p2p_calls": [r["p2p_calls"] for r in res]})
    print(f"{'sp':>3} {'q,k,v':<9}{'a2a calls':>10}{'bytes r0':>11}{'wall ms':>9}{'blocked ms':>11}")
    for r in out["ulysses"]:
        print(f"{r['sp']:>3} {r['qkv']:<9}{r['calls']:>10}{r['bytes_rank0']:>11}{r['wall_ms']:>9.2f}"
              f"{r['blocked_ms']:>11.2f}")
    print(f"\n{'post_ahead':<11}{'wall ms/step':>13}{'wait ms st0':>12}{'wait ms st1':>12}")
    for r in out["pipeline"]:
        print(f"{str(r['post_ahead']):<11}{r['wall_ms']:>13.1f}{r['p2p_wait_ms_stage0']:>12.1f}"
              f"{r['p2p_wait_ms_stage1']:>12.1f}")
    path = ROOT / "benchmarks" / "results" / "comm_overlap.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    print(f"wrote {path}")
    stacked_ok = all(r["calls"] == (2 if r["qkv"] == "stacked" else 4) * 2 for r in out["ulysses"])
    return 0 if stacked_ok else 1


if __name__ == "__main__":
    sys.exit(main())

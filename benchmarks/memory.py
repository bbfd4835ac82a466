"""Memory of ONE rank's pipeline stage, measured, against the layout planner's prediction.

    python benchmarks/memory.py --config aeris-40b-bench --mesh 14,20,6,6,12 --stage 1 --build-only --json OUT
    python benchmarks/memory.py --config aeris-1.3b-6h --mesh 1,10,4,4,12 --stage 1 --tokens 2700 --json OUT
    python benchmarks/memory.py --config tiny --mesh 1,2,1,1,1 --stage 0 --grid 64 128 --json OUT

One process builds the stage the way a SWiPe rank does (the network declared on the meta
device, only stage K allocated, every parameter keyed-initialised by its global name:
aeris.model.init), so the build time and peak are those of a real rank with a weight group of
one (sharding divides the state terms by the group size; see benchmarks/layout_planner.py).
Unless --build-only it then runs one forward + backward + AdamW + EMA step of the stage on
``--tokens`` tokens (default: the mesh's tokens per rank) in whole windows on a one-rank
context, the stage's input made up as the previous stage would send it.

Reported: stage parameters, build seconds, peak host memory of the build and of the step
(peak resident set minus the resident set before building; CPU) or peak device memory
(CUDA), the planner's prediction of both, and their ratio. JSON keys: ``stage_params``,
``peak_bytes``, ``planned_bytes``, ``build_seconds`` (+ details).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aeris.config import load_config  # noqa: E402
from aeris.model.init import materialise  # noqa: E402
from aeris.model.network import AerisNet  # noqa: E402
from aeris.train.ema import EMA  # noqa: E402
from swipe.context import SerialContext  # noqa: E402
from swipe.layout import WindowLayout  # noqa: E402
from swipe.pipeline import plan_stages  # noqa: E402

import layout_planner  # noqa: E402


def _rss() -> int:
    """Current resident set of this process, bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(cfg_name: str, mesh: tuple[int, ...], stage: int, grid: tuple[int, int], tokens: int | None,
            build_only: bool, n_prog: int, n_forcing: int, device: str) -> dict:
    cfg = load_config(cfg_name)
    m = cfg.model
    dp, pp, wy, wx, sp = mesh
    lay = WindowLayout(*grid, *m.window, wpy=wy, wpx=wx, sp=sp)
    t = tokens or lay.tokens_per_rank
    win = m.window[0] * m.window[1]
    n_win = max(1, -(-t // win))  # whole windows on a one-rank context
    t = n_win * win
    dev = torch.device(device)
    plan = layout_planner.plan(cfg, mesh, grid, n_micro=1, n_prog=n_prog, n_forcing=n_forcing, stage=stage,
                               tokens=t, weight_group=1, device=dev.type, act_bytes=4)
    cuda = dev.type == "cuda"
    gc.collect()
    base = torch.cuda.memory_allocated() if cuda else _rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.device("meta"):
        net = AerisNet.for_data(m, n_prog, n_forcing, grid)
    plans = plan_stages(net.n_blocks, pp, net.block_frame)
    st = materialise(net.stage(plans[stage]), dev, seed=0)
    build_s = time.perf_counter() - t0
    build_peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss()) - base
    params = sum(p.numel() for p in st.parameters())
    out = {"config": cfg_name, "mesh": list(mesh), "stage": stage, "grid": list(grid), "device": str(dev),
           "stage_params": int(params), "build_seconds": round(build_s, 2), "build_peak_bytes": int(build_peak),
           "planned_build_bytes": int(plan["memory_bytes"]["build_peak"])}
    if not build_only:
        # the step on n_win whole windows: a (win-aligned) grid of n_win windows in one row
        ctx = SerialContext(WindowLayout(m.window[0], m.window[1] * n_win, *m.window))
        # the stage sees this small grid (the position encoding is sized by it; the memory of a
        # step depends on the token count, not on where the tokens lie)
        st.grid = (m.window[0], m.window[1] * n_win)
        opt = torch.optim.AdamW(st.parameters(), lr=1e-4)
        ema = EMA(st, 0.5)
        x = (torch.randn(1, n_win, win, st.n_in) if st.plan.is_first else
             torch.randn(1, n_win, win, m.dim)).to(dev)
        tt = torch.rand(1, device=dev)
        y = st(x, tt, ctx)
        y.float().square().mean().backward()
        opt.step()
        ema.update(st)
        step_peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss()) - base
        out.update(tokens=int(t), step_peak_bytes=int(step_peak),
                   planned_step_bytes=int(plan["memory_bytes"]["step_peak"]))
    out["peak_bytes"] = out.get("step_peak_bytes", out["build_peak_bytes"])
    out["planned_bytes"] = out.get("planned_step_bytes", out["planned_build_bytes"])
    out["ratio_measured_over_planned"] = round(out["peak_bytes"] / max(1, out["planned_bytes"]), 3)
    return out


def stage_mesh(parser: argparse.ArgumentParser, text: str, stage: int) -> tuple[int, ...]:
    """``--mesh dp,pp,wy,wx,sp`` and ``--stage`` checked together (a parser error otherwise)."""
    mesh = tuple(int(v) for v in text.split(","))
    if len(mesh) != 5:
        parser.error("--mesh takes five numbers dp,pp,wy,wx,sp")
    if not 0 <= stage < mesh[1]:
        parser.error(f"--stage must be in 0 .. {mesh[1] - 1} for pp={mesh[1]}")
    return mesh


def write_json(path: str | Path, result: dict) -> None:
    """Write a benchmark result atomically (temporary file, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--mesh", required=True, help="dp,pp,wy,wx,sp")
    p.add_argument("--stage", type=int, required=True, help="pipeline stage to build (0 .. pp-1)")
    p.add_argument("--grid", type=int, nargs=2, default=(720, 1440), metavar=("H", "W"))
    p.add_argument("--tokens", type=int, help="tokens of the step (default: the mesh's tokens per rank)")
    p.add_argument("--build-only", action="store_true", help="build the stage, no training step")
    p.add_argument("--channels", type=int, default=69, help="prognostic channels")
    p.add_argument("--forcings", type=int, default=4, help="forcing inputs per pixel")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    mesh = stage_mesh(p, a.mesh, a.stage)
    r = measure(a.config, mesh, a.stage, tuple(a.grid), a.tokens, a.build_only, a.channels, a.forcings, a.device)
    gb = 1e9
    print(f"{'config':<16}{'mesh':<18}{'stage':>6}{'params':>14}{'build s':>9}{'build GB':>10}{'planned':>9}"
          f"{'step GB':>9}{'planned':>9}")
    print(f"{r['config']:<16}{str(tuple(r['mesh'])):<18}{r['stage']:>6}{r['stage_params']:>14,}{r['build_seconds']:>9.1f}"
          f"{r['build_peak_bytes'] / gb:>10.3f}{r['planned_build_bytes'] / gb:>9.3f}"
          + (f"{r['step_peak_bytes'] / gb:>9.3f}{r['planned_step_bytes'] / gb:>9.3f}" if "step_peak_bytes" in r else ""))
    if a.json:
        write_json(a.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

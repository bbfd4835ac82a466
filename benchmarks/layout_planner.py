"""SWiPe layout planner: what one rank holds, stores, computes and sends for a model and a mesh.

Pure arithmetic (no processes): for each mesh (dp, pp, wy, wx, sp) it checks the mesh against
the model (grid / window / heads divisibility, swipe.layout and swipe.mesh rules) and reports
per rank: windows and tokens, parameters of its pipeline stage, memory (fp32 weights, grads and
EMA, AdamW moments sharded over the weight group as ZeRO-1 does, checkpointed activations),
bytes sent per optimizer step by kind, and model FLOPs per step. Defaults reproduce the
original AERIS layouts (1.3B: pp 10 x sp 12 x window 4x4; 40B: pp 20 x sp 12 x window 6x6 with
14 replicas = 120,960 tiles):

    python benchmarks/layout_planner.py
    python benchmarks/layout_planner.py --config aeris-1.3b-6h --mesh 1,10,4,4,12 --mesh 2,4,2,2,4
    python benchmarks/layout_planner.py --config aeris-1.3b-6h --devices 256      # enumerate meshes

Analytic bytes follow benchmarks/comm_volume.py (checked there against measured counters):
Ulysses all-to-all 8 (sp-1)/sp B t d b per block per micro-batch (q, k, v, out; fwd + bwd),
pipeline p2p B t d b per direction per micro-batch, gradient all-reduce 2 (n-1)/n P b over the
weight group of n ranks. Activation memory is a rough estimate (documented in `memory`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aeris.config import load_config  # noqa: E402
from aeris.model.flops import exact_flops_per_sample, forward_macs, parameter_count  # noqa: E402
from swipe.layout import LayoutError, WindowLayout  # noqa: E402
from swipe.pipeline import PipelineError, stage_split  # noqa: E402

DEFAULT_CASES = [  # (config, mesh (dp, pp, wy, wx, sp), grid, micro-batches per step)
    ("aeris-1.3b-6h", (1, 10, 4, 4, 12), (720, 1440), 20),
    ("aeris-40b-bench", (14, 20, 6, 6, 12), (720, 1440), 20),
]


def plan(cfg, mesh: tuple[int, int, int, int, int], grid: tuple[int, int], n_micro: int,
         micro_batch: int = 1, n_prog: int = 69, n_forcing: int = 4) -> dict:
    """Everything one rank of the busiest stage holds, stores, computes and sends (see module doc)."""
    dp, pp, wy, wx, sp = mesh
    m = cfg.model
    H, W = grid
    if m.heads % sp:
        raise ValueError(f"heads {m.heads} not divisible by sp {sp}")
    lay = WindowLayout(H, W, *m.window, wpy=wy, wpx=wx, sp=sp)  # raises LayoutError
    n_in = 2 * n_prog + n_forcing
    one = parameter_count(replace(m, depth=1), n_in, n_prog)
    two = parameter_count(replace(m, depth=2), n_in, n_prog)
    block = two - one
    embed = n_in * m.dim + m.dim
    head = one - block - embed
    counts = [len(r) for r in stage_split(m.depth, pp)]
    stage_params = [c * block + (embed if s == 0 else 0) + (head if s == pp - 1 else 0)
                    for s, c in enumerate(counts)]
    s_max = max(range(pp), key=lambda s: stage_params[s])
    P = stage_params[s_max]
    L = counts[s_max]
    t = lay.tokens_per_rank
    d = m.dim
    n_weight = dp * wy * wx * sp
    b_act = 2  # bf16 activations on the wire
    B = micro_batch
    a2a = 8 * L * (sp - 1) / sp * B * t * d * b_act * n_micro
    p2p = (0 if pp == 1 else (1 if s_max in (0, pp - 1) else 2)) * B * t * d * b_act * n_micro
    allreduce = 2 * (n_weight - 1) / n_weight * P * 4
    # memory: fp32 weights + grads + EMA, AdamW moments sharded over the weight group (ZeRO-1);
    # activations with per-block checkpointing: each block's input (t d, bf16) kept for every
    # micro-batch in flight (1F1B keeps at most pp), plus one block's internals during recompute
    # (~ t (10 d + 3 d_ffn) bf16 values, attention scores per window included as t Lw heads / sp)
    in_flight = min(pp, n_micro)
    Lw = m.window[0] * m.window[1]
    act = in_flight * B * (L + 1) * t * d * 2 + B * t * (10 * d + 3 * m.ffn_dim + Lw * m.heads // sp) * 2
    mem = {"weights_grads_ema_gb": 12 * P / 1e9, "adam_sharded_gb": 8 * P / n_weight / 1e9,
           "activations_gb": act / 1e9}
    samples = dp * B * n_micro

    class _Net:  # exact_flops_per_sample only needs the config and the I/O sizes
        pass
    net = _Net()
    net.cfg, net.grid, net.n_in, net.n_out = m, grid, n_in, n_prog
    flops_step = exact_flops_per_sample(net) * samples
    return {
        "config": cfg_name_of(cfg), "mesh": dict(zip(("dp", "pp", "wy", "wx", "sp"), mesh)),
        "world": dp * pp * wy * wx * sp, "grid": [H, W], "window": list(m.window),
        "windows_per_rank": lay.n_local_windows, "tokens_per_rank": t,
        "params_total": int(parameter_count(m, n_in, n_prog)), "params_busiest_stage": int(P),
        "blocks_per_stage": counts, "weight_group": n_weight,
        "memory_gb": {k: round(v, 3) for k, v in mem.items()}, "memory_total_gb": round(sum(mem.values()), 3),
        "bytes_per_step": {"all_to_all": int(a2a), "p2p": int(p2p), "all_reduce": int(allreduce)},
        "samples_per_step": samples, "flops_per_step_per_rank": flops_step / (dp * pp * wy * wx * sp),
        "forward_macs_per_sample": sum(forward_macs(m, H * W, n_in, n_prog).values()),
    }


def cfg_name_of(cfg) -> str:
    return getattr(cfg, "_name", "?")


def enumerate_meshes(cfg, grid, devices: int) -> list[tuple[int, ...]]:
    """Every (dp, pp, wy, wx, sp) with product == devices that the model and grid accept."""
    m = cfg.model
    out = []
    divs = [k for k in range(1, devices + 1) if devices % k == 0]
    for dp, pp, wy, wx in itertools.product(divs, repeat=4):
        rest = devices // (dp * pp * wy * wx) if devices % (dp * pp * wy * wx) == 0 else 0
        if rest < 1 or dp * pp * wy * wx * rest != devices or pp > m.depth:
            continue
        sp = rest
        if m.heads % sp:
            continue
        try:
            WindowLayout(*grid, *m.window, wpy=wy, wpx=wx, sp=sp)
        except LayoutError:
            continue
        out.append((dp, pp, wy, wx, sp))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--mesh", action="append", default=[], help="dp,pp,wy,wx,sp (repeatable)")
    p.add_argument("--devices", type=int, help="enumerate every valid mesh of this many devices")
    p.add_argument("--grid", type=int, nargs=2, default=(720, 1440))
    p.add_argument("--micro-batches", type=int, default=20)
    p.add_argument("--top", type=int, default=15, help="with --devices: show the N meshes of least memory")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "layout_planner.json"))
    a = p.parse_args(argv)
    cases = []
    if a.config:
        cfg = load_config(a.config)
        cfg._name = a.config
        meshes = [tuple(int(v) for v in s.split(",")) for s in a.mesh]
        if a.devices:
            meshes += enumerate_meshes(cfg, tuple(a.grid), a.devices)
        if not meshes:
            p.error("give --mesh or --devices with --config")
        cases = [(cfg, mm, tuple(a.grid), a.micro_batches) for mm in meshes]
    else:
        for name, mm, grid, nm in DEFAULT_CASES:
            cfg = load_config(name)
            cfg._name = name
            cases.append((cfg, mm, grid, nm))
    rows = []
    for cfg, mm, grid, nm in cases:
        try:
            rows.append(plan(cfg, mm, grid, nm))
        except (ValueError, LayoutError, PipelineError) as e:
            print(f"mesh {mm}: {e}")
    if a.devices:
        rows = sorted(rows, key=lambda r: r["memory_total_gb"])[:a.top]
    print(f"{'config':<17}{'dp,pp,wy,wx,sp':>16}{'world':>8}{'tok/rank':>9}{'stage params':>14}"
          f"{'mem GB':>8}{'a2a GB':>8}{'p2p GB':>8}{'AR GB':>7}{'TFLOP/rank':>11}")
    for r in rows:
        mm = ",".join(str(v) for v in r["mesh"].values())
        bb = r["bytes_per_step"]
        print(f"{r['config']:<17}{mm:>16}{r['world']:>8}{r['tokens_per_rank']:>9}{r['params_busiest_stage']:>14,}"
              f"{r['memory_total_gb']:>8.1f}{bb['all_to_all'] / 1e9:>8.2f}{bb['p2p'] / 1e9:>8.2f}"
              f"{bb['all_reduce'] / 1e9:>7.2f}{r['flops_per_step_per_rank'] / 1e12:>11.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

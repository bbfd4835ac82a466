"""SWiPe layout planner: what one rank holds, stores, computes and sends for a model and a mesh.

Pure arithmetic (no processes): for each mesh (dp, pp, wy, wx, sp) it checks the mesh against
the model (grid / window / heads divisibility, swipe.layout and swipe.mesh rules) and reports
per rank: windows and tokens, parameters of its pipeline stage, peak memory (`memory_bytes`:
the build, the fp32 state sharded over the weight group, FSDP units, activations; checked
against measured peaks by benchmarks/memory.py), bytes sent per optimizer step by kind, and
model FLOPs per step. Defaults reproduce the
original AERIS layouts (1.3B: pp 10 x sp 12 x window 4x4; 40B: pp 20 x sp 12 x window 6x6 with
14 replicas = 120,960 tiles):

    python benchmarks/layout_planner.py
    python benchmarks/layout_planner.py --config aeris-1.3b-6h --mesh 1,10,4,4,12 --mesh 2,4,2,2,4
    python benchmarks/layout_planner.py --config aeris-1.3b-6h --devices 256      # enumerate meshes

Analytic bytes follow benchmarks/comm_volume.py (checked there against measured counters):
Ulysses all-to-all 8 (sp-1)/sp B t d b per block per micro-batch (q, k, v, out; fwd + bwd),
pipeline p2p B t d b per direction per micro-batch, parameter all-gather (n-1)/n P 4 and
gradient reduce-scatter (n-1)/n P 4 per step over the weight group of n ranks (2 m and m times
that with ``train.reshard_after_forward``), all-reduce only scalars.
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


# torch's own allocations on the CPU (runtime, kernels, thread pools) that a process's
# resident set shows beside the tensors; measured with benchmarks/memory.py on this project's
# machines (none on a device: its allocator counts tensors only)
CPU_RUNTIME_BYTES = {"build": 20e6, "step": 60e6}


def memory_bytes(m, P: int, P_max: int, P_block: int, L: int, t: int, n_weight: int, in_flight: int,
                 micro_batch: int = 1, sp: int = 1, act_bytes: int = 2, device: str = "cuda",
                 reshard_after_forward: bool = False) -> dict:
    """Peak bytes of one rank (docs/training.md, "Sharded state"), by phase.

    P stage parameters (largest P_max, per block P_block), L blocks, t tokens per micro-batch,
    n_weight ranks sharing the stage's state, in_flight micro-batches held by 1F1B:

    * build: the stage's shards (4 P / n) + one whole parameter while it is initialised + the
      allocator's slack, ~10 % of the shards (freed init temporaries it keeps);
    * state: fp32 shards of parameters, gradients, AdamW moments and EMA, 20 P / n;
    * FSDP units when n > 1: gathered once per step (the default), the whole stage's weights
      and their unsharded gradients, 8 P; resharded after forward, a block gathered (and the
      next prefetched) plus its unsharded gradient, 3 x 4 P_block;
    * activations of one block's forward, per token: the ~14 d + 4 d_ffn values autograd saves
      (norms, modulations, q k v and their rotations, attention output, projections, the four
      SwiGLU tensors) plus 2 x heads x window attention weights per rank (heads / sp after
      Ulysses); its backward holds them and their gradients, ~1.4x; with checkpointing only every block's input (d per token, for each
      micro-batch in flight) is kept and one block is recomputed at a time;
    * the AdamW step: its moments plus one fp32 temporary per parameter (foreach).
    """
    d, ffn, heads = m.dim, m.ffn_dim, m.heads
    win = m.window[0] * m.window[1]
    B = micro_batch
    fwd_block = B * t * (14 * d + 4 * ffn + 2 * heads * win // sp) * act_bytes
    if m.checkpoint_blocks:
        act = in_flight * B * (L + 1) * t * d * act_bytes + 1.4 * fwd_block
    else:
        act = in_flight * L * fwd_block + 0.4 * fwd_block
    units = 0 if n_weight == 1 else (3 * 4 * P_block if reshard_after_forward else 8 * P)
    rt = CPU_RUNTIME_BYTES if device == "cpu" else {"build": 0.0, "step": 0.0}
    shard = P / n_weight
    bwd = 12 * shard + units + act           # parameters, EMA, gradients + activations
    opt = 20 * shard + 4 * shard             # + AdamW moments and its temporaries
    return {"build_peak": rt["build"] + 1.1 * 4 * shard + 4 * P_max,
            "state": 20 * shard, "fsdp_units": units, "activations": act,
            "step_peak": rt["step"] + max(bwd, opt)}


def plan(cfg, mesh: tuple[int, int, int, int, int], grid: tuple[int, int], n_micro: int,
         micro_batch: int = 1, n_prog: int = 69, n_forcing: int = 4, *, stage: int | None = None,
         tokens: int | None = None, weight_group: int | None = None, device: str = "cuda",
         act_bytes: int = 2) -> dict:
    """Everything one rank of a stage (default: the busiest) holds, stores, computes and sends
    (see module doc). ``tokens``/``weight_group`` override the mesh's (for a reduced
    measurement); ``device`` "cpu" adds torch's runtime allocations; ``act_bytes``: 2 (bf16
    compute) or 4 (fp32)."""
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
    s_max = max(range(pp), key=lambda s: stage_params[s]) if stage is None else stage
    P = stage_params[s_max]
    L = counts[s_max]
    t = lay.tokens_per_rank if tokens is None else tokens
    d = m.dim
    n_weight = dp * wy * wx * sp if weight_group is None else weight_group
    b_act = act_bytes  # activations on the wire in the compute dtype
    B = micro_batch
    a2a = 8 * L * (sp - 1) / sp * B * t * d * b_act * n_micro
    p2p = (0 if pp == 1 else (1 if s_max in (0, pp - 1) else 2)) * B * t * d * b_act * n_micro
    gathered = (n_weight - 1) / n_weight * P * 4
    gathers = 2 * n_micro if cfg.train.reshard_after_forward else 1
    scatters = n_micro if cfg.train.reshard_after_forward else 1
    scalar = 2 * (2 * (n_weight - 1) * 8 / n_weight + (2 * (pp - 1) * 8 / pp if pp > 1 else 0))
    biggest = max(m.ffn_dim * m.dim, 3 * m.dim * m.dim, 6 * m.dim * m.dim if not m.adaln_hidden else m.dim * m.dim,
                  n_in * m.dim if s_max == 0 else 0)
    mem_b = memory_bytes(m, P, biggest, block if L else 0, L, t, n_weight, min(pp - s_max, n_micro), B, sp,
                         b_act, device, cfg.train.reshard_after_forward)
    mem = {"state_gb": mem_b["state"] / 1e9, "fsdp_units_gb": mem_b["fsdp_units"] / 1e9,
           "activations_gb": mem_b["activations"] / 1e9}
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
        "memory_gb": {k: round(v, 3) for k, v in mem.items()}, "memory_total_gb": round(mem_b["step_peak"] / 1e9, 3),
        "memory_bytes": {k: int(v) for k, v in mem_b.items()},
        "bytes_per_step": {"all_to_all": int(a2a), "p2p": int(p2p), "all_gather": int(gathers * gathered),
                           "reduce_scatter": int(scatters * gathered), "all_reduce": int(scalar)},
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
          f"{'mem GB':>8}{'a2a GB':>8}{'p2p GB':>8}{'AG+RS GB':>9}{'TFLOP/rank':>11}")
    for r in rows:
        mm = ",".join(str(v) for v in r["mesh"].values())
        bb = r["bytes_per_step"]
        print(f"{r['config']:<17}{mm:>16}{r['world']:>8}{r['tokens_per_rank']:>9}{r['params_busiest_stage']:>14,}"
              f"{r['memory_total_gb']:>8.1f}{bb['all_to_all'] / 1e9:>8.2f}{bb['p2p'] / 1e9:>8.2f}"
              f"{(bb['all_gather'] + bb['reduce_scatter']) / 1e9:>9.2f}{r['flops_per_step_per_rank'] / 1e12:>11.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

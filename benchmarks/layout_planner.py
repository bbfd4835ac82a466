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
    python benchmarks/layout_planner.py --project --rate 84e12 --bw-intra 20e9 --bw-inter 16e9 \
        --latency 1e-5 --ranks-per-node 12                                    # step time on a machine
    python benchmarks/layout_planner.py --calibration benchmarks/results/scaling.json   # predict a sweep

Projection (`project`, pure): one optimizer step of 1F1B over m micro-batches on a machine of
per-rank compute rate R (FLOP/s of the step's matmul work, calibrated on a measured run by
`calibrated_rate`), link bandwidths inside / across nodes and a per-message latency:

    t_s = F_s / R                      F_s: one rank's FLOPs per micro-batch on stage s (`stage_flops`)
    critical = (m - 1) max_s t_s + sum_s t_s   (1F1B: the slowest stage every micro-batch, the
                                                others once to fill and drain; (m + pp - 1) t
                                                for equal stages)
    compute = max(critical / share(1), node's work / (n x share(n)))   (CPU nodes)
              share(k) = min(1, cores / (k + background)): a rank's core share when k ranks and
              the node's other runnable threads compete (1 on a device of its own)
    comm    = sum over kinds of bytes / bandwidth(link of the kind's group) + messages x latency
    step    = compute + comm;   bubble = critical - m max_s t_s;   EFLOP/s = model FLOPs per step / step

(no overlap of communication with compute unless ``overlap`` > 0). A 1F1B bubble fraction
(pp-1)/(m+pp-1) above 20 % is warned about.

Analytic bytes follow benchmarks/comm_volume.py (checked there against measured counters):
Ulysses all-to-all 8 (sp-1)/sp B t d b per block per micro-batch (q, k, v, out; fwd + bwd; 12
with model.checkpoint_blocks, whose backward recomputes the forward),
pipeline p2p B t d b per direction per micro-batch, parameter all-gather (n-1)/n P 4 and
gradient reduce-scatter (n-1)/n P 4 per step over the weight group of n ranks (2 m and m times
that with ``train.reshard_after_forward``), all-reduce only scalars.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aeris.config import load_config  # noqa: E402
from aeris.distributed.jobscript import BUBBLE_WARN, pipeline_bubble  # noqa: E402
from aeris.model.flops import (exact_flops_per_sample, forward_macs, paper_flops_per_sample,  # noqa: E402
                               parameter_count)
from swipe.layout import LayoutError, WindowLayout  # noqa: E402
from swipe.mesh import MeshShape  # noqa: E402
from swipe.pipeline import PipelineError, stage_split  # noqa: E402

DEFAULT_CASES = [  # (config, mesh (dp, pp, wy, wx, sp), grid, micro-batches per step: None = train.grad_accum)
    ("aeris-1.3b-6h", (1, 10, 4, 4, 12), (720, 1440), None),
    ("aeris-40b-bench", (14, 20, 6, 6, 12), (720, 1440), None),
]
BLOCK_TERMS = ("adaln", "qkv", "attention", "proj", "mlp")  # forward_macs' per-block terms


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


def stage_flops(m, t: int, n_blocks: int, first: bool, last: bool, n_in: int, n_out: int,
                micro_batch: int = 1) -> float:
    """FLOPs one rank of a stage runs per micro-batch of ``micro_batch`` samples, holding t
    tokens (forward + backward matmuls, 2 per multiply-add): the blocks' token terms on its t
    tokens, every block's adaLN (per sample: each rank computes its own modulation), the
    embedding on the first stage and the head on the last; backward = 2 x forward minus the
    input gradients autograd skips (as aeris.model.flops.exact_flops_per_sample); with
    ``checkpoint_blocks`` the blocks' forward once more (recomputed in the backward). On one
    stage holding every token this is exact_flops_per_sample (without recompute and without the
    pole mask, whose halved attention in the last window row is not subtracted here: a bound
    that is exact for the ranks holding no pole window, and within 1 % of attention otherwise)."""
    one = forward_macs(replace(m, depth=1), t, n_in, n_out)
    block = sum(one[k] for k in BLOCK_TERMS)
    fwd = n_blocks * block + (one["embed"] if first else 0) + (one["head_adaln"] + one["head"] if last else 0)
    d = m.dim
    first_adaln = (d * d, d * d) if m.adaln_hidden else (6 * d * d, 2 * d * d)  # (block, head)
    skipped = (one["embed"] if first else 0) + n_blocks * first_adaln[0] + (first_adaln[1] if last else 0)
    train = 3 * 2 * fwd - 2 * skipped + (2 * n_blocks * block if m.checkpoint_blocks else 0)
    return float(micro_batch * train)


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
    # bytes: q, k, v and the output, forward and backward (and the recomputed forward); calls:
    # q, k, v travel in one all-to-all (swipe.comm), so 2 per forward and 2 per backward
    a2a = (12 if m.checkpoint_blocks else 8) * L * n_micro * (sp - 1) / sp * B * t * d * b_act
    a2a_calls = (6 if m.checkpoint_blocks else 4) * L * n_micro
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
    n_pp_neighbours = 0 if pp == 1 else (1 if s_max in (0, pp - 1) else 2)
    units = L + 1  # FSDP units of a stage: one per block and the stage's own (embedding, head)
    log2 = math.ceil(math.log2(n_weight)) if n_weight > 1 else 0
    messages = {"all_to_all": a2a_calls * (sp - 1), "p2p": n_pp_neighbours * n_micro,
                "all_gather": gathers * units * (n_weight - 1), "reduce_scatter": scatters * units * (n_weight - 1),
                "all_reduce": 2 * 2 * log2 + (2 * 2 * math.ceil(math.log2(pp)) if pp > 1 else 0)}
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
        "messages_per_step": messages,
        "samples_per_step": samples, "flops_per_step_per_rank": flops_step / (dp * pp * wy * wx * sp),
        "flops_per_step": flops_step, "paper_flops_per_step": paper_flops_per_sample(m, H * W, n_in) * samples,
        "forward_macs_per_sample": sum(forward_macs(m, H * W, n_in, n_prog).values()),
        "micro_batch": B, "n_micro": n_micro, "bubble_fraction": pipeline_bubble(pp, n_micro),
        "stage_flops_per_micro": [stage_flops(m, t, c, s == 0, s == pp - 1, n_in, n_prog, B)
                                  for s, c in enumerate(counts)],
    }


def cfg_name_of(cfg) -> str:
    return getattr(cfg, "_name", "?")


# ---- projection: step time on a machine (pure) ----------------------------------------------
@dataclass(frozen=True)
class Machine:
    """A machine as the projection sees it, per rank: ``rate`` sustained FLOP/s of the step's
    matmul work (`calibrated_rate`), bytes/s a rank sends to a rank on its node (``bw_intra``)
    and on another node (``bw_inter``), ``latency`` s per message, ``ranks_per_node`` (ranks
    placed block-wise, as the job scripts do); ``cores``: the ranks of a node share this many
    compute units (CPU nodes; None: a device per rank); ``peak``: a device's peak FLOP/s (MFU);
    ``overlap``: the fraction of all-to-all and p2p time hidden behind compute;
    ``background``: other processes' runnable threads on a CPU node (a shared machine)."""

    rate: float
    bw_intra: float
    bw_inter: float
    latency: float = 0.0
    ranks_per_node: int = 1
    cores: int | None = None
    peak: float | None = None
    overlap: float = 0.0
    background: float = 0.0


KIND_GROUP = {"all_to_all": ("sp",), "p2p": ("pp",), "all_gather": ("dp", "wy", "wx", "sp"),
              "reduce_scatter": ("dp", "wy", "wx", "sp"), "all_reduce": ("dp", "wy", "wx", "sp")}


def links(mesh: tuple[int, ...], ranks_per_node: int) -> dict[str, str]:
    """``intra`` or ``inter`` per kind: whether every group that kind talks in (sp for the
    all-to-all, pipeline neighbours for p2p, the weight group for the sharded state and the
    scalars) lies on one node when consecutive ranks share a node."""
    shape = MeshShape(*mesh)
    out = {}
    for kind, dims in KIND_GROUP.items():
        g = np.asarray(shape.groups(dims)) // ranks_per_node
        out[kind] = "intra" if (g == g[:, :1]).all() else "inter"
    return out


def _compute_work(row: dict, mc: Machine) -> float:
    """FLOPs whose time is the step's compute phase at rate 1 (see module doc): the 1F1B
    critical path of the slowest stage, or on CPU nodes whose cores the ranks share, the
    node's work spread over its cores, whichever is longer."""
    F, m, pp = row["stage_flops_per_micro"], row["n_micro"], row["mesh"]["pp"]
    critical = (m - 1) * max(F) + sum(F)
    if mc.cores is None:
        return critical
    n = min(row["world"], mc.ranks_per_node)
    share = lambda k: min(1.0, mc.cores / (k + mc.background))  # noqa: E731
    node_work = n / pp * m * sum(F)                 # n / pp ranks of each stage on the node
    return max(critical / share(1), node_work / (n * share(n)))


def _comm_seconds(row: dict, mc: Machine) -> dict[str, float]:
    lk = links(tuple(row["mesh"].values()), mc.ranks_per_node)
    bw = {"intra": mc.bw_intra, "inter": mc.bw_inter}
    return {k: row["bytes_per_step"][k] / bw[lk[k]] + row["messages_per_step"][k] * mc.latency
            for k in row["bytes_per_step"]}


def _exposed(comm: dict[str, float], overlap: float) -> float:
    return sum(v * (1 - overlap) if k in ("all_to_all", "p2p") else v for k, v in comm.items())


def project(row: dict, mc: Machine) -> dict:
    """Step time and throughput of the planned rank ``row`` (from `plan`) on machine ``mc``
    (module doc): seconds by part, busy fraction = compute / step, model FLOP/s per rank
    (exact count and the paper's formula) and in total (EFLOP/s), MFU against ``mc.peak``."""
    F, m = row["stage_flops_per_micro"], row["n_micro"]
    t_s = max(F) / mc.rate
    critical = ((m - 1) * max(F) + sum(F)) / mc.rate
    phase = _compute_work(row, mc) / mc.rate
    comm = _comm_seconds(row, mc)
    step = phase + _exposed(comm, mc.overlap)
    world = row["world"]
    per_rank = row["flops_per_step"] / step / world
    return {"step_s": step, "compute_s": m * t_s, "bubble_s": critical - m * t_s,
            "shared_s": phase - critical, "comm_s": comm, "comm_exposed_s": step - phase,
            "links": links(tuple(row["mesh"].values()), mc.ranks_per_node),
            "busy_fraction": m * t_s / step, "bubble_fraction": row["bubble_fraction"],
            "samples_per_s": row["samples_per_step"] / step,
            "tflops_per_rank": per_rank / 1e12, "paper_tflops_per_rank": row["paper_flops_per_step"] / step / world / 1e12,
            "eflops": row["flops_per_step"] / step / 1e18, "paper_eflops": row["paper_flops_per_step"] / step / 1e18,
            "mfu": per_rank / mc.peak if mc.peak else None}


def calibrated_rate(row: dict, seconds: float, mc: Machine) -> float:
    """The rate R for which `project` gives a step of ``seconds`` for ``row`` on ``mc`` (its
    own rate ignored): the measured step minus its modelled communication, over the compute
    phase's work."""
    comm = _exposed(_comm_seconds(row, mc), mc.overlap)
    if seconds <= comm:
        raise ValueError(f"a step of {seconds:.3g} s is not longer than its modelled communication "
                         f"({comm:.3g} s): the link figures do not fit this run")
    return _compute_work(row, mc) / (seconds - comm)


def rate_for_throughput(row: dict, paper_flops_per_rank: float, mc: Machine) -> float:
    """The rate R at which `project` gives ``paper_flops_per_rank`` FLOP/s per rank (paper
    formula) for ``row`` on ``mc``: what a measured throughput implies for the step's matmuls."""
    step = row["paper_flops_per_step"] / row["world"] / paper_flops_per_rank
    return calibrated_rate(row, step, mc)


def scaling_efficiency(per_rank_rate: list[float]) -> list[float]:
    """Weak or strong scaling efficiency against the first (smallest) run: its per-rank
    throughput over the first's. Weak (work per rank constant): t_0 / t_N; strong (a fixed
    problem): speedup / (N / N_0); both are this ratio."""
    return [r / per_rank_rate[0] for r in per_rank_rate]


def bubble_warnings(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["bubble_fraction"] > BUBBLE_WARN:
            pp = r["mesh"]["pp"]
            out.append(f"{r['config']} mesh {tuple(r['mesh'].values())}: 1F1B bubble (pp-1)/(m+pp-1) = "
                       f"{r['bubble_fraction']:.0%} with m = {r['n_micro']} micro-batches (above {BUBBLE_WARN:.0%}; "
                       f"train.grad_accum >= {4 * pp} keeps it below)")
    return out


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


def machine_from_args(a, sweep: dict | None) -> Machine:
    """The target machine of ``--project``: --rate, or --peak x MFU (--mfu, else the
    calibration's: its calibrated rate over its probe's GEMM rate); link figures given, else the
    calibration's."""
    cal = (sweep or {}).get("calibration", {})
    if a.match_paper_tflops:
        rate = 1.0  # solved by the caller for its first case (rate_for_throughput)
    elif a.rate:
        rate = a.rate
    elif a.peak and (a.mfu or (cal.get("peak") and cal.get("rate_flops"))):
        rate = a.peak * (a.mfu or cal["rate_flops"] / cal["peak"])
    else:
        raise SystemExit("--project needs --rate, or --peak with --mfu or --calibration")
    def pick(v, key):
        if v is None and key not in cal:
            raise SystemExit(f"--project needs --{key.replace('_', '-')} (or --calibration)")
        return v if v is not None else cal[key]
    return Machine(rate=rate, bw_intra=pick(a.bw_intra, "bw_intra"), bw_inter=pick(a.bw_inter, "bw_inter"),
                   latency=pick(a.latency, "latency"), ranks_per_node=a.ranks_per_node, peak=a.peak,
                   overlap=a.overlap)


def predict_sweep(rows: list[dict], seconds: list[float], base: Machine,
                  background: list[float] | None = None) -> list[dict]:
    """Calibrate on the first run (its measured step) and project every run on that machine
    (on a shared CPU host with each run's ``background`` of other runnable threads)."""
    at = [replace(base, background=b) for b in background] if background else [base] * len(rows)
    rate = calibrated_rate(rows[0], seconds[0], at[0])
    return [project(r, replace(mc, rate=rate)) for r, mc in zip(rows, at)]


def _check_sweep(path: str) -> int:
    """Predict every run of a harness sweep from its smallest run; print measured vs projected."""
    from scaling import sweep_rows  # benchmarks/scaling.py: the planner's rows of a sweep's runs

    sw = json.loads(Path(path).read_text())
    cal = {k: v for k, v in sw["calibration"].items() if k in Machine.__dataclass_fields__}
    pred = predict_sweep(sweep_rows(sw), [r["seconds"] for r in sw["runs"]], Machine(rate=1.0, **cal),
                         [r.get("background", 0.0) for r in sw["runs"]] if cal.get("cores") else None)
    print(f"{'mesh':>12}{'ranks':>7}{'measured s':>12}{'projected s':>13}{'error':>8}")
    for r, p in zip(sw["runs"], pred):
        print(f"{','.join(map(str, r['mesh'].values())):>12}{r['world']:>7}{r['seconds']:>12.3f}{p['step_s']:>13.3f}"
              f"{p['step_s'] / r['seconds'] - 1:>+8.0%}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--mesh", action="append", default=[], help="dp,pp,wy,wx,sp (repeatable)")
    p.add_argument("--devices", type=int, help="enumerate every valid mesh of this many devices")
    p.add_argument("--grid", type=int, nargs=2, default=(720, 1440))
    p.add_argument("--micro-batches", type=int, default=None, help="per step (default: the config's train.grad_accum)")
    p.add_argument("--top", type=int, default=15, help="with --devices: show the N meshes of least memory")
    p.add_argument("--out", default=None, help="JSON (default results/layout_planner.json, with --project "
                                               "results/projection.json)")
    g = p.add_argument_group("projection onto a machine (module doc)")
    g.add_argument("--project", action="store_true", help="project step time, efficiency and EFLOP/s")
    g.add_argument("--rate", type=float, help="sustained FLOP/s of one device on the step's matmuls")
    g.add_argument("--peak", type=float, help="a device's peak FLOP/s (with --mfu or --calibration: the rate)")
    g.add_argument("--mfu", type=float, help="fraction of --peak sustained")
    g.add_argument("--match-paper-tflops", type=float, help="instead of a rate: the rate at which the first case "
                                                            "reaches this paper-formula TFLOP/s per device")
    g.add_argument("--calibration", help="a benchmarks/scaling.py JSON: alone, predict its runs from its "
                                         "smallest; with --project, its MFU and link figures")
    g.add_argument("--bw-intra", type=float, help="bytes/s a rank sends to a rank of its node")
    g.add_argument("--bw-inter", type=float, help="bytes/s a rank sends to another node")
    g.add_argument("--latency", type=float, help="seconds per message")
    g.add_argument("--ranks-per-node", type=int, default=1)
    g.add_argument("--overlap", type=float, default=0.0, help="fraction of all-to-all and p2p time hidden")
    a = p.parse_args(argv)
    if a.calibration and not a.project:
        return _check_sweep(a.calibration)
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
            rows.append(plan(cfg, mm, grid, nm or cfg.train.grad_accum))
        except (ValueError, LayoutError, PipelineError) as e:
            print(f"mesh {mm}: {e}")
    if a.devices:
        rows = sorted(rows, key=lambda r: r["memory_total_gb"])[:a.top]
    print(f"{'config':<17}{'dp,pp,wy,wx,sp':>16}{'world':>8}{'tok/rank':>9}{'stage params':>14}"
          f"{'mem GB':>8}{'a2a GB':>8}{'p2p GB':>8}{'AG+RS GB':>9}{'TFLOP/rank':>11}{'m':>4}{'bubble':>7}")
    for r in rows:
        mm = ",".join(str(v) for v in r["mesh"].values())
        bb = r["bytes_per_step"]
        print(f"{r['config']:<17}{mm:>16}{r['world']:>8}{r['tokens_per_rank']:>9}{r['params_busiest_stage']:>14,}"
              f"{r['memory_total_gb']:>8.1f}{bb['all_to_all'] / 1e9:>8.2f}{bb['p2p'] / 1e9:>8.2f}"
              f"{(bb['all_gather'] + bb['reduce_scatter']) / 1e9:>9.2f}{r['flops_per_step_per_rank'] / 1e12:>11.1f}"
              f"{r['n_micro']:>4}{r['bubble_fraction']:>7.1%}")
    for w in bubble_warnings(rows):
        print(f"warning: {w}")
    if a.project:
        mc = machine_from_args(a, json.loads(Path(a.calibration).read_text()) if a.calibration else None)
        if a.match_paper_tflops:
            mc = replace(mc, rate=rate_for_throughput(rows[0], a.match_paper_tflops * 1e12, mc))
        print(f"machine: {mc.rate / 1e12:.1f} TFLOP/s sustained per device, links {mc.bw_intra / 1e9:.1f} / "
              f"{mc.bw_inter / 1e9:.1f} GB/s (node / network), {mc.latency * 1e6:.1f} us per message, "
              f"{mc.ranks_per_node} ranks per node")
        print(f"{'config':<17}{'dp,pp,wy,wx,sp':>16}{'step s':>8}{'compute':>8}{'bubble':>8}{'comm':>7}{'busy':>6}"
              f"{'TF/dev':>8}{'paper':>7}{'EF/s':>7}{'paper':>7}{'weak eff':>9}")
        for r in rows:
            r["machine"] = {k: v for k, v in mc.__dict__.items()}
            pr = r["projection"] = project(r, mc)
            if r["mesh"]["dp"] > 1:  # against one replica of the same layout
                cfg = next(c for c, mm, *_ in cases if cfg_name_of(c) == r["config"])
                one = plan(cfg, (1, *tuple(r["mesh"].values())[1:]), tuple(r["grid"]), r["n_micro"])
                p1 = project(one, mc)
                pr["weak_efficiency_vs_dp1"] = pr["samples_per_s"] / r["world"] / (p1["samples_per_s"] / one["world"])
            mm = ",".join(str(v) for v in r["mesh"].values())
            weak = pr.get("weak_efficiency_vs_dp1")
            print(f"{r['config']:<17}{mm:>16}{pr['step_s']:>8.2f}{pr['compute_s']:>8.2f}{pr['bubble_s']:>8.2f}"
                  f"{pr['comm_exposed_s']:>7.2f}{pr['busy_fraction']:>6.0%}{pr['tflops_per_rank']:>8.1f}"
                  f"{pr['paper_tflops_per_rank']:>7.1f}{pr['eflops']:>7.2f}{pr['paper_eflops']:>7.2f}"
                  f"{'-' if weak is None else format(weak, '.1%'):>9}")
    out = Path(a.out or Path(__file__).parent / "results" / ("projection.json" if a.project else "layout_planner.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

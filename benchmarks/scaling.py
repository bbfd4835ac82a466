"""Weak and strong scaling of `aeris train` over a list of meshes, with a calibrated projection.

    python benchmarks/scaling.py --config tiny --weak dp --max-ranks 4     # dp 1, 2, 4 (batch per replica fixed)
    python benchmarks/scaling.py --config tiny --strong sp --max-ranks 4   # sp 1, 2, 4 (one global batch)
    python benchmarks/scaling.py --config tiny --weak dp --strong sp --strong wywx --max-ranks 8   # three sweeps
    python benchmarks/scaling.py --config tiny --mesh 1,1,1,1,1 --mesh 1,2,1,1,2 train.grad_accum=4
    python benchmarks/scaling.py ... --launcher mpiexec --launcher-args "--ppn 12 --depth 8 --cpu-bind depth" \
        --ranks-per-node 12                                                  # in a cluster allocation

Each ``--weak AXIS`` / ``--strong AXIS`` (repeatable) and the ``--mesh`` list is a sweep; a run
that several sweeps share (the one-rank run) runs once. Each run `aeris train` under the launcher (torchrun, mpiexec or srun; the backend follows
the device: gloo on CPU, nccl / xccl on a cluster) for ``--warmup`` + ``--steps`` steps with a
metrics line per step, and its ``metrics.jsonl`` is the measurement (one measurement path: the
trainer's): step ``seconds`` (the ``--stat`` of the measured steps, min by default: on a shared
machine the least disturbed step), samples/s, model TFLOP/s per rank by the exact count and by
the paper's formula (the trainer's FLOPs per step over the chosen seconds), the bytes each
kind of communication moved (rank 0 and all ranks; checked against benchmarks/comm_volume.py's
analytic model) and the step's time breakdown: the keys ``<part>_s`` for the parts in
`BREAKDOWN` when the trainer writes them (an absent key is reported absent, never as 0) and
every other ``*_s`` timing key it writes.

On a shared machine ``--rounds N`` launches every run N times round-robin and keeps its
fastest launch, ``--quiet-load`` waits for a low load average before each launch, and the other
processes' runnable threads are sampled around each launch (``background``: the projection's
host model shares the cores with them).

Presets grow one axis in powers of two up to ``--max-ranks``: dp, pp, wy, wx, sp, or wywx
(wy and wx in turn). ``--weak``: the work per rank stays the same (dp: the batch per replica is
kept; a window axis: micro_batch grows with it, so every rank keeps its token count).
``--strong``: one global batch (dp: grad_accum divided by dp; otherwise the same batch split
over more ranks). Efficiency against the smallest run = its per-rank throughput over the
smallest's (benchmarks/layout_planner.py, `scaling_efficiency`).

A link probe (two ranks under the same launcher; when the runs span nodes also 2 x
``--ranks-per-node`` ranks, rank 0 against the first rank of the next node) measures the p2p
latency and bandwidth inside and across nodes, and one rank's fp32 GEMM rate. The planner's projection
is calibrated on the smallest run (its compute rate) and the probe's links, then predicts
every run's step time (``projected_s``, ``projection_error``).

Writes ``results/<name>.json``, ``results/<name>.md`` (the runs and the sweeps' efficiencies)
and plots ``results/<name>_efficiency.png`` (efficiency against ranks, measured and projected,
per sweep) and ``results/<name>_breakdown.png`` (per run: the measured step split by the
trainer's breakdown keys, and the projected compute / bubble / time-sharing / communication).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

KINDS = ("all_to_all", "p2p", "all_gather", "reduce_scatter", "all_reduce")
BREAKDOWN = ("compute", "comm_wait", "data_wait", "noise", "bubble")   # parts of a step: keys <part>_s
NOT_TIMING = {"seconds"}                                             # `seconds` is the whole step


def is_timing_key(k: str) -> bool:
    """A metrics key holding seconds of a step's part: ``*_s`` (not a rate ``*_per_s``)."""
    return k.endswith("_s") and not k.endswith("_per_s") and k not in NOT_TIMING
AXES = ("dp", "pp", "wy", "wx", "wywx", "sp")
DIMS = ("dp", "pp", "wy", "wx", "sp")
RESULTS = ROOT / "benchmarks" / "results"
# the per-step metrics the harness asks of `aeris train` (nothing else is logged or validated)
RUN_KEYS = ["train.log_every=1", "train.val_every=0", "train.ens_val_every=0", "train.ckpt_every=0",
            "train.keep_checkpoints=1", "train.progress=false"]


# ---- meshes ---------------------------------------------------------------------------------
def preset(kind: str, axis: str, max_ranks: int, micro_batch: int, grad_accum: int) -> list[dict]:
    """The runs of a ``--weak``/``--strong`` preset: [{mesh, micro_batch, grad_accum}]."""
    if axis not in AXES:
        raise ValueError(f"axis {axis!r}: expected one of {', '.join(AXES)}")
    out, k = [], 1
    while k <= max_ranks:
        mesh = dict.fromkeys(DIMS, 1)
        if axis == "wywx":
            mesh["wy"] = 2 ** ((k.bit_length()) // 2)
            mesh["wx"] = k // mesh["wy"]
        else:
            mesh[axis] = k
        B, m = micro_batch, grad_accum
        if kind == "weak" and axis not in ("dp", "pp"):
            B = micro_batch * k                    # tokens per rank kept
        if kind == "strong" and axis == "dp":
            if grad_accum % k:
                break                              # the global batch no longer splits evenly
            m = grad_accum // k
        if kind == "weak" and axis == "pp":
            raise ValueError("--weak pp has no fixed work per rank: use --strong pp")
        out.append({"mesh": tuple(mesh[d] for d in DIMS), "micro_batch": B, "grad_accum": m})
        k *= 2
    return out


def _world(mesh) -> int:
    w = 1
    for v in mesh:
        w *= v
    return w


# ---- launching ------------------------------------------------------------------------------
def launcher_prefix(launcher: str, n: int, extra: str = "") -> list[str]:
    """The command that starts ``n`` ranks of ``python ...`` (one node for torchrun)."""
    args = shlex.split(extra)
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    if launcher == "mpiexec":
        mpiexec = Path(sys.executable).parent / "mpiexec"
        return [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(n), *args, sys.executable]
    if launcher == "srun":
        return ["srun", "-n", str(n), "--distribution=block:block", *args, sys.executable]
    raise ValueError(f"launcher {launcher!r}: expected torchrun, mpiexec or srun")


def run_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def launch_train(run: dict, args, out_dir: Path) -> tuple[list[dict], float, str]:
    """Run `aeris train` for one mesh; (its metrics records, wall seconds, command line)."""
    mesh, n = run["mesh"], _world(run["mesh"])
    cmd = [*launcher_prefix(args.launcher, n, args.launcher_args), "-m", "aeris.cli", "train", "--config", args.config,
           "--no-resume", "--device", args.device, *args.overrides, *RUN_KEYS,
           *(f"swipe.{d}={v}" for d, v in zip(DIMS, mesh)),
           f"train.micro_batch={run['micro_batch']}", f"train.grad_accum={run['grad_accum']}",
           f"train.steps={args.warmup + args.steps}", f"train.out_dir={out_dir}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=run_env(args.threads_per_rank), capture_output=True, text=True,
                       timeout=args.timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"mesh {mesh}: `aeris train` exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    from aeris.train.metrics_log import read_metrics
    return read_metrics(out_dir / "metrics.jsonl"), wall, shlex.join(cmd)


# ---- the link probe (runs under the launcher) -------------------------------------------------
def probe_worker(out: str, peer: int) -> None:
    """Every rank: ping-pong rank 0 <-> ``peer`` (8 B for the latency, 4 MiB for the bandwidth;
    the fastest of the repeats, one way = half a round trip); rank 0 also times a 1024^3 fp32
    matmul on its device (one rank's GEMM rate). Rank 0 writes JSON to ``out``."""
    import torch
    import torch.distributed as dist

    from swipe.launch import init_distributed, shutdown
    info = init_distributed()
    dev = info.device
    rank = dist.get_rank()

    def one_way(nbytes: int, reps: int) -> float:
        x = torch.zeros(max(1, nbytes // 4), dtype=torch.float32, device=dev)
        best = float("inf")
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(x, peer)
                dist.recv(x, peer)
            elif rank == peer:
                dist.recv(x, 0)
                dist.send(x, 0)
            if dev.type != "cpu":
                torch.accelerator.synchronize()
            best = min(best, (time.perf_counter() - t0) / 2)
        return best

    small, big = one_way(8, 50), one_way(4 << 20, 10)
    gemm = None
    if rank == 0:
        a = torch.randn(1024, 1024, device=dev)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            (a @ a).sum().item()
            best = min(best, time.perf_counter() - t0)
        gemm = 2 * 1024 ** 3 / best
        Path(out).write_text(json.dumps({"latency_s": small, "bandwidth_Bps": (4 << 20) / max(big - small, 1e-9),
                                         "one_way_4MiB_s": big, "peer": peer, "world": dist.get_world_size(),
                                         "backend": info.backend, "device": str(dev), "gemm_flops": gemm,
                                         "threads": torch.get_num_threads()}))
    dist.barrier()
    shutdown()


def probe(args, n: int, peer: int, work: Path) -> dict:
    out = work / f"probe_{n}.json"
    cmd = [*launcher_prefix(args.launcher, n, args.launcher_args), str(Path(__file__).resolve()),
           "--probe-worker", str(out), "--probe-peer", str(peer)]
    p = subprocess.run(cmd, cwd=ROOT, env=run_env(args.threads_per_rank), capture_output=True, text=True,
                       timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"link probe failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(out.read_text())


# ---- reading a run ----------------------------------------------------------------------------
def summarise(records: list[dict], warmup: int, stat: str) -> dict:
    """The measured steps of one run (those after ``warmup``), from the trainer's records."""
    steps = [r for r in records if r.get("step", 0) > warmup and "seconds" in r]
    if not steps:
        raise ValueError(f"no measured step after {warmup} warm-up step(s) in the metrics")
    secs = [float(r["seconds"]) for r in steps]
    s = min(secs) if stat == "min" else statistics.median(secs)
    last = steps[-1]
    # the trainer's FLOPs per step (constant within a run): TFLOP/s x seconds
    exact = last["tflops"] * 1e12 * last["seconds"]
    paper = last["paper_tflops"] * 1e12 * last["seconds"]
    samples = last["samples_per_s"] * last["seconds"]
    breakdown, consumed = {}, ["seconds", "samples_per_s", "tflops", "paper_tflops"]
    for part in BREAKDOWN:
        vals = [r[f"{part}_s"] for r in steps if r.get(f"{part}_s") is not None]
        breakdown[part] = statistics.median(vals) if vals else None
        if vals:
            consumed.append(f"{part}_s")
    other = sorted({k for r in steps for k, v in r.items() if is_timing_key(k) and isinstance(v, (int, float))
                    and k[:-2] not in BREAKDOWN})
    for k in other:
        breakdown[k[:-2]] = statistics.median(float(r[k]) for r in steps if isinstance(r.get(k), (int, float)))
    consumed += other
    measured = {k: {"rank0": last[f"bytes_{k}_rank0"], "all": last[f"bytes_{k}_all"]}
                for k in KINDS if f"bytes_{k}_rank0" in last}
    if measured:
        consumed += [f"bytes_{k}_{w}" for k in measured for w in ("rank0", "all")]
    return {"step_seconds": secs, "seconds": s, "seconds_median": statistics.median(secs), "seconds_min": min(secs),
            "samples_per_step": round(samples), "samples_per_s": samples / s,
            "flops_per_step": exact, "paper_flops_per_step": paper,
            "mfu_trainer": statistics.median(r["mfu"] for r in steps) if steps[0].get("mfu") is not None else None,
            "breakdown_s": breakdown, "bytes": measured or None, "keys_consumed": consumed}


def analytic_bytes(net, mesh, micro_batch: int, grad_accum: int, value_bytes: int) -> dict:
    """benchmarks/comm_volume.py's model for every rank: {kind: {rank0, all, max}}."""
    from comm_volume import analytic
    per = [analytic(mesh, r, net, micro_batch, grad_accum, value_bytes) for r in range(_world(mesh))]
    return {k: {"rank0": per[0][k], "all": sum(p[k] for p in per), "max": max(p[k] for p in per)} for k in KINDS}


# ---- the sweep --------------------------------------------------------------------------------
def sweeps_of(args, cfg) -> list[dict]:
    """The sweeps asked for: [{kind, axis, runs: [{mesh, micro_batch, grad_accum}]}]."""
    out = []
    if args.mesh:
        from aeris.distributed.jobscript import parse_mesh
        out.append({"kind": "custom", "axis": None, "runs": [
            {"mesh": parse_mesh(m), "micro_batch": cfg.train.micro_batch, "grad_accum": cfg.train.grad_accum}
            for m in args.mesh]})
    for kind, axes in (("weak", args.weak), ("strong", args.strong)):
        for axis in axes:
            runs = preset(kind, axis, args.max_ranks, cfg.train.micro_batch, cfg.train.grad_accum)
            fit = [r for r in runs if cfg.model.heads % r["mesh"][4] == 0 and r["mesh"][1] <= cfg.model.depth]
            for r in (r for r in runs if r not in fit):
                print(f"{kind} {axis}: mesh {r['mesh']} skipped (heads {cfg.model.heads}, depth {cfg.model.depth})")
            out.append({"kind": kind, "axis": axis, "runs": fit})
    return out


def background_threads(seconds: float = 2.0, every: float = 0.1) -> float:
    """Other processes' runnable threads on this host now: the mean of /proc/loadavg's
    runnable count over ``seconds``, less this sampling process (between runs nothing of ours
    runs; Linux; 0 where /proc/loadavg is missing)."""
    path = Path("/proc/loadavg")
    if not path.exists():
        return 0.0
    vals = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        vals.append(int(path.read_text().split()[3].split("/")[0]) - 1)
        time.sleep(every)
    return max(0.0, statistics.mean(vals))


def wait_for_quiet(load: float, at_most: float) -> None:
    """On a shared machine: wait (at most ``at_most`` s) until the 1-minute load average is
    below ``load`` (0: do not wait); the load at each run's end is recorded either way."""
    t0 = time.monotonic()
    while load > 0 and os.getloadavg()[0] >= load and time.monotonic() - t0 < at_most:
        time.sleep(5)


def compute_device(device: str) -> str:
    """The device type the ranks compute on (`aeris train --device`; auto: as swipe.launch picks)."""
    import torch
    if device not in ("auto", ""):
        return torch.device(device).type
    if torch.cuda.is_available():
        return "cuda"
    return "xpu" if hasattr(torch, "xpu") and torch.xpu.is_available() else "cpu"


def _key(run: dict) -> tuple:
    return tuple(run["mesh"]), run["micro_batch"], run["grad_accum"]


def sweep(args) -> dict:
    """Run every distinct run of the asked sweeps once (smallest first), probe the links, then
    `analyse`."""
    import torch

    from aeris.config import load_config

    cfg = load_config(args.config, args.overrides)
    sweeps = sweeps_of(args, cfg)
    distinct = sorted({_key(r): r for sw in sweeps for r in sw["runs"]}.values(),
                      key=lambda r: (_world(r["mesh"]), _key(r)))
    work = Path(args.work or tempfile.mkdtemp(prefix="aeris_scaling_"))
    host = {"hostname": socket.gethostname(), "cores": len(os.sched_getaffinity(0)),
            "threads_per_rank": args.threads_per_rank, "torch": torch.__version__,
            "launcher": args.launcher, "launcher_args": args.launcher_args,
            "compute": compute_device(args.device), "loadavg_start": list(os.getloadavg())}
    out: dict = {"config": args.config, "overrides": args.overrides, "stat": args.stat, "warmup": args.warmup,
                 "steps": args.steps, "host": host, "runs": [],
                 "sweep_specs": [{"kind": s_["kind"], "axis": s_["axis"], "runs": [_key(r) for r in s_["runs"]]}
                                 for s_ in sweeps]}
    attempts: list[list[dict]] = [[] for _ in distinct]
    for k in range(args.rounds):   # round-robin: each run gets a chance at a quieter moment
        for i, run in enumerate(distinct):
            wait_for_quiet(args.quiet_load, args.quiet_wait)
            before = background_threads()
            records, wall, cmd = launch_train(run, args, work / f"run{i}_{k}")
            after = background_threads()
            s_ = summarise(records, args.warmup, args.stat)
            attempts[i].append({"seconds": s_["seconds"], "background": (before + after) / 2, "wall_s": wall,
                                "command": cmd, "loadavg": list(os.getloadavg()), "records": records})
            print(f"mesh {tuple(run['mesh'])} B {run['micro_batch']} m {run['grad_accum']}: {s_['seconds']:.3f} "
                  f"s/step ({args.stat} of {args.steps}), {s_['samples_per_s']:.2f} samples/s, other runnable "
                  f"threads {before:.1f} before, {after:.1f} after", flush=True)
    for run, tries in zip(distinct, attempts):
        best = min(tries, key=lambda t: t["seconds"])
        out["runs"].append({"mesh": dict(zip(DIMS, run["mesh"])), "world": _world(run["mesh"]),
                            "micro_batch": run["micro_batch"], "grad_accum": run["grad_accum"],
                            **{k: best[k] for k in ("command", "wall_s", "loadavg", "background", "records")},
                            "attempts": [{k: t[k] for k in ("seconds", "background")} for t in tries]})
    host["loadavg_end"] = list(os.getloadavg())
    host["ranks_per_node"] = args.ranks_per_node or max(r["world"] for r in out["runs"])
    if args.probe and max(r["world"] for r in out["runs"]) > 1:
        out["probe"] = probe(args, 2, 1, work)
        if max(r["world"] for r in out["runs"]) > host["ranks_per_node"]:
            rpn = host["ranks_per_node"]
            out["probe_inter"] = probe(args, 2 * rpn, rpn, work)
    return analyse(out)


def analyse(out: dict) -> dict:
    """Everything derived from a sweep's records (in place; `--from` recomputes it from a
    written JSON): the runs' summaries, bytes against the analytic model, the projection
    calibrated on the smallest run, each sweep's efficiencies."""
    import torch

    from aeris.config import load_config
    from aeris.model.network import AerisNet
    from aeris.train.trainer import DataSpec

    cfg = load_config(out["config"], out["overrides"])
    spec = DataSpec.read(cfg.data)
    with torch.device("meta"):
        net = AerisNet.for_data(cfg.model, len(spec.channels), spec.n_forcing, spec.grid)
    value_bytes = 2 if cfg.train.precision == "bf16" else 4
    out["data"] = {"grid": list(spec.grid), "n_prog": len(spec.channels), "n_forcing": spec.n_forcing,
                   "value_bytes": value_bytes}
    for r in out["runs"]:
        r.update(summarise(r["records"], out["warmup"], out["stat"]))
        mesh = tuple(r["mesh"].values())
        r["bytes_analytic"] = (analytic_bytes(net, mesh, r["micro_batch"], r["grad_accum"], value_bytes)
                               if r["world"] > 1 else None)
        r["bytes_match"] = (None if r["bytes"] is None else
                            all(r["bytes"][k]["rank0"] == r["bytes_analytic"][k]["rank0"]
                                and r["bytes"][k]["all"] == r["bytes_analytic"][k]["all"] for k in r["bytes"]))
    project_runs(out)
    index = {(tuple(r["mesh"].values()), r["micro_batch"], r["grad_accum"]): i for i, r in enumerate(out["runs"])}
    out["sweeps"] = []
    for s_ in out["sweep_specs"]:
        ids = sorted((index[(tuple(k[0]), k[1], k[2])] for k in s_["runs"]), key=lambda i: out["runs"][i]["world"])
        out["sweeps"].append(efficiencies(s_["kind"], s_["axis"], ids, out["runs"]))
    out["keys_consumed"] = sorted({k for r in out["runs"] for k in r["keys_consumed"]})
    out["breakdown_absent"] = [p for p in BREAKDOWN if all(r["breakdown_s"][p] is None for r in out["runs"])]
    return out


def efficiencies(kind: str, axis: str | None, ids: list[int], runs: list[dict]) -> dict:
    """One sweep: its runs (indices, smallest first), measured and projected efficiency and
    speedup against the smallest."""
    import layout_planner as lp

    rs = [runs[i] for i in ids]
    eff = lp.scaling_efficiency([r["samples_per_s"] / r["world"] for r in rs])
    proj = lp.scaling_efficiency([r["samples_per_step"] / r["projected_s"] / r["world"] for r in rs])
    return {"kind": kind, "axis": axis, "runs": ids, "ranks": [r["world"] for r in rs], "efficiency": eff,
            "projected_efficiency": proj, "speedup": [r["samples_per_s"] / rs[0]["samples_per_s"] for r in rs]}


def sweep_rows(sw: dict) -> list[dict]:
    """The planner's rows of every run of a sweep file, with the analytic bytes of each run's
    busiest rank (comm_volume's model: it also counts the in-stage shift exchanges)."""
    import layout_planner as lp
    from aeris.config import load_config

    d = sw["data"]
    cfg = load_config(sw["config"], sw["overrides"])
    cfg._name = sw["config"]
    rows = []
    for r in sw["runs"]:
        row = lp.plan(cfg, tuple(r["mesh"].values()), tuple(d["grid"]), r["grad_accum"], r["micro_batch"],
                      d["n_prog"], d["n_forcing"], act_bytes=d["value_bytes"], device="cpu")
        ana = r.get("bytes_analytic")
        row["bytes_per_step"] = {k: (ana[k]["max"] if ana else 0) for k in KINDS}
        rows.append(row)
    return rows


def host_machine(sw: dict):
    """This host as the planner's Machine, rate still to calibrate: the probe's links (none
    without a probe), ``ranks_per_node``, and on a CPU the node's cores shared by its ranks of
    ``threads_per_rank`` threads each (an accelerator: a device per rank)."""
    import layout_planner as lp

    pr, host = sw.get("probe"), sw["host"]
    inter = sw.get("probe_inter", pr)
    return lp.Machine(rate=1.0, bw_intra=pr["bandwidth_Bps"] if pr else float("inf"),
                      bw_inter=inter["bandwidth_Bps"] if pr else float("inf"),
                      latency=pr["latency_s"] if pr else 0.0, ranks_per_node=host["ranks_per_node"],
                      # ranks of one node share its cores (on a cluster each rank has its device)
                      cores=max(1, host["cores"] // host["threads_per_rank"]) if host["compute"] == "cpu" else None,
                      peak=pr["gemm_flops"] if pr else None)


def project_runs(sw: dict) -> None:
    """Calibrate the projection on the smallest run, predict every run (in place)."""
    import layout_planner as lp

    base, rows = host_machine(sw), sweep_rows(sw)
    # each run on the host as it was around that run (other processes' runnable threads)
    at = [replace(base, background=r.get("background", 0.0) if base.cores else 0.0) for r in sw["runs"]]
    rate = lp.calibrated_rate(rows[0], sw["runs"][0]["seconds"], at[0])
    sw["calibration"] = {"rate_flops": rate, "from_mesh": sw["runs"][0]["mesh"],
                         **{k: v for k, v in base.__dict__.items() if k not in ("rate", "background")}}
    for r, row, mc in zip(sw["runs"], rows, at):
        p = lp.project(row, replace(mc, rate=rate))
        r["projected_s"] = p["step_s"]
        r["projection_error"] = p["step_s"] / r["seconds"] - 1
        r["projected_parts_s"] = {"compute": p["compute_s"], "bubble": p["bubble_s"], "shared": p["shared_s"],
                                  "comm": p["comm_exposed_s"]}


# ---- reporting --------------------------------------------------------------------------------
def _fmt(v, spec=".3f") -> str:
    return "absent" if v is None else format(v, spec)


def markdown(sw: dict) -> str:
    """The runs' table, then each sweep's efficiencies."""
    parts = [p for p in BREAKDOWN if p not in sw["breakdown_absent"]]
    head = ["mesh (dp,pp,wy,wx,sp)", "ranks", "B x m", f"s/step ({sw['stat']})", "samples/s", "TFLOP/s/rank exact",
            "paper", "projected s (error)", *[f"{p} s" for p in parts], "bytes = analytic"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sw["runs"]:
        w = r["world"]
        cells = [",".join(map(str, r["mesh"].values())), str(w), f"{r['micro_batch']} x {r['grad_accum']}",
                 f"{r['seconds']:.3f}", f"{r['samples_per_s']:.2f}",
                 f"{r['flops_per_step'] / r['seconds'] / w / 1e12:.4f}",
                 f"{r['paper_flops_per_step'] / r['seconds'] / w / 1e12:.4f}",
                 f"{r['projected_s']:.3f} ({r['projection_error']:+.0%})",
                 *[_fmt(r["breakdown_s"][p]) for p in parts],
                 "-" if r["bytes_match"] is None else ("yes" if r["bytes_match"] else "NO")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| sweep | ranks | efficiency measured | projected | speedup |", "|---|---|---|---|---|"]
    for s_ in sw["sweeps"]:
        name = f"{s_['kind']} {s_['axis']}" if s_["axis"] else s_["kind"]
        lines.append(f"| {name} | {', '.join(map(str, s_['ranks']))} | "
                     f"{', '.join(f'{e:.2f}' for e in s_['efficiency'])} | "
                     f"{', '.join(f'{e:.2f}' for e in s_['projected_efficiency'])} | "
                     f"{', '.join(f'{x:.2f}' for x in s_['speedup'])} |")
    absent = ", ".join(f"{p}_s" for p in sw["breakdown_absent"]) or "none"
    lines += ["", f"Breakdown keys absent from the trainer's metrics: {absent}."]
    return "\n".join(lines) + "\n"


def plots(sw: dict, stem: Path) -> list[Path]:
    """Efficiency against ranks (one line per sweep, measured and projected) and the step
    time by part, stacked per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=90)
    for k, s_ in enumerate(sw["sweeps"]):
        name = f"{s_['kind']} {s_['axis']}" if s_["axis"] else s_["kind"]
        line, = ax.plot(s_["ranks"], s_["efficiency"], "o-", label=f"{name}: measured")
        ax.plot(s_["ranks"], s_["projected_efficiency"], "s--", color=line.get_color(), alpha=0.7,
                label=f"{name}: projected")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks")
    ax.set_ylabel("scaling efficiency")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    eff = stem.with_name(stem.name + "_efficiency.png")
    fig.savefig(eff)
    plt.close(fig)

    runs = sw["runs"]
    labels = [",".join(map(str, r["mesh"].values())) + f"\nB{r['micro_batch']} m{r['grad_accum']}" for r in runs]
    measured = [p for p in BREAKDOWN if p not in sw["breakdown_absent"]]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), dpi=90, sharey=True)
    for ax, title, series in (
            (axes[0], "measured: the trainer's breakdown keys (medians of the steps)",
             [(p, [r["breakdown_s"][p] or 0.0 for r in runs]) for p in measured]
             + [("rest of the step", [max(0.0, r["seconds"] - sum(r["breakdown_s"][p] or 0.0 for p in measured))
                                      for r in runs])]),
            (axes[1], "projected (calibrated on the first)",
             [(k, [r["projected_parts_s"][k] for r in runs]) for k in ("compute", "bubble", "shared", "comm")])):
        bottom = [0.0] * len(runs)
        for name, vals in series:
            ax.bar(labels, vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.plot(labels, [r["seconds"] for r in runs], "k_", markersize=18, label="measured step")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("seconds per step")
    fig.tight_layout()
    brk = stem.with_name(stem.name + "_breakdown.png")
    fig.savefig(brk)
    plt.close(fig)
    return [eff, brk]


def write(sw: dict, out_dir: Path, name: str, with_plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / name
    js = stem.with_suffix(".json")
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sw, indent=1))
    os.replace(tmp, js)
    md = stem.with_suffix(".md")
    md.write_text(markdown(sw))
    return [js, md] + (plots(sw, stem) if with_plots else [])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny")
    p.add_argument("--mesh", action="append", default=[], help="dp,pp,wy,wx,sp (repeatable): one custom sweep")
    p.add_argument("--weak", action="append", default=[], choices=AXES,
                   help="a sweep growing this axis, the work per rank fixed (repeatable)")
    p.add_argument("--strong", action="append", default=[], choices=AXES,
                   help="a sweep growing this axis, one global batch (repeatable)")
    p.add_argument("--max-ranks", type=int, default=4)
    p.add_argument("--ranks-per-node", type=int, default=0, help="ranks the launcher places on a node "
                                                                   "(default: every run on one node)")
    p.add_argument("--launcher", default="torchrun", choices=("torchrun", "mpiexec", "srun"))
    p.add_argument("--launcher-args", default="", help="more launcher options, e.g. '--ppn 12 --cpu-bind depth'")
    p.add_argument("--device", default="auto", help="`aeris train --device`")
    p.add_argument("--threads-per-rank", type=int, default=1, help="OMP_NUM_THREADS of every rank")
    p.add_argument("--steps", type=int, default=3, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=1, help="steps before the measured ones")
    p.add_argument("--stat", default="min", choices=("min", "median"), help="of the measured steps")
    p.add_argument("--rounds", type=int, default=1, help="launch every run this many times, round-robin, and "
                                                         "keep its fastest (a shared machine)")
    p.add_argument("--no-probe", dest="probe", action="store_false", help="skip the link probe")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--work", default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--name", default="scaling", help="file stem of the outputs")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    p.add_argument("--quiet-load", type=float, default=0.0,
                   help="before each run wait until the 1-min load average is below this (0: do not wait)")
    p.add_argument("--quiet-wait", type=float, default=600, help="longest wait for --quiet-load, seconds")
    p.add_argument("--from", dest="from_json", help="no runs: recompute the analysis, table and plots of "
                                                   "a written sweep JSON (e.g. after a change of the planner)")
    p.add_argument("--probe-worker", help=argparse.SUPPRESS)
    p.add_argument("--probe-peer", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="`aeris train` overrides of every run")
    a = p.parse_args(argv)
    if not a.probe_worker and not a.from_json and not (a.mesh or a.weak or a.strong):
        p.error("give --mesh (repeatable), --weak AXIS or --strong AXIS")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.probe_worker:
        probe_worker(a.probe_worker, a.probe_peer)
        return 0
    sw = analyse(json.loads(Path(a.from_json).read_text())) if a.from_json else sweep(a)
    for f in write(sw, Path(a.out_dir), a.name, a.plots):
        print(f"wrote {f}")
    print(markdown(sw))
    print(f"metrics keys consumed: {', '.join(sw['keys_consumed'])}")
    bad = [r["mesh"] for r in sw["runs"] if r["bytes_match"] is False]
    if bad:
        print(f"bytes differ from the analytic model for {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

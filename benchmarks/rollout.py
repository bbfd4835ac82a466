"""Ensemble rollout cost per member-step against the cost of its network evaluations.

    python benchmarks/rollout.py [--checkpoint runs/demo] [--init 2020-08-21] [--members 4] [--steps 4]
                                 [--threads 1] [--eval-batch 0] [--json benchmarks/results/rollout.json]

Measures, on a trained checkpoint (default: the demo's):

* the network's forward time per member at member batches 1, 2, 4, ... up to --members
  (the least of --repeats calls after a warm-up), F(b);
* the host work of the rollout alone: the same rollout with a stepper that returns zeros
  (forcings, standardisation, the float64 update, gathers and region writes);
* the rollout as `aeris forecast` runs it (member batch measured, or --eval-batch), and with
  the whole unit in one batch: wall time per member-step between consecutive steps;
* the ratio of that time to (2N - 1) x min_b F(b) for N sampler steps; target <= 1.1
  (docs/evaluation.md, "Member batch of the network evaluations"). The same ratio in this
  process's CPU time is reported beside it: on a shared machine the wall times of two
  measurements taken a minute apart see different loads, the CPU times much less so.

Run as a script it first restarts itself under the allocator policy of the `aeris` CLI
(AERIS_MALLOC; docs/environment.md, "Allocator and threads"). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from aeris.diffusion.sampler import n_function_evaluations
from aeris.forecast.config import ForecastConfig
from aeris.forecast.rollout import eval_batch_candidates, load_forecaster, run_forecast
from aeris.runtime import MARKER, reexec_with_allocator
from swipe.launch import configure_threads

TARGET = 1.1


def _sync(device) -> None:
    if device.type in ("cuda", "xpu"):
        getattr(torch, device.type).synchronize(device)


def forward_per_member(fc, batches, repeats: int) -> tuple[dict[int, float], dict[int, float]]:
    """Wall and CPU (this process) seconds per member of one network forward at each member
    batch: the least of `repeats` rounds over the batches (interleaved, after a warm-up each)."""
    model, ctx = fc.model, fc.ctx
    L = ctx.layout
    inputs = {b: (torch.randn(b, L.n_local_windows, L.tokens_per_piece, model.n_in,
                              generator=torch.Generator().manual_seed(b)).to(fc.device),
                  torch.full((b,), 0.7, device=fc.device)) for b in batches}
    wall = {b: float("inf") for b in batches}
    cpu = dict(wall)
    with torch.no_grad():
        for b in batches:
            model(*inputs[b], ctx)  # warm-up
        for _ in range(repeats):
            for b in batches:
                _sync(fc.device)
                t0, c0 = time.perf_counter(), time.process_time()
                model(*inputs[b], ctx)
                _sync(fc.device)
                wall[b] = min(wall[b], time.perf_counter() - t0)
                cpu[b] = min(cpu[b], time.process_time() - c0)
    return {b: t / b for b, t in wall.items()}, {b: t / b for b, t in cpu.items()}


def rollout_per_member_step(fc, fcfg: ForecastConfig, stepper=None) -> dict:
    """Wall and CPU s per member-step between consecutive steps, the whole run_forecast's wall
    s and the members per evaluation it used."""
    stamps, batch = [], []

    def tick(event):
        stamps.append((time.perf_counter(), time.process_time()))
        batch.append(event["eval_batch"])

    t0 = time.perf_counter()
    run_forecast(fc, fcfg, stepper=stepper, callback=tick)
    whole = time.perf_counter() - t0
    n = (len(stamps) - 1) * fcfg.members
    return {"eval_batch": batch[-1], "member_step_s": (stamps[-1][0] - stamps[0][0]) / n,
            "member_step_cpu_s": (stamps[-1][1] - stamps[0][1]) / n, "run_forecast_s": round(whole, 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/demo")
    ap.add_argument("--init", default="2020-08-21T00")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="rollout steps (>= 2: intervals between steps are timed)")
    ap.add_argument("--sampler-steps", type=int, default=0, help="0 = the checkpoint's diffusion.steps")
    ap.add_argument("--eval-batch", type=int, default=0, help="0 = measured, as aeris forecast does")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = from the launcher)")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "rollout.json"))
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2")

    threads = configure_threads(args.threads)
    fc = load_forecaster(args.checkpoint, sampler_steps=args.sampler_steps)
    nfe = n_function_evaluations(fc.dcfg.steps)
    batches = eval_batch_candidates(args.members)
    fwd, fwd_cpu = forward_per_member(fc, batches, args.repeats)
    best_b = min(fwd, key=fwd.get)
    bound = nfe * fwd[best_b]
    bound_cpu = nfe * min(fwd_cpu.values())

    n_out = len(fc.channels)
    zero = lambda cond, keys: torch.zeros(len(keys), *cond.shape[1:3], n_out, device=cond.device)  # noqa: E731
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        def cfg(name, steps=args.steps, **kw):
            return ForecastConfig(out=os.path.join(tmp, f"{name}.zarr"), inits=[args.init], steps=steps,
                                  members=args.members, progress=False, overwrite=True, **kw)

        host = rollout_per_member_step(fc, cfg("host"), stepper=zero)["member_step_s"]
        for name, eb in (("as aeris forecast", args.eval_batch), ("whole unit", args.members)):
            run_forecast(fc, cfg(f"warm-{name[:5]}", steps=1, eval_batch=eb))  # measures (cached), warms up
            r = rollout_per_member_step(fc, cfg(name.replace(" ", "_"), eval_batch=eb))
            r["ratio_to_evaluations"] = round(r["member_step_s"] / bound, 3)
            r["cpu_ratio_to_evaluations"] = round(r["member_step_cpu_s"] / bound_cpu, 3)
            rows[name] = {k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}

    result = {
        "checkpoint": str(args.checkpoint), "grid": list(fc.ds.grid), "model": {"dim": fc.cfg.model.dim,
                                                                                 "depth": fc.cfg.model.depth},
        "members": args.members, "steps": args.steps, "sampler_steps": fc.dcfg.steps, "nfe": nfe,
        "threads": threads, "allocator": os.environ.get(MARKER) or
        ("GLIBC_TUNABLES=" + os.environ["GLIBC_TUNABLES"] if "GLIBC_TUNABLES" in os.environ else "system"),
        "forward_s_per_member": {str(b): round(t, 6) for b, t in fwd.items()},
        "forward_cpu_s_per_member": {str(b): round(t, 6) for b, t in fwd_cpu.items()},
        "best_forward_batch": best_b, "evaluations_s_per_member_step": round(bound, 6),
        "evaluations_cpu_s_per_member_step": round(bound_cpu, 6),
        "host_s_per_member_step": round(host, 6), "rollout": rows, "target_ratio": TARGET,
        "meets_target": rows["as aeris forecast"]["ratio_to_evaluations"] <= TARGET,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__},
    }
    print(f"forward per member (s), {threads} thread(s), allocator {result['allocator']}:")
    print("| member batch | " + " | ".join(map(str, fwd)) + " |")
    print("|---" * (len(fwd) + 1) + "|")
    print("| s per member | " + " | ".join(f"{t:.4f}" for t in fwd.values()) + " |")
    print("| CPU s per member | " + " | ".join(f"{t:.4f}" for t in fwd_cpu.values()) + " |")
    print(f"\n(2N - 1) x best = {nfe} x {fwd[best_b]:.4f} = {bound:.3f} s per member-step; "
          f"host work alone {host:.4f} s")
    print("| rollout | members per evaluation | s per member-step | ratio (target <= 1.1) | CPU ratio |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['eval_batch']} | {r['member_step_s']:.3f} | {r['ratio_to_evaluations']:.2f} | "
              f"{r['cpu_ratio_to_evaluations']:.2f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    reexec_with_allocator()
    main()

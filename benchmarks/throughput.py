"""Training-step throughput, MFU and where the step time goes.

Part 1 (always): times full training steps (forward + backward + AdamW) of AerisNet on random
token batches in the serial window context, and reports samples/s, TFLOP/s by the exact
matmul count and by the paper's formula (docs/model.md, "FLOP accounting"), and MFU against
the GEMM rate MEASURED IN THE SAME RUN (a square matmul in the same precision: what this
device reaches on the work MFU is made of) and against a nominal peak.

Part 2 (``--split``): real `aeris train` runs of a config on its store, one process and a gloo
mesh (``--mesh``, default the demo's pp 2 x sp 2), and every rank's step time split into data
wait, noise, communication wait, pipeline bubble and compute (docs/training.md, "Step time"),
averaged over the steps after the first, beside each rank's MFU against the measured GEMM rate:

    python benchmarks/throughput.py                              # tiny + small configs on CPU
    python benchmarks/throughput.py --split --split-config demo  # + the demo's split, serial and pp2 x sp2
    python benchmarks/throughput.py --config aeris-1.3b-6h --grid 120 240 --device cuda --precision bf16

Nominal peaks: CPU of these 2-core machines ~175 GFLOP/s fp32 / ~400 bf16 (docs/environment.md,
"Peak FLOP/s"); for CUDA the dense bf16/fp32 tensor-core peak of the card (H100 SXM 989 / 494
TFLOP/s with TF32) unless --peak-tflops is given. Prints tables and writes
benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aeris.config import load_config  # noqa: E402
from aeris.model.flops import exact_flops_per_sample, paper_flops_per_sample  # noqa: E402
from aeris.model.network import AerisNet  # noqa: E402
from swipe.context import SerialContext  # noqa: E402
from swipe.layout import WindowLayout  # noqa: E402

PEAK_TFLOPS = {  # dense, per device
    ("cpu", "fp32"): 0.175, ("cpu", "bf16"): 0.400,
    ("NVIDIA H100", "bf16"): 989.0, ("NVIDIA H100", "fp32"): 494.0,   # fp32 matmuls run as TF32
    ("NVIDIA H200", "bf16"): 989.0, ("NVIDIA H200", "fp32"): 494.0,
    ("NVIDIA A100", "bf16"): 312.0, ("NVIDIA A100", "fp32"): 156.0,
}

CASES = [  # (config, overrides, grid)
    ("tiny", [], (64, 128)),
    ("tiny", ["model.dim=128", "model.heads=4", "model.mlp_hidden=512", "model.depth=4"], (64, 128)),
    ("tiny", ["model.dim=256", "model.heads=4", "model.mlp_hidden=1024", "model.depth=2",
              "model.window=[16,16]"], (64, 128)),
]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def gemm_tflops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 0) -> float:
    """Best-of measured rate of a square n x n x n matmul (2 n^3 FLOPs) in ``dtype``: the rate
    this device reaches on the work MFU is made of, measured in the same run as the model."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    a @ b  # warm-up (library initialisation, clocks)
    synchronize(device)
    reps = repeats or max(3, int(2e10 / (2 * n ** 3)) if device.type == "cpu" else 50)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n ** 3 / best / 1e12


def device_peak(device: torch.device, precision: str, override: float | None) -> tuple[str, float | None]:
    if device.type == "cpu":
        name = platform.processor() or "cpu"
        return name, override or PEAK_TFLOPS[("cpu", precision)]
    name = torch.cuda.get_device_name(device)
    for (key, prec), peak in PEAK_TFLOPS.items():
        if prec == precision and key != "cpu" and name.startswith(key):
            return name, override or peak
    return name, override


def bench(cfg_name: str, overrides: list[str], grid: tuple[int, int], device: torch.device,
          precision: str, batch: int, steps: int, warmup: int, n_channels: int, n_forcing: int,
          peak_override: float | None) -> dict:
    cfg = load_config(cfg_name, overrides)
    H, W = grid
    layout = WindowLayout(H, W, *cfg.model.window)
    ctx = SerialContext(layout)
    n_in = 2 * n_channels + n_forcing
    torch.manual_seed(0)
    model = AerisNet(cfg.model, n_channels, n_in, grid).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    x = torch.randn(batch, layout.n_local_windows, layout.tokens_per_piece, n_in, device=device)
    y = torch.randn(batch, layout.n_local_windows, layout.tokens_per_piece, n_channels, device=device)
    t = torch.rand(batch, device=device)
    amp = torch.bfloat16 if precision == "bf16" else None

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = (model(x, t, ctx).float() - y).square().mean()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    exact = exact_flops_per_sample(model) * batch / dt
    paper = paper_flops_per_sample(cfg.model, H * W, n_in) * batch / dt
    name, peak = device_peak(device, precision, peak_override)
    gemm = gemm_tflops(device, torch.bfloat16 if amp else torch.float32, 2048 if device.type == "cpu" else 8192)
    return {
        "config": cfg_name, "overrides": overrides, "grid": [H, W], "window": list(cfg.model.window),
        "dim": cfg.model.dim, "depth": cfg.model.depth, "params": sum(p.numel() for p in model.parameters()),
        "batch": batch, "precision": precision, "device": name,
        "step_s": dt, "samples_per_s": batch / dt,
        "tflops_exact": exact / 1e12, "tflops_paper": paper / 1e12,
        "peak_tflops": peak, "mfu_exact": (exact / 1e12 / peak) if peak else None,
        "gemm_tflops": gemm, "mfu_vs_gemm": exact / 1e12 / gemm,
    }


SPLIT_KEYS = ("data_wait_s", "noise_s", "comm_wait_s", "bubble_s", "compute_s")


def _train(config: str, overrides: list[str], world: int, out_dir: Path, threads: int) -> list[dict]:
    """Run `aeris train` (under torchrun for world > 1) and return its step records."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    args = ["--config", config, *overrides, f"train.out_dir={out_dir}"]
    if world > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "aeris.cli", "train", *args]
    else:
        cmd = [sys.executable, "-m", "aeris.cli", "train", *args]
    res = subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    recs = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in recs if "rank_times" in r]


def split_run(config: str, overrides: list[str], mesh: tuple[int, ...], steps: int, threads: int,
              gemm: float) -> dict:
    """Mean step-time split per rank over the steps after the first (module doc, part 2)."""
    dp, pp, wy, wx, sp = mesh
    world = dp * pp * wy * wx * sp
    over = [*overrides, f"train.steps={steps}", "train.val_every=0", "train.ens_val_every=0",
            "train.ckpt_every=0", "train.log_every=1", "train.progress=false",
            f"swipe.dp={dp}", f"swipe.pp={pp}", f"swipe.wy={wy}", f"swipe.wx={wx}", f"swipe.sp={sp}"]
    with tempfile.TemporaryDirectory(prefix="aeris-split-") as tmp:
        recs = _train(config, over, world, Path(tmp) / "run", threads)
    if len(recs) < 2:
        raise RuntimeError(f"need >= 2 step records to skip the first, got {len(recs)}")
    recs = recs[1:]
    n = len(recs)
    ranks = []
    for r in range(world):
        rows = [rec["rank_times"][r] for rec in recs]
        mean = {k: sum(x[k] for x in rows) / n for k in ("seconds", *SPLIT_KEYS)}
        mean["data_and_noise_frac"] = (mean["data_wait_s"] + mean["noise_s"]) / mean["seconds"]
        ranks.append(mean)
    tflops_rank = sum(rec["tflops_per_rank"] for rec in recs) / n
    return {"config": config, "overrides": overrides, "mesh": dict(zip(("dp", "pp", "wy", "wx", "sp"), mesh)),
            "world": world, "threads_per_rank": threads, "steps_averaged": n,
            "samples_per_s": sum(rec["samples_per_s"] for rec in recs) / n,
            "tflops_per_rank": tflops_rank, "mfu_vs_gemm": tflops_rank / gemm, "ranks": ranks}


def print_split(runs: list[dict], gemm: float) -> None:
    print(f"\nstep-time split per rank (mean over steps 2..; ms), GEMM rate measured here {gemm * 1e3:.1f} GFLOP/s")
    print(f"{'mesh':<16}{'rank':>5}{'step':>9}{'data':>8}{'noise':>8}{'comm':>8}{'bubble':>8}{'compute':>9}"
          f"{'data+noise':>11}{'MFU':>7}")
    for run in runs:
        m = "x".join(f"{k}{v}" for k, v in run["mesh"].items() if v > 1) or "serial"
        for r, t in enumerate(run["ranks"]):
            print(f"{m:<16}{r:>5}{1e3 * t['seconds']:>9.1f}{1e3 * t['data_wait_s']:>8.1f}{1e3 * t['noise_s']:>8.1f}"
                  f"{1e3 * t['comm_wait_s']:>8.1f}{1e3 * t['bubble_s']:>8.1f}{1e3 * t['compute_s']:>9.1f}"
                  f"{100 * t['data_and_noise_frac']:>10.1f}%{100 * run['mfu_vs_gemm']:>6.1f}%")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="one config instead of the default cases")
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("overrides", nargs="*", help="dotted overrides for --config")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--channels", type=int, default=19, help="prognostic channels (69 for AERIS)")
    p.add_argument("--forcings", type=int, default=4)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--split", action="store_true", help="also run part 2 (module doc)")
    p.add_argument("--split-config", default="demo", help="config of the part-2 runs (its store must exist "
                   "or be preparable: `aeris data synth/stats/prepare --config NAME`)")
    p.add_argument("--split-mesh", default="1,2,1,1,2", help="dp,pp,wy,wx,sp of the part-2 mesh run")
    p.add_argument("--split-steps", type=int, default=6)
    p.add_argument("--split-overrides", nargs="*", default=[], help="dotted overrides of the part-2 runs")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    cases = [(a.config, a.overrides, tuple(a.grid or (64, 128)))] if a.config else CASES
    rows = [bench(c, o, g, device, a.precision, a.batch, a.steps, a.warmup, a.channels, a.forcings,
                  a.peak_tflops) for c, o, g in cases]
    hdr = (f"{'config':<10}{'dim':>6}{'depth':>6}{'grid':>10}{'params':>12}{'samples/s':>11}{'TFLOP/s':>9}"
           f"{'paper':>8}{'GEMM':>8}{'MFU/GEMM':>10}{'MFU/peak':>10}")
    print(f"device: {rows[0]['device']}  precision: {a.precision}  batch: {a.batch}  threads: {torch.get_num_threads()}")
    print(hdr)
    for r in rows:
        mfu = f"{100 * r['mfu_exact']:.1f}%" if r["mfu_exact"] is not None else "n/a"
        print(f"{r['config']:<10}{r['dim']:>6}{r['depth']:>6}{'x'.join(map(str, r['grid'])):>10}"
              f"{r['params']:>12,}{r['samples_per_s']:>11.2f}{r['tflops_exact']:>9.3f}"
              f"{r['tflops_paper']:>8.3f}{r['gemm_tflops']:>8.3f}{100 * r['mfu_vs_gemm']:>9.1f}%{mfu:>10}")
    split = []
    if a.split:
        gemm = rows[0]["gemm_tflops"]
        mesh = tuple(int(v) for v in a.split_mesh.split(","))
        threads = torch.get_num_threads()
        world = 1
        for v in mesh:
            world *= v
        split = [split_run(a.split_config, a.split_overrides, (1, 1, 1, 1, 1), a.split_steps, threads, gemm),
                 split_run(a.split_config, a.split_overrides, mesh, a.split_steps, max(1, threads // world), gemm)]
        print_split(split, gemm)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
                               "split": split}, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step throughput and model FLOP utilisation of the AERIS network on one device.

Times full training steps (forward + backward + AdamW) of AerisNet on random token batches in
the serial window context, and reports samples/s, TFLOP/s by the exact matmul count and by the
paper's formula (docs/model.md, "FLOP accounting"), and MFU against the device's peak:

    python benchmarks/throughput.py                         # tiny + small configs on CPU
    python benchmarks/throughput.py --config aeris-1.3b-6h --grid 120 240 --device cuda --precision bf16

Peaks: CPU of these 2-core machines ~175 GFLOP/s fp32 / ~400 bf16 (docs/environment.md, "Peak FLOP/s"); for CUDA the
dense bf16/fp32 tensor-core peak of the card (H100 SXM 989 / 494 TFLOP/s with TF32) unless
--peak-tflops is given. Prints a table and writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
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
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    exact = exact_flops_per_sample(model) * batch / dt
    paper = paper_flops_per_sample(cfg.model, H * W, n_in) * batch / dt
    name, peak = device_peak(device, precision, peak_override)
    return {
        "config": cfg_name, "overrides": overrides, "grid": [H, W], "window": list(cfg.model.window),
        "dim": cfg.model.dim, "depth": cfg.model.depth, "params": sum(p.numel() for p in model.parameters()),
        "batch": batch, "precision": precision, "device": name,
        "step_s": dt, "samples_per_s": batch / dt,
        "tflops_exact": exact / 1e12, "tflops_paper": paper / 1e12,
        "peak_tflops": peak, "mfu_exact": (exact / 1e12 / peak) if peak else None,
    }


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
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    cases = [(a.config, a.overrides, tuple(a.grid or (64, 128)))] if a.config else CASES
    rows = [bench(c, o, g, device, a.precision, a.batch, a.steps, a.warmup, a.channels, a.forcings,
                  a.peak_tflops) for c, o, g in cases]
    hdr = f"{'config':<10}{'dim':>6}{'depth':>6}{'grid':>10}{'params':>12}{'samples/s':>11}{'TFLOP/s':>9}{'paper':>8}{'MFU':>7}"
    print(f"device: {rows[0]['device']}  precision: {a.precision}  batch: {a.batch}")
    print(hdr)
    for r in rows:
        mfu = f"{100 * r['mfu_exact']:.1f}%" if r["mfu_exact"] is not None else "n/a"
        print(f"{r['config']:<10}{r['dim']:>6}{r['depth']:>6}{'x'.join(map(str, r['grid'])):>10}"
              f"{r['params']:>12,}{r['samples_per_s']:>11.2f}{r['tflops_exact']:>9.3f}"
              f"{r['tflops_paper']:>8.3f}{mfu:>7}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

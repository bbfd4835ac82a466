"""Keyed diffusion noise: time to draw one sample's noise for one rank, and for the whole field.

    python benchmarks/noise.py [--device cpu|cuda] [--threads N] [--repeats 20] [--json OUT]

Cases (docs/training.md, "Keyed noise"): ONE rank of the 1.3B layout (window group wy 4 x wx 4
x sp 12 on the 720 x 1440 grid, window 30 x 30: 5,400 tokens), ONE rank of the 40B layout
(6 x 6 x 12: 2,400 tokens), and the whole 720 x 1440 field (the serial rank), 69 channels,
each one `window_noise` call on the device. Reported: the best and the median wall time over
the repeats after a warm-up call (on a loaded machine the best is the closer estimate), and
for the ranks the former generator (one CPU `torch.Generator` per window drawing the whole
window in float64, keeping 1/sp) once for comparison. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from aeris.config import load_config
from aeris.diffusion.noise import keyed_generator, window_noise
from swipe.layout import WindowLayout

KEYS = (0, 1, 0, 0)  # (seed, step, position, dataset index) of one training sample
CASES = [  # (JSON name, label, config, (wy, wx, sp) of the window group); None = the whole field
    ("rank_1p3b", "1.3B rank", "aeris-1.3b-6h", (4, 4, 12)),
    ("rank_40b", "40B rank", "aeris-40b-bench", (6, 6, 12)),
    ("field", "whole field", "aeris-1.3b-6h", None),
]


def former_window_noise(layout: WindowLayout, rank: int, keys, n_channels: int) -> torch.Tensor:
    """The generator this replaced: per local window a CPU generator keyed (keys, window id) draws
    the whole window's (ws_h ws_w, C) block in float64; the rank keeps its sp piece."""
    wy, wx, s = layout.rank_coords(rank)
    t = layout.tokens_per_piece
    out = torch.empty(layout.n_local_windows, t, n_channels)
    for li in range(layout.n_local_windows_y):
        for lj in range(layout.n_local_windows_x):
            gid = (li * layout.wpy + wy) * layout.n_windows_x + (lj * layout.wpx + wx)
            block = torch.randn(layout.window_tokens, n_channels, generator=keyed_generator("noise", (*keys, gid)),
                                dtype=torch.float64)
            out[li * layout.n_local_windows_x + lj] = block[s * t:(s + 1) * t].float()
    return out


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    """Wall seconds of each of `repeats` calls after one warm-up call (device synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def n_channels(cfg) -> int:
    d = cfg.data
    return len(d.surface) + len(d.atmospheric) * len(d.levels)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="device the noise is drawn on (cpu, cuda, cuda:1, ...)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--grid", type=int, nargs=2, default=[720, 1440], metavar=("H", "W"))
    ap.add_argument("--window", type=int, nargs=2, default=None, help="override the configs' window")
    ap.add_argument("--channels", type=int, default=None, help="override the configs' channel count")
    ap.add_argument("--no-former", action="store_true", help="skip timing the former generator")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "noise.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    H, W = args.grid

    rows = {}
    for name, label, cfg_name, group in CASES:
        cfg = load_config(cfg_name)
        ws = tuple(args.window or cfg.model.window)
        C = args.channels or n_channels(cfg)
        layout = WindowLayout(H, W, *ws, *(group or (1, 1, 1)))
        rank = layout.n_ranks - 1
        t = timed(lambda: window_noise(layout, rank, KEYS, C, device=device), args.repeats, device)
        row = {"label": label, "config": cfg_name, "window_group": list(group) if group else None,
               "window": list(ws), "tokens": layout.tokens_per_rank, "channels": C,
               "ms": 1e3 * min(t), "median_ms": 1e3 * statistics.median(t)}
        if group and not args.no_former:
            row["former_ms"] = 1e3 * min(timed(lambda: former_window_noise(layout, rank, KEYS, C), 1,
                                               torch.device("cpu")))
        rows[name] = row

    result = {f"{k}_ms": round(r["ms"], 3) for k, r in rows.items()}
    result.update({f"{k}_median_ms": round(r["median_ms"], 3) for k, r in rows.items()})
    result.update({f"former_{k}_ms": round(r["former_ms"], 3) for k, r in rows.items() if "former_ms" in r})
    result.update({"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
                   "grid": [H, W], "cases": rows, "torch": torch.__version__, "cpu_count": os.cpu_count(),
                   "machine": platform.machine(),
                   "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None})

    print(f"keyed noise on {device} ({torch.get_num_threads()} CPU threads), best / median of {args.repeats}")
    print(f"{'case':<13}{'group':>10}{'tokens':>11}{'C':>5}{'values':>14}{'best ms':>10}{'median ms':>11}"
          f"{'former ms':>11}")
    for r in rows.values():
        g = "x".join(map(str, r["window_group"])) if r["window_group"] else "serial"
        former = f"{r['former_ms']:.1f}" if "former_ms" in r else "-"
        print(f"{r['label']:<13}{g:>10}{r['tokens']:>11,}{r['channels']:>5}{r['tokens'] * r['channels']:>14,}"
              f"{r['ms']:>10.2f}{r['median_ms']:>11.2f}{former:>11}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

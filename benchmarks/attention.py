"""Micro-benchmark of the block's hot path: window attention with and without the pole windows,
a whole block on a rank with and without the last window row, and what the cached tables save.

    python benchmarks/attention.py [--windows 4 8] [--window 8 16] [--heads 4] [--head-dim 16]
                                   [--batch 1] [--rounds 30] [--device cpu] [--threads 1]

Rows (forward + backward unless named fwd; best of ``rounds`` interleaved repetitions, so a
loaded machine disturbs every row alike):

* ``attention``: ``window_attention`` on (B, n, T, heads, dh) windows without a mask, with the
  `PoleSplit` of the rank holding the last window row (its pole windows as two halves), and
  with the same mask as a general bool tensor (one masked SDPA call over all windows, the
  form the split replaces);
* ``block``: one `AerisBlock` on a rank's tokens in frame 0 (no window wraps) and in frame 1
  with the pole mask (the last window row wraps): the ratio is what the rank holding the last
  window row pays over the others;
* ``rope``: applying RoPE to q and k from the cached tables (per block), and building the
  tables (float64 angles from the coordinates; once per context now, per block before);
* ``position``: building the position encoding (once per context now, per forward before).

Prints a table and writes JSON (default benchmarks/results/attention.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from aeris.model.config import ModelConfig
from aeris.model.layers import apply_rope, position_embedding_2d, rope_tables
from aeris.model.network import AerisBlock
from swipe.context import SerialContext, window_attention
from swipe.layout import WindowLayout


def _timer(fn, device: torch.device):
    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    return run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs=2, default=[4, 8], help="window rows x columns of the rank")
    ap.add_argument("--window", type=int, nargs=2, default=[8, 16], help="window size ws_h ws_w")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads on the CPU")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "attention.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    (nwy, nwx), (ws_h, ws_w) = args.windows, args.window
    B, h, dh = args.batch, args.heads, args.head_dim
    d, T, n = h * dh, ws_h * ws_w, nwy * nwx
    # the serial layout of nwy x nwx windows: in frame 1 its last window row wraps, exactly
    # like the rank holding the last window row of a larger field
    layout = WindowLayout(nwy * ws_h, nwx * ws_w, ws_h, ws_w)
    ctx = SerialContext(layout)
    split, mask = ctx.pole_split(1), ctx.pole_mask(1, dev)
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, n, T, 3, h, dh, generator=g).to(dev).requires_grad_(True)
    w = torch.randn(B, n, T, h, dh, generator=g).to(dev)

    def attn(m):
        def step():
            (window_attention(*qkv.unbind(3), m) * w).sum().backward()
        return step

    cfg = ModelConfig(dim=d, depth=2, heads=h, window=[ws_h, ws_w])
    block = AerisBlock(cfg).to(dev)
    with torch.no_grad():
        block.modulation.out.bias.fill_(0.1)  # open the gates: the whole block is on the autograd path
    x = torch.randn(B, n, T, d, generator=g).to(dev).requires_grad_(True)
    c = torch.randn(B, d, generator=g).to(dev)

    def blk(frame):
        def step():
            block(x, c, ctx, frame, True).sum().backward()
        return step

    coords = ctx.piece_coords()
    cos, sin = block.attn.rope_tables(ctx, dev, torch.float32)
    qk = qkv.detach()[:, :, :, :2]
    ids = ctx.token_ids(0)
    rows = {
        "attention, no mask": attn(None),
        "attention, pole split": attn(split),
        "attention, pole mask tensor": attn(mask),
        "block, frame 0 (no pole windows)": blk(0),
        "block, frame 1 (pole windows)": blk(1),
        "rope apply (fwd)": lambda: apply_rope(qk, cos, sin),
        "rope tables build (fwd)": lambda: rope_tables(coords, dh, cfg.rope_theta, torch.float32, dev),
        "position table build (fwd)": lambda: position_embedding_2d(ids, layout.W, d, torch.float32, dev),
    }
    timers = {k: _timer(f, dev) for k, f in rows.items()}
    for t in timers.values():  # warm-up (kernels, caches)
        t()
        t()
    best = {k: float("inf") for k in rows}
    for _ in range(args.rounds):
        for k, t in timers.items():
            best[k] = min(best[k], t())
    ms = {k: round(v * 1e3, 4) for k, v in best.items()}
    result = {
        "shape": {"batch": B, "windows": [nwy, nwx], "window": [ws_h, ws_w], "heads": h, "head_dim": dh,
                  "pole_windows": n - split.start},
        "best_ms": ms,
        "ratios": {"pole split / no mask": round(best["attention, pole split"] / best["attention, no mask"], 3),
                   "pole mask tensor / no mask": round(best["attention, pole mask tensor"]
                                                       / best["attention, no mask"], 3),
                   "block frame 1 / frame 0": round(best["block, frame 1 (pole windows)"]
                                                    / best["block, frame 0 (no pole windows)"], 3)},
        "rounds": args.rounds, "device": str(dev), "threads": args.threads, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }
    print(f"{'row':40s} {'best ms':>10s}")
    for k, v in ms.items():
        print(f"{k:40s} {v:10.4f}")
    for k, v in result["ratios"].items():
        print(f"{k:40s} {v:10.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

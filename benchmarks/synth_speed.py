"""Synthetic reanalysis generation speed: one year at 65x128, 6-hourly (the brief's target:
well under a minute on 2 cores).

    python benchmarks/synth_speed.py [--days 365] [--n-lat 65] [--n-lon 128] [--levels 300 500 850]

Times `write_synthetic` end to end (best-track loading, static fields, compute, zarr writes)
and the compute alone (`_Generator.block` over the whole period, no I/O); prints them and
writes JSON (default benchmarks/results/synth_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from aeris.data.config import SynthConfig
from aeris.data.synthetic import _BLOCK, _Generator, _storm_truth, synthetic_grid, write_synthetic


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--n-lat", type=int, default=65)
    ap.add_argument("--n-lon", type=int, default=128)
    ap.add_argument("--levels", type=int, nargs="+", default=[300, 500, 850])
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "synth_speed.json"))
    args = ap.parse_args(argv)

    end = pd.Timestamp(args.start) + pd.Timedelta(days=args.days) - pd.Timedelta(hours=6)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(out=os.path.join(tmp, "bench.zarr"), n_lat=args.n_lat, n_lon=args.n_lon,
                          start=args.start, end=end.isoformat(), levels=args.levels)
        t0 = time.perf_counter()
        write_synthetic(cfg, progress=True)
        total = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(cfg.out).rglob("*") if f.is_file())

        times = synthetic_grid(cfg)[0]
        t0 = time.perf_counter()
        truth, _ = _storm_truth(cfg, times)
        gen = _Generator(cfg, truth)
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i0 in range(0, len(times), _BLOCK):
            gen.block(i0, min(i0 + _BLOCK, len(times)))
        compute = time.perf_counter() - t0

    result = {
        "grid": [args.n_lat, args.n_lon], "levels": args.levels, "time_steps": len(times),
        "storm_points": len(truth), "write_synthetic_s": round(total, 2),
        "setup_s": round(setup, 2), "compute_s": round(compute, 2),
        "io_and_rest_s": round(total - setup - compute, 2), "store_mb": round(size / 1e6, 1),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

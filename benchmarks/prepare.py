"""Prepare throughput on Dask workers, and the wall time to plan for ERA5 at 0.25 deg.

    python benchmarks/prepare.py --help
    python benchmarks/prepare.py                                    # the demo's grid, 1 and 2 workers
    python benchmarks/prepare.py --lat 181 --lon 360 --times 64 --window 12x12 \\
        --json benchmarks/results/prepare_1deg.json

Writes a source store in the WB2 layout (zstd chunks of one time per variable, the default
data config's 19 prognostic channels, the insolation forcing and 2 static fields; smooth
random fields), computes its statistics, then builds the prepared store (docs/data.md,
"Preparing ERA5 on a cluster"):

* in this process (``serial``, the reference), then on a LocalCluster of 1 and of 2 worker
  processes (``--workers``), each started before the clock and warmed up by a first build
  (each worker opens the source once); then ``--repeat`` timed builds, the fastest counts
  (other jobs on a shared machine only ever slow a build down);
* for each: the wall time of the blocks, the MB/s of source fields read (decoded bytes) and of
  prepared shards written, and the seconds the tasks spent reading + decoding, standardising
  and writing, summed over the tasks: the largest share (over the worker runs) names what
  bounds the rate;
* the scaling from 1 to 2 workers, and that every build is byte for byte the serial one;
* the projection: ERA5 1979-2018 at 0.25 deg (58,440 six-hourly times x 69 channels x
  721 x 1440 float32, 16.7 TB) on N workers at the measured per-worker rate (linear scaling:
  the aggregate read bandwidth of the file system or object store then bounds it).

Prints a table and writes JSON (``--json``, default benchmarks/results/prepare.json) with
``mb_per_s_1``, ``mb_per_s_2`` (prepared MB written per second), ``source_mb_per_s_1/2``,
``scaling``, ``projected_hours_era5_025`` (on ``--project-workers`` workers) and the details.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "benchmarks")):  # the project, and the loader benchmark's store writer
    if _p not in sys.path:
        sys.path.insert(0, _p)

from aeris.data.cluster import Cluster, available_cores  # noqa: E402
from aeris.data.config import DataConfig  # noqa: E402
from aeris.data.prepared import prepare  # noqa: E402
from aeris.data.stats import compute_and_save_stats  # noqa: E402

# ERA5 1979-01-01 .. 2018-12-31 18 UTC, 6-hourly, 69 channels on the 721 x 1440 grid (float32)
ERA5_TIMES = 58_440
ERA5_CHANNELS = 69
ERA5_SOURCE_BYTES = ERA5_TIMES * ERA5_CHANNELS * 721 * 1440 * 4
ERA5_PREPARED_BYTES = ERA5_TIMES * ERA5_CHANNELS * 720 * 1440 * 4
BASELINE_MB_PER_S = 9.0   # the one-process prepare before Dask (the demo measurement)


def write_source(path: Path, n_lat: int, n_lon: int, n_times: int, levels: list[int], seed: int = 0) -> None:
    """Smooth random fields in the WB2 layout, one zstd chunk per time and variable (the
    loader benchmark's store, with less noise)."""
    from loader import write_store
    write_store(path, n_lat, n_lon, n_times, levels, seed, noise=0.05,
                description="random smooth fields for the prepare benchmark")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aeris-prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "source.zarr"
    levels = [int(v) for v in args.levels]
    load_start = _load()
    t0 = time.perf_counter()
    write_source(src, args.lat, args.lon, args.times, levels)
    end = str(np.datetime64("2020-08-01T00") + np.timedelta64(6 * (args.times - 1), "h"))
    base = dict(path=str(src), levels=levels, train_period=["2020-08-01", end], val_period=["2020-08-01", end],
                test_period=["2020-08-01", end], stats=str(work / "source.stats.nc"),
                block_times=args.block_times)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compute_and_save_stats(DataConfig(**base), scheduler="serial", progress=False)
    stats_s = time.perf_counter() - t0
    window = tuple(int(v) for v in args.window.lower().split("x"))

    runs, stores = {}, {}
    for label, scheduler, workers in [("serial", "serial", 1)] + [(f"{w}w", "local", w) for w in args.workers]:
        out = work / f"prepared-{label}.zarr"
        cfg = DataConfig(**base, prepared=str(out))
        t0 = time.perf_counter()
        with Cluster(scheduler, workers) as cluster:
            cluster.client()
            start_s = time.perf_counter() - t0
            cold = {}
            prepare(cfg, window, overwrite=True, progress=False, cluster=cluster, report=cold)
            reps = []
            for _ in range(max(1, args.repeat)):   # the fastest: other jobs on the machine only slow it
                reps.append({})
                prepare(cfg, window, overwrite=True, progress=False, cluster=cluster, report=reps[-1])
            rep = min(reps, key=lambda r: r["wall_s"])
        wall = rep["wall_s"]
        secs = rep["seconds"]
        busy = sum(secs.values())
        runs[label] = {
            "workers": workers, "scheduler": scheduler, "cluster_start_s": start_s,
            "blocks": rep["blocks"], "block_times": rep["block_times"],
            "cold_wall_s": cold["wall_s"], "wall_s": wall, "wall_s_all": [r["wall_s"] for r in reps],
            "source_mb": rep["source_bytes"] / 1e6, "written_mb": rep["written_bytes"] / 1e6,
            "source_mb_per_s": rep["source_bytes"] / 1e6 / wall, "mb_per_s": rep["written_bytes"] / 1e6 / wall,
            "stage_s": secs, "stage_share": {k: v / busy for k, v in secs.items()} if busy else {},
            "busy_fraction": busy / (wall * workers),
        }
        stores[label] = out
    reference = _files(stores["serial"])
    identical = {label: _files(p) == reference for label, p in stores.items() if label != "serial"}

    one, two = runs.get("1w"), runs.get("2w")
    per_worker = (one or runs["serial"])["source_mb_per_s"]
    # what bounds a worker: the stage with the most task-seconds over the worker runs (all runs
    # when there are none), summed so that one noisy run does not decide it
    pool = [r for k, r in runs.items() if k != "serial"] or list(runs.values())
    totals = {k: sum(r["stage_s"][k] for r in pool) for k in ("read", "standardise", "write")}
    bound = max(totals, key=totals.get)

    def hours(n: int) -> float:
        return ERA5_SOURCE_BYTES / (n * per_worker * 1e6) / 3600

    projection = {str(n): {"hours": hours(n), "aggregate_read_gb_per_s": n * per_worker / 1e3}
                  for n in sorted({1, 32, 128, 512, 2048, args.project_workers})}
    res = {
        "machine": {"cores": available_cores(), "load_avg_start": load_start, "load_avg_end": _load(),
                    "loaded": bool(max(load_start, _load()) > 0.5 * available_cores())},
        "grid": [args.lat, args.lon], "times": args.times, "levels": levels, "window": list(window),
        "source_store_mb": _size(src) / 1e6, "prepared_store_mb": _size(stores["serial"]) / 1e6,
        "write_source_s": write_s, "stats_s": stats_s,
        "runs": runs, "identical_to_serial": identical,
        "mb_per_s_1": (one or runs["serial"])["mb_per_s"],
        "mb_per_s_2": two["mb_per_s"] if two else None,
        "source_mb_per_s_1": (one or runs["serial"])["source_mb_per_s"],
        "source_mb_per_s_2": two["source_mb_per_s"] if two else None,
        "scaling": (two["mb_per_s"] / one["mb_per_s"]) if one and two else None,
        "speedup_per_worker_vs_baseline": (one or runs["serial"])["mb_per_s"] / BASELINE_MB_PER_S,
        "baseline_mb_per_s": BASELINE_MB_PER_S,
        "bound": bound, "stage_share_workers": {k: v / max(sum(totals.values()), 1e-12) for k, v in totals.items()},
        "era5_025": {"times": ERA5_TIMES, "channels": ERA5_CHANNELS, "source_tb": ERA5_SOURCE_BYTES / 1e12,
                     "prepared_tb": ERA5_PREPARED_BYTES / 1e12},
        "projected_workers": args.project_workers,
        "projected_hours_era5_025": hours(args.project_workers),
        "projection": projection,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def table(res: dict) -> str:
    m = res["machine"]
    lines = [f"prepare benchmark: grid {res['grid'][0]}x{res['grid'][1]}, {res['times']} times, window "
             f"{res['window'][0]}x{res['window'][1]}; source {res['source_store_mb']:.0f} MB on disk, prepared "
             f"{res['prepared_store_mb']:.0f} MB; {m['cores']} cores, load {m['load_avg_start']:.1f} -> "
             f"{m['load_avg_end']:.1f} ({'loaded' if m['loaded'] else 'quiet'})",
             f"{'run':>7} {'blocks':>6} {'start s':>8} {'cold s':>7} {'wall s':>7} {'read MB/s':>10} "
             f"{'write MB/s':>11} {'read%':>6} {'std%':>5} {'write%':>7} {'busy':>5} {'same':>5}"]
    for label, r in res["runs"].items():
        sh = r["stage_share"]
        same = "ref" if label == "serial" else ("yes" if res["identical_to_serial"][label] else "NO")
        lines.append(f"{label:>7} {r['blocks']:>6} {r['cluster_start_s']:>8.2f} {r['cold_wall_s']:>7.2f} "
                     f"{r['wall_s']:>7.2f} {r['source_mb_per_s']:>10.1f} {r['mb_per_s']:>11.1f} "
                     f"{100 * sh.get('read', 0):>6.0f} {100 * sh.get('standardise', 0):>5.0f} "
                     f"{100 * sh.get('write', 0):>7.0f} {r['busy_fraction']:>5.2f} {same:>5}")
    if res["scaling"] is not None:
        lines.append(f"scaling 1 -> 2 workers: x{res['scaling']:.2f}")
    share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in res["stage_share_workers"].items())
    lines.append(f"per worker: {res['mb_per_s_1']:.1f} MB/s written = x{res['speedup_per_worker_vs_baseline']:.1f} "
                 f"the one-process {res['baseline_mb_per_s']:.0f} MB/s before; bound by: {res['bound']} "
                 f"(task time: {share})")
    e = res["era5_025"]
    lines.append(f"ERA5 1979-2018 at 0.25 deg ({e['source_tb']:.1f} TB source) at {res['source_mb_per_s_1']:.0f} "
                 f"MB/s per worker:")
    for n, p in res["projection"].items():
        lines.append(f"  {int(n):>5} workers: {p['hours']:9.1f} h  (needs {p['aggregate_read_gb_per_s']:.1f} GB/s "
                     f"of aggregate read)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lat", type=int, default=65, help="source latitude rows, pole-inclusive [65]")
    p.add_argument("--lon", type=int, default=128, help="longitude columns [128]")
    p.add_argument("--times", type=int, default=244, help="six-hourly times [244: the demo's two months]")
    p.add_argument("--levels", nargs="+", default=["300", "500", "850"], help="pressure levels [300 500 850]")
    p.add_argument("--window", default="8x8", help="model window HxW [8x8]")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="LocalCluster sizes [1 2]")
    p.add_argument("--block-times", type=int, default=0, help="times per block [0 = automatic]")
    p.add_argument("--repeat", type=int, default=2, help="timed builds per run, the fastest counts [2]")
    p.add_argument("--project-workers", type=int, default=128, help="workers of the ERA5 projection [128]")
    p.add_argument("--workdir", default=None, help="scratch folder [a temporary one]")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--json", "--out", dest="json", default=str(ROOT / "benchmarks" / "results" / "prepare.json"),
                   help="JSON output [benchmarks/results/prepare.json]")
    args = p.parse_args(argv)
    res = run(args)
    print(table(res))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"wrote {out}")
    return 0 if all(res["identical_to_serial"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Loader benchmark: ForecastDataset samples/s vs the raw read+decode rate, and bytes read per rank.

    python benchmarks/loader.py --help
    python benchmarks/loader.py --lat 65 --lon 128 --times 24 --window 8x8 \
        --layouts serial wy2xwx2 sp4 wy2xsp2

Writes a small synthetic-like store (random smooth fields in the WB2 layout, the default data
config's channels), builds the prepared store, then measures

* raw: whole-field zarr reads of the same arrays a sample needs (state and forcing at t and
  t+dt) -> MB/s and the samples/s such reads alone would allow; and the same shard files read
  as plain bytes (no decoding: the I/O upper bound);
* dataset: ``ForecastDataset[i]`` for the serial (whole-field) index map -> samples/s, MB/s;
* per layout (e.g. ``wy2xwx2`` = 2x2 window ranks, ``sp4`` = 4 sequence pieces): for every rank
  the bytes and requests one sample reads, relative to the serial read, and samples/s.

Prints a table and writes JSON (default benchmarks/results/loader.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aeris.data.config import DataConfig  # noqa: E402
from aeris.data.dataset import ForecastDataset  # noqa: E402
from aeris.data.lexicon import VARIABLES  # noqa: E402
from aeris.data.prepared import PreparedStore, prepare  # noqa: E402
from swipe.layout import WindowLayout  # noqa: E402


def parse_layout(name: str) -> tuple[int, int, int]:
    """'serial' -> (1, 1, 1); 'wy2xwx2' -> (2, 2, 1); 'sp4' -> (1, 1, 4); 'wy2xsp2' -> (2, 1, 2)."""
    if name == "serial":
        return 1, 1, 1
    parts = dict.fromkeys(("wy", "wx", "sp"), 1)
    found = re.findall(r"(wy|wx|sp)(\d+)", name)
    if not found or "".join(a + b for a, b in found).replace("x", "") != name.replace("x", ""):
        raise argparse.ArgumentTypeError(f"layout {name!r}: use e.g. serial, wy2xwx2, sp4, wy2xsp2")
    for axis, n in found:
        parts[axis] = int(n)
    return parts["wy"], parts["wx"], parts["sp"]


def write_store(path: Path, n_lat: int, n_lon: int, n_times: int, levels: list[int], seed: int = 0,
                noise: float = 0.1, description: str = "synthetic-like random store for the loader benchmark") -> None:
    """Random smooth fields (low-order spherical-ish harmonics + noise) in the WB2 layout, one
    chunk per time and variable."""
    import pandas as pd
    import xarray as xr
    rng = np.random.default_rng(seed)
    lat = np.linspace(90, -90, n_lat)
    lon = np.arange(n_lon) * 360.0 / n_lon
    time = pd.date_range("2020-08-01", periods=n_times, freq="6h").values
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    cfg = DataConfig()
    data = {}
    for k, name in enumerate([*cfg.surface, *cfg.atmospheric, *cfg.forcings, *cfg.static]):
        v = VARIABLES[name]
        lo_, hi = v.valid_min or 0.0, v.valid_max or 1.0
        base, amp = 0.5 * (lo_ + hi), 0.1 * (hi - lo_)
        nl = len(levels) if v.kind == "atmospheric" else 1
        nt = 1 if v.kind == "static" else n_times
        t = np.arange(nt)[:, None, None, None]
        f = np.cos(la) * np.sin(lo[None, None] * (1 + k % 3) - 0.2 * t) + noise * rng.standard_normal((nt, nl, *la.shape))
        f = (base + amp * f).astype(np.float32)
        if v.kind == "atmospheric":
            data[name] = (("time", "level", "latitude", "longitude"), f, {"units": v.units})
        elif v.kind == "static":
            data[name] = (("latitude", "longitude"), f[0, 0], {"units": v.units})
        else:
            data[name] = (("time", "latitude", "longitude"), f[:, 0], {"units": v.units})
    ds = xr.Dataset(data, coords={"time": time, "level": levels, "latitude": lat, "longitude": lon},
                    attrs={"description": description})
    ds.chunk({"time": 1}).to_zarr(path, mode="w", consolidated=False)


def _timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aeris-loader-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "bench.zarr"
    levels = [int(v) for v in args.levels]
    t0 = time.perf_counter()
    write_store(src, args.lat, args.lon, args.times, levels)
    end = (np.datetime64("2020-08-01T00") + np.timedelta64(6 * (args.times - 1), "h")).astype(str)
    cfg = DataConfig(path=str(src), levels=levels, train_period=["2020-08-01", end],
                     val_period=["2020-08-01", end], test_period=["2020-08-01", end])
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare(cfg, args.window, overwrite=True, compressor=args.compressor, progress=False)
    prepare_s = time.perf_counter() - t0
    store = PreparedStore(prepared)
    H, W = store.grid
    n = min(args.samples, args.times - 1)

    # raw: whole-field reads of state+forcing at t and t+1 straight from zarr (read + decode)
    state, forcing = store.group["state"], store.group["forcing"]
    store.io.reset()
    raw_s = _timed(lambda i: (state[i:i + 2], forcing[i:i + 2]), n)
    raw_bytes = store.io.bytes / n
    # raw file bytes: the same shards read whole with plain file reads (the I/O upper bound)
    shard_files = [Path(prepared, a, *store.group[a].metadata.encode_chunk_key((i, 0, 0, 0)).split("/"))
                   for i in range(n + 1) for a in ("state", "forcing")]
    file_bytes = sum(f.stat().st_size for f in shard_files[:4])
    file_s = _timed(lambda i: [np.frombuffer(f.read_bytes(), dtype=np.uint8) for f in shard_files[2 * i:2 * i + 4]], n)
    ds = ForecastDataset(cfg, "train")
    ds.io.reset()
    ds_s = _timed(lambda i: ds[i], n)
    ds_bytes = ds.io.bytes / n
    result = {
        "grid": [H, W], "window": list(args.window), "tile": list(store.tile), "times": args.times,
        "channels": len(store.channels), "forcing_inputs": ds.n_forcing, "compressor": args.compressor,
        "write_store_s": write_s, "prepare_s": prepare_s, "samples": n,
        "raw": {"s_per_sample": raw_s, "samples_per_s": 1 / raw_s, "bytes_per_sample": raw_bytes,
                "MB_per_s": raw_bytes / raw_s / 1e6},
        "raw_file": {"s_per_sample": file_s, "samples_per_s": 1 / file_s, "bytes_per_sample": file_bytes,
                     "MB_per_s": file_bytes / file_s / 1e6},
        "dataset": {"s_per_sample": ds_s, "samples_per_s": 1 / ds_s, "bytes_per_sample": ds_bytes,
                    "MB_per_s": ds_bytes / ds_s / 1e6},
        "layouts": {},
    }
    for name in args.layouts:
        wy, wx, sp = parse_layout(name)
        layout = WindowLayout(H, W, *args.window, wpy=wy, wpx=wx, sp=sp)
        ranks = []
        for r in range(layout.n_ranks):
            rds = ForecastDataset(cfg, "train", index_map=layout.index_map(0, r))
            rds[0]  # static fields are read once; measure the steady state
            rds.io.reset()
            s = _timed(lambda i: rds[i], n)
            ranks.append({"rank": r, "bytes_per_sample": rds.io.bytes / n, "requests_per_sample": rds.io.requests / n,
                          "samples_per_s": 1 / s})
        b = np.array([x["bytes_per_sample"] for x in ranks])
        result["layouts"][name] = {
            "wy": wy, "wx": wx, "sp": sp, "ranks": ranks, "token_fraction": 1 / layout.n_ranks,
            "mean_bytes_per_sample": float(b.mean()), "max_bytes_per_sample": float(b.max()),
            "bytes_fraction_of_serial": float(b.mean() / ds_bytes),
            "mean_samples_per_s": float(np.mean([x["samples_per_s"] for x in ranks])),
        }
    return result


def table(res: dict) -> str:
    lines = [f"grid {res['grid'][0]}x{res['grid'][1]}, window {res['window'][0]}x{res['window'][1]}, "
             f"tile {res['tile'][0]}x{res['tile'][1]}, {res['channels']} channels, compressor {res['compressor']}",
             f"prepare: {res['prepare_s']:.2f} s for {res['times']} times",
             f"{'what':<22}{'samples/s':>11}{'MB/s':>9}{'KB/sample':>11}",
             f"{'raw zarr (whole)':<22}{res['raw']['samples_per_s']:>11.1f}{res['raw']['MB_per_s']:>9.1f}"
             f"{res['raw']['bytes_per_sample'] / 1e3:>11.1f}",
             f"{'raw file bytes':<22}{res['raw_file']['samples_per_s']:>11.1f}{res['raw_file']['MB_per_s']:>9.1f}"
             f"{res['raw_file']['bytes_per_sample'] / 1e3:>11.1f}",
             f"{'dataset (serial)':<22}{res['dataset']['samples_per_s']:>11.1f}{res['dataset']['MB_per_s']:>9.1f}"
             f"{res['dataset']['bytes_per_sample'] / 1e3:>11.1f}",
             "",
             f"{'layout':<12}{'ranks':>6}{'KB/sample/rank':>16}{'of serial':>11}{'tokens':>8}{'samples/s':>11}"]
    for name, L in res["layouts"].items():
        lines.append(f"{name:<12}{len(L['ranks']):>6}{L['mean_bytes_per_sample'] / 1e3:>16.1f}"
                     f"{L['bytes_fraction_of_serial']:>11.3f}{L['token_fraction']:>8.3f}"
                     f"{L['mean_samples_per_s']:>11.1f}")
    return "\n".join(lines)


def _window(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lat", type=int, default=65, help="source latitude rows, pole-inclusive [65]")
    p.add_argument("--lon", type=int, default=128, help="longitudes [128]")
    p.add_argument("--times", type=int, default=16, help="6-hourly time steps in the store [16]")
    p.add_argument("--levels", type=int, nargs="+", default=[300, 500, 850], help="levels [300 500 850]")
    p.add_argument("--window", type=_window, default=(8, 8), help="model window HxW [8x8]")
    p.add_argument("--samples", type=int, default=8, help="samples timed per measurement [8]")
    p.add_argument("--layouts", nargs="+", default=["serial", "wy2xwx2", "sp4", "wy2xsp2"],
                   help="layouts: serial, wyNxwxM, spK, combinations [serial wy2xwx2 sp4 wy2xsp2]")
    p.add_argument("--compressor", choices=["none", "zstd"], default="none")
    p.add_argument("--workdir", default=None, help="where the stores go [a new temporary folder]")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader.json"), help="JSON output")
    args = p.parse_args(argv)
    for name in args.layouts:
        parse_layout(name)
    res = run(args)
    print(table(res))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

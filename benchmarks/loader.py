"""Loader benchmark: ForecastDataset samples/s vs the raw read+decode rate, bytes read per rank
against the bytes its tokens need, and the data wait of a step with and without reading ahead.

    python benchmarks/loader.py --help
    python benchmarks/loader.py --lat 65 --lon 128 --times 24 --window 8x8 \
        --layouts serial wy2xwx2 sp4 wy2xsp2 sp8 sp16

Writes a small synthetic-like store (random smooth fields in the WB2 layout, the default data
config's channels), builds the prepared store, then measures

* raw: whole-field zarr reads of the same arrays a sample needs (state and forcing at t and
  t+dt) -> MB/s and the samples/s such reads alone would allow; and the same shard files read
  as plain bytes (no decoding: the I/O upper bound);
* dataset: ``ForecastDataset[i]`` for the serial (whole-field) index map -> samples/s, MB/s;
* per layout (e.g. ``wy2xwx2`` = 2x2 window ranks, ``sp4`` = 4 sequence pieces): for every rank
  the bytes and requests one sample reads, relative to the serial read, and samples/s; the
  read bytes over the NEEDED bytes (the rank's tokens x the channels of the state at t and
  t+dt and of the forcings at t and t+dt, float32; static fields are read once, not counted)
  and the read amplification (tokens of the chunks read / the rank's tokens); the same with
  the store re-prepared in the layout's piece tile (aeris.data.tiling.piece_tile) when it
  differs from the store's (quadrant) tile; and the bytes a last pipeline stage reads (the
  target only: no forcing or static array);
* prefetch: ``--steps`` training steps of ``--grad-accum`` serial micro-batches with a
  simulated step of ``--compute-ms`` (a sleep: it frees the cores, a real CPU step would share
  them with the reading threads), reading in the step vs ``--prefetch-steps`` ahead on
  ``--threads`` threads: the mean data wait per step (after the first, which always waits);
* planned (no store, the layout maths of aeris.data.tiling): for the reference layouts at
  0.25 deg (``--plan-*``: 720x1440, 30x30 windows, 69 channels + insolation), read/needed per
  rank for quadrant tiles with the whole shard index (the reader before), quadrant tiles with
  only the asked index entries, and the piece tile.

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
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aeris.data.config import DataConfig  # noqa: E402
from aeris.data.dataset import SAMPLE_FIELDS, ForecastDataset  # noqa: E402
from aeris.data.lexicon import VARIABLES  # noqa: E402
from aeris.data.prepared import PreparedStore, index_runs, prepare  # noqa: E402
from aeris.data.tiling import piece_tile, read_amplification, tiles_of  # noqa: E402
from aeris.train.data_order import samples_for_step  # noqa: E402
from aeris.train.prefetch import StepLoader  # noqa: E402
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


def needed_bytes(ds: ForecastDataset) -> int:
    """Bytes of one sample's fields for the dataset's tokens: the state at t and t+dt (target),
    or at t (cond only), and the forcings at t and t+dt; float32."""
    fields, tokens = ds.fields, ds.index_map.size
    state_times = 2 if "target" in fields else 1 if "cond" in fields else 0
    forcing = 2 * len(ds.store.forcing_channels) if "forcing" in fields else 0
    return tokens * 4 * (state_times * len(ds.channels) + forcing)


def measure_ranks(cfg: DataConfig, layout: WindowLayout, n: int, fields=SAMPLE_FIELDS,
                  prepared: str | None = None) -> dict:
    """Per rank of `layout`: bytes and requests per sample (steady state), read/needed, samples/s."""
    ranks = []
    for r in range(layout.n_ranks):
        rds = ForecastDataset(cfg, "train", index_map=layout.index_map(0, r), fields=fields, prepared=prepared)
        rds[0]  # static fields are read once; measure the steady state
        rds.io.reset()
        s = _timed(lambda i: rds[i], n)
        need = needed_bytes(rds)
        ranks.append({"rank": r, "bytes_per_sample": rds.io.bytes / n, "requests_per_sample": rds.io.requests / n,
                      "needed_bytes_per_sample": need, "read_over_needed": rds.io.bytes / n / need,
                      "read_amplification": rds.read_amplification(), "samples_per_s": 1 / s})
    b = np.array([x["bytes_per_sample"] for x in ranks])
    return {"tile": list(rds.store.tile), "ranks": ranks,
            "mean_bytes_per_sample": float(b.mean()), "max_bytes_per_sample": float(b.max()),
            "read_over_needed": float(np.mean([x["read_over_needed"] for x in ranks])),
            "read_amplification": float(np.mean([x["read_amplification"] for x in ranks])),
            "mean_samples_per_s": float(np.mean([x["samples_per_s"] for x in ranks]))}


def measure_prefetch(cfg: DataConfig, args: argparse.Namespace) -> dict:
    """Mean data wait per step reading in the step vs reading ahead, with a simulated step."""
    ds = ForecastDataset(cfg, "train")
    B = args.grad_accum

    def plan(start):
        return list(samples_for_step(0, len(ds), start, B).reshape(B, 1))

    out = {"steps": args.steps, "grad_accum": B, "compute_s": args.compute_ms / 1e3, "threads": args.threads}
    for name, depth in (("in_step", 0), ("ahead", args.prefetch_steps)):
        with StepLoader(ds, plan, stride=B, depth=depth, threads=args.threads, end=args.steps * B) as loader:
            waits = []
            t0 = time.perf_counter()
            for k in range(args.steps):
                loader.get(k, k * B)
                waits.append(loader.wait_s)
                time.sleep(args.compute_ms / 1e3)
            wall = time.perf_counter() - t0
        out[name] = {"depth": depth, "first_wait_s": waits[0], "mean_data_wait_s": float(np.mean(waits[1:])),
                     "max_data_wait_s": float(np.max(waits[1:])), "wall_s": wall}
    return out


def planned_reads(grid, window, name: str, channels: int, forcings: int) -> dict:
    """Bytes per sample of every rank of layout `name` over its needed bytes, from the layout
    maths alone: chunks = needed x read amplification, plus 16 bytes per shard index entry read
    (state and forcing at t and t+dt); before = quadrant tiles and the whole index."""
    wy, wx, sp = parse_layout(name)
    H, W = grid
    lay = WindowLayout(H, W, *window, wpy=wy, wpx=wx, sp=sp)
    quad, piece = (window[0] // 2, window[1] // 2), piece_tile(window, sp)
    out = {"grid": list(grid), "window": list(window), "wy": wy, "wx": wx, "sp": sp, "channels": channels,
           "forcings": forcings, "tokens_per_rank": lay.tokens_per_rank, "quadrant_tile": list(quad),
           "piece_tile": list(piece)}
    rows: dict[str, list[float]] = {"before": [], "quadrant": [], "piece": [], "amp_quadrant": [], "amp_piece": []}
    for r in range(lay.n_ranks):
        ids = lay.index_map(0, r)
        need = ids.size * 4 * (2 * channels + 2 * forcings)
        for label, (th, tw) in (("quadrant", quad), ("piece", piece)):
            amp = read_amplification(ids, grid, (th, tw))
            t = tiles_of(ids, grid, (th, tw))
            entries = sum(b - a for a, b in index_runs(t[:, 0] * (W // tw) + t[:, 1]))
            rows[label].append((need * amp + 4 * 16 * entries) / need)
            rows[f"amp_{label}"].append(amp)
            if label == "quadrant":
                rows["before"].append((need * amp + 4 * ((H // th) * (W // tw) * 16 + 4)) / need)
    for k, v in rows.items():
        out[f"{k}_read_over_needed" if not k.startswith("amp") else f"read_amplification_{k[4:]}"] = float(np.mean(v))
    out["max_piece_read_over_needed"] = float(np.max(rows["piece"]))
    return out


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
    piece_stores: dict[tuple[int, int], str] = {}
    for name in args.layouts:
        wy, wx, sp = parse_layout(name)
        layout = WindowLayout(H, W, *args.window, wpy=wy, wpx=wx, sp=sp)
        m = measure_ranks(cfg, layout, n, prepared=str(prepared))
        entry = result["layouts"][name] = {
            "wy": wy, "wx": wx, "sp": sp, "token_fraction": 1 / layout.n_ranks,
            "bytes_fraction_of_serial": m["mean_bytes_per_sample"] / ds_bytes, **m}
        tile = piece_tile(args.window, sp)
        if tile != store.tile:  # the store re-prepared in this layout's piece tile
            if tile not in piece_stores:
                path = work / f"bench.tile{tile[0]}x{tile[1]}.prepared.zarr"
                prepare(replace(cfg, prepared=str(path)), args.window, tile=tile, overwrite=True,
                        compressor=args.compressor, progress=False)
                piece_stores[tile] = str(path)
            entry["piece_tile"] = measure_ranks(cfg, layout, n, prepared=piece_stores[tile])
        # a last pipeline stage: the target alone (the states), in the store's tile
        last = measure_ranks(cfg, layout, n, fields=("target",), prepared=str(prepared))
        entry["last_stage"] = {k: last[k] for k in ("mean_bytes_per_sample", "read_over_needed", "mean_samples_per_s")}
    if args.steps:
        result["prefetch"] = measure_prefetch(cfg, args)
    result["planned"] = {name: planned_reads(args.plan_grid, args.plan_window, name, args.plan_channels,
                                             args.plan_forcings) for name in args.plan_layouts}
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
             "read/needed: bytes read per sample (chunks + shard index entries) / bytes of the rank's tokens; "
             "amp: tokens of the chunks read / the rank's tokens",
             f"{'layout':<12}{'ranks':>6}{'KB/sample/rank':>16}{'of serial':>11}{'tokens':>8}{'samples/s':>11}"
             f"{'read/needed':>13}{'amp':>6}{'piece tile':>12}{'read/needed':>13}{'last stage KB':>15}"]
    for name, L in res["layouts"].items():
        P = L.get("piece_tile")
        tile = f"{P['tile'][0]}x{P['tile'][1]}" if P else "= store"
        lines.append(f"{name:<12}{len(L['ranks']):>6}{L['mean_bytes_per_sample'] / 1e3:>16.1f}"
                     f"{L['bytes_fraction_of_serial']:>11.3f}{L['token_fraction']:>8.3f}"
                     f"{L['mean_samples_per_s']:>11.1f}{L['read_over_needed']:>13.3f}{L['read_amplification']:>6.2f}"
                     f"{tile:>12}{(P or L)['read_over_needed']:>13.3f}"
                     f"{L['last_stage']['mean_bytes_per_sample'] / 1e3:>15.1f}")
    if "prefetch" in res:
        P = res["prefetch"]
        lines += ["", f"prefetch: {P['steps']} steps x {P['grad_accum']} samples, simulated step "
                      f"{P['compute_s'] * 1e3:.0f} ms, {P['threads']} threads",
                  f"{'reading':<14}{'depth':>6}{'first wait s':>14}{'mean wait s':>13}{'max wait s':>12}{'wall s':>8}"]
        for name in ("in_step", "ahead"):
            R = P[name]
            lines.append(f"{name:<14}{R['depth']:>6}{R['first_wait_s']:>14.4f}{R['mean_data_wait_s']:>13.4f}"
                         f"{R['max_data_wait_s']:>12.4f}{R['wall_s']:>8.2f}")
    if res.get("planned"):
        lines += ["", "planned read/needed per rank (layout maths, no store)",
                  f"{'layout':<16}{'grid':>10}{'window':>8}{'tokens':>8}{'before (quadrant, whole index)':>32}"
                  f"{'quadrant':>10}{'piece tile':>12}{'piece':>8}"]
        for name, L in res["planned"].items():
            lines.append(f"{name:<16}{L['grid'][0]:>5}x{L['grid'][1]:<4}{L['window'][0]:>5}x{L['window'][1]:<2}"
                         f"{L['tokens_per_rank']:>8}{L['before_read_over_needed']:>32.3f}"
                         f"{L['quadrant_read_over_needed']:>10.3f}{L['piece_tile'][0]:>9}x{L['piece_tile'][1]:<2}"
                         f"{L['piece_read_over_needed']:>8.3f}")
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
    p.add_argument("--layouts", nargs="+", default=["serial", "wy2xwx2", "sp4", "wy2xsp2", "sp8", "sp16"],
                   help="layouts: serial, wyNxwxM, spK, combinations [serial wy2xwx2 sp4 wy2xsp2 sp8 sp16]")
    p.add_argument("--steps", type=int, default=12, help="prefetch: steps timed (0 = skip) [12]")
    p.add_argument("--grad-accum", type=int, default=4, help="prefetch: micro-batches of one sample per step [4]")
    p.add_argument("--compute-ms", type=float, default=100.0, help="prefetch: simulated step, ms [100]")
    p.add_argument("--prefetch-steps", type=int, default=2, help="prefetch: steps read ahead [2]")
    p.add_argument("--threads", type=int, default=2, help="prefetch: reading threads [2]")
    p.add_argument("--plan-layouts", nargs="*", default=["wy4xwx4xsp12", "wy6xwx6xsp12"],
                   help="planned: layouts (none = skip) [wy4xwx4xsp12 wy6xwx6xsp12: the 1.3B and 40B references]")
    p.add_argument("--plan-grid", type=int, nargs=2, default=[720, 1440], help="planned: model grid [720 1440]")
    p.add_argument("--plan-window", type=_window, default=(30, 30), help="planned: window [30x30]")
    p.add_argument("--plan-channels", type=int, default=69, help="planned: state channels [69]")
    p.add_argument("--plan-forcings", type=int, default=1, help="planned: time-varying forcings [1]")
    p.add_argument("--compressor", choices=["none", "zstd"], default="none")
    p.add_argument("--workdir", default=None, help="where the stores go [a new temporary folder]")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader.json"), help="JSON output")
    args = p.parse_args(argv)
    for name in [*args.layouts, *args.plan_layouts]:
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

"""`aeris data synth|stats|prepare|info`: build and inspect the data stores."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from aeris.cli.common import add_config_args, load_from_args
from aeris.cli.data_check import add_subcommand as add_check_subcommand

if TYPE_CHECKING:
    from aeris.config import Config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="synthetic store, statistics, prepared training store, info",
                              description="Data stores: write the synthetic reanalysis, compute the "
                                          "normalisation statistics, build the prepared training store, "
                                          "or summarise a store.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser("synth", help="write the synthetic WB2-layout reanalysis (config section synth)",
                       description="Write the embedded synthetic reanalysis to synth.out (WB2 layout).")
    add_config_args(s)
    s.add_argument("--overwrite", action="store_true", help="replace an existing store at synth.out")
    s.set_defaults(func=run_synth)

    s = sub.add_parser("stats", help="per-channel mean/std of fields and dt-differences (training period)",
                       description="Compute the normalisation statistics of data.path (a path or a URL) over "
                                   "data.train_period in blocks of times on a Dask cluster, and save them "
                                   "to data.stats [default: <data.path>.stats.nc].")
    add_config_args(s)
    _add_cluster_args(s)
    s.set_defaults(func=run_stats)

    s = sub.add_parser("prepare", help="build the prepared (window-chunked, standardised) training store",
                       description="Build data.prepared [default: <data.path minus .zarr>.prepared.zarr] "
                                   "from data.path, chunked by window quadrants so each SWiPe rank "
                                   "reads only its windows.")
    add_config_args(s)
    s.add_argument("--window", default=None, metavar="HxW",
                   help="model window, e.g. 8x8 [default: model.window of the config]")
    s.add_argument("--overwrite", action="store_true", help="rebuild even if a store with another config exists")
    s.add_argument("--compressor", choices=["none", "zstd"], default="none", help="chunk codec [none]")
    _add_cluster_args(s)
    s.set_defaults(func=run_prepare)

    s = sub.add_parser("info", help="summarise a store (variables, levels, grid, times, synthetic?)",
                       description="Print a summary of a store: a raw/forecast store in any supported "
                                   "layout, or a prepared store.")
    s.add_argument("path", nargs="?", default=None, help="store path or URL [default: data.path of the config]")
    add_config_args(s)
    s.set_defaults(func=run_info)
    add_check_subcommand(sub)


def _add_cluster_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--scheduler", default=None, metavar="WHERE",
                   help="Dask scheduler: local (a LocalCluster of worker processes), threads, serial (this "
                        "process), an address tcp://host:8786, or a scheduler file written by dask-jobqueue / "
                        "dask-mpi [default: data.scheduler, local]")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="workers of a local/threads cluster [default: data.workers; 0 = the cores]")


def _fail(e: Exception) -> int:
    print(f"aeris data: {e}", file=sys.stderr)
    return 1


def run_synth(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    from aeris.data.synthetic import write_synthetic  # imported here: heavy (IBTrACS)
    try:
        out = write_synthetic(cfg.synth, overwrite=args.overwrite)
    except FileExistsError:
        return _fail(FileExistsError(f"{cfg.synth.out} exists; pass --overwrite to replace it"))
    except (ValueError, OSError) as e:
        return _fail(e)
    print(f"synthetic store: {out}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    from aeris.data.stats import compute_and_save_stats, load_stats
    try:
        path = compute_and_save_stats(cfg.data, scheduler=args.scheduler, workers=args.workers)
    except (ValueError, OSError, TimeoutError) as e:
        return _fail(e)
    st = load_stats(path)
    print(f"statistics: {path}")
    print(f"{'channel':>10} {'kind':>10} {'mean':>13} {'std':>12} {'diff_mean':>12} {'diff_std':>12}")
    for i, ch in enumerate(st["channel"].values):
        row = [float(st[k].values[i]) for k in ("mean", "std", "diff_mean", "diff_std")]
        print(f"{ch:>10} {str(st['kind'].values[i]):>10} " + " ".join(f"{v:12.5g}" for v in row))
    return 0


def parse_window(text: str | None, cfg: Config) -> tuple[int, int]:
    """'8x8' / '8' -> (8, 8); None -> model.window of the config."""
    if text is None:
        return int(cfg.model.window[0]), int(cfg.model.window[1])
    parts = text.lower().replace(",", "x").split("x")
    try:
        w = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--window must look like 8x8, got {text!r}") from None
    if len(w) == 1:
        w = w * 2
    if len(w) != 2:
        raise ValueError(f"--window must look like 8x8, got {text!r}")
    return w[0], w[1]


def run_prepare(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    from aeris.data.prepared import prepare, read_prepared_record
    from aeris.data.tiling import chunk_tile
    try:
        window = parse_window(args.window, cfg)
        # tiles holding one sequence piece of the configured mesh (docs/data.md, "Prepared training store")
        path = prepare(cfg.data, window, tile=chunk_tile(cfg.data, window, cfg.swipe.sp), overwrite=args.overwrite,
                       compressor=args.compressor, scheduler=args.scheduler, workers=args.workers)
        r = read_prepared_record(path)
    except (ValueError, OSError, TimeoutError) as e:
        return _fail(e)
    print(f"prepared store: {path}")
    print(f"  grid {r['grid'][0]}x{r['grid'][1]}, window {r['window'][0]}x{r['window'][1]}, "
          f"chunk tile {r['tile'][0]}x{r['tile'][1]}, {r['n_times']} times")
    print(f"  channels ({len(r['channels'])}): {' '.join(r['channels'])}")
    print(f"  forcings: {' '.join(r['forcing_channels']) or '-'}; static: {' '.join(r['static_channels']) or '-'}")
    for key in ("skipped_times", "missing_times"):
        if r.get(key):
            print(f"  {key.replace('_', ' ')} ({len(r[key])}): {'; '.join(r[key][:5])}{' ...' if len(r[key]) > 5 else ''}")
    return 0


def _is_prepared(path: str) -> bool:
    from pathlib import Path
    meta = Path(path) / "zarr.json"
    return meta.exists() and "aeris-prepared" in meta.read_text()


def run_info(args: argparse.Namespace) -> int:
    path = args.path
    if path is None:
        path = load_from_args(args).data.path
    try:
        if _is_prepared(str(path)):
            from aeris.data.prepared import PreparedStore
            st = PreparedStore(path)
            print(summarize_prepared(st))
            return 0
        from aeris.data.store import open_store
        print(summarize_store(open_store(path), str(path)))
    except ValueError as e:
        return _fail(e)
    return 0


def summarize_store(ds, path: str) -> str:
    """A few lines describing a canonical dataset."""
    import numpy as np
    lines = [f"store: {path}"]
    synthetic = any("synthetic" in str(v).lower() for v in ds.attrs.values())
    lines.append(f"  synthetic: {'yes' if synthetic else 'no'}")
    lat, lon = ds["latitude"].values, ds["longitude"].values
    lines.append(f"  grid: {lat.size} x {lon.size} (latitude {lat[0]:g} .. {lat[-1]:g}, "
                 f"longitude {lon[0]:g} .. {lon[-1]:g})")
    if "level" in ds.coords:
        lines.append(f"  levels [hPa]: {[int(v) for v in np.atleast_1d(ds['level'].values)]}")
    if "time" in ds.coords:
        t = ds["time"].values
        step = f", step {np.diff(t).min().astype('timedelta64[h]')}" if t.size > 1 else ""
        lines.append(f"  times: {t.size} ({np.datetime_as_string(t[0], unit='h')} .. "
                     f"{np.datetime_as_string(t[-1], unit='h')}{step})")
    for d in ("prediction_timedelta", "number"):
        if d in ds.dims:
            lines.append(f"  {d}: {ds.sizes[d]}")
    lines.append("  variables:")
    for name in sorted(ds.data_vars):
        da = ds[name]
        lines.append(f"    {name:<34} {str(da.dims):<50} {da.attrs.get('units', '')}")
    return "\n".join(lines)


def summarize_prepared(st) -> str:
    r = st.record
    return "\n".join([
        f"prepared store: {st.path}",
        f"  source: {r.get('source')} (synthetic: {'yes' if r.get('synthetic') else 'no'})",
        f"  grid: {st.grid[0]} x {st.grid[1]} (source {r['source_grid'][0]} x {r['source_grid'][1]}, "
        f"drop_lat_row={r['drop_lat_row']})",
        f"  window: {st.window[0]}x{st.window[1]}, chunk tile {st.tile[0]}x{st.tile[1]}, "
        f"compressor {r.get('compressor')}",
        f"  times: {len(st.times)} ({r['time_range'][0]} .. {r['time_range'][1]}), dt {r['dt_hours']} h",
        f"  channels ({len(st.channels)}): {' '.join(st.channels)}",
        f"  forcings: {' '.join(st.forcing_channels) or '-'}; static: {' '.join(st.static_channels) or '-'}",
    ])

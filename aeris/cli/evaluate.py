"""`aeris evaluate`: ensemble skill of forecast stores against a truth store, with baselines."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="ensemble skill scores (RMSE, CRPS, SSR, ACC, spectra) of a forecast store, "
                         "beside persistence and a climatology",
        description="Score WB2-layout forecast stores against a truth store on valid time = "
                    "init + lead, beside persistence (the truth at the init time) and a climatology "
                    "of the truth over a stated period (docs/evaluation.md, \"Baselines\"). Writes "
                    "scores.nc, scores.json, scores.md, spectra.nc and plots.")
    p.add_argument("--forecast", required=True, nargs="+",
                   help="forecast store(s) (zarr/netCDF, WB2 forecast layout); several stores with "
                        "the same leads and members are scored as one set of inits")
    p.add_argument("--truth", required=True, help="truth store (canonical data layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--channels", default=None,
                   help="comma-separated channels, e.g. z500,t850 [default: the headline channels "
                        "present in both stores]")
    p.add_argument("--climatology-period", nargs=2, metavar=("START", "END"), default=None,
                   help="truth period of the climatology (ACC and the climatology baseline), e.g. "
                        "2020-06-01 2020-07-31T18:00 [default: the whole truth store, which then includes "
                        "the verified times: an optimistic baseline]")
    p.add_argument("--climatology-kind", choices=("auto", "doy_hour", "hour"), default="auto",
                   help="by day of year and hour, by hour of day, or auto: day of year and hour when "
                        "every bin of the valid times has --climatology-min-years years [auto]")
    p.add_argument("--climatology-window", type=int, default=61,
                   help="day-of-year smoothing window of the climatology, odd, in days [61]")
    p.add_argument("--climatology-min-years", type=int, default=3,
                   help="years per (day-of-year, hour) bin that auto needs for a day-of-year climatology [3]")
    p.add_argument("--stats", default="auto",
                   help="normalisation statistics for the headline (standardised scores, mean over the "
                        "headline channels): a file, 'auto' (<truth>.stats.nc when it exists) or 'none'")
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
                               climatology_kind=args.climatology_kind, window_days=args.climatology_window,
                               min_years=args.climatology_min_years, stats=args.stats,
                               ssr_correction=args.ssr_correction, plots=not args.no_plots)
    except (EvaluationError, ValueError, KeyError) as e:
        print(f"aeris evaluate: {e}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0

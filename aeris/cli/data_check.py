"""`aeris data check STORE`: scan a store for bad data (docs/data.md, "Checking a store").

Thin: parse, call `aeris.data.check.check_store`, print the table, write ``--json``, exit with
the report's code (0 clean, 1 problems found, 2 the store cannot be opened or read). A store
that cannot be checked at all is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from aeris.cli.common import add_config_args, load_from_args

__all__ = ["add_subcommand", "run_check"]


def add_subcommand(data_subparsers) -> None:
    """Register ``check`` under ``aeris data``."""
    s = data_subparsers.add_parser(
        "check", help="scan a store for bad data (NaN, constant, out-of-range, flipped fields; time axis)",
        description="Scan a store block by block and report, naming variable, level and time: NaN and "
                    "constant fields, values outside the variable's plausible bounds, latitude-flipped "
                    "fields, and missing, duplicated or irregular times. Exit code 0 when clean, 1 when "
                    "problems are found, 2 when the store cannot be opened or read.")
    s.add_argument("path", nargs="?", default=None, help="store path or URL [default: data.path of the config]")
    s.add_argument("--variables", default=None, metavar="V1,V2",
                   help="variables to check, names or short names (comma-separated) [default: all]")
    s.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the findings as JSON")
    s.add_argument("--block-times", type=int, default=0, metavar="N",
                   help="times read per block [default: 0 = about 64 MiB of fields]")
    s.add_argument("--max-rows", type=int, default=40, metavar="N", help="rows of the printed table [40]")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(s)
    s.set_defaults(func=run_check)


def _fail(message: str) -> int:
    print(f"aeris data check: {message}", file=sys.stderr)
    return 2


def run_check(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)  # data.fill_nan_with_min: the variables whose NaNs are expected
    from aeris.data.check import check_store
    path = args.path or cfg.data.path
    variables = [v.strip() for v in args.variables.split(",") if v.strip()] if args.variables else None
    try:
        report = check_store(path, variables=variables, progress=not args.no_progress,
                             allow_nan=cfg.data.fill_nan_with_min, block_times=args.block_times)
    except (ValueError, OSError) as e:  # DataError is a ValueError
        return _fail(" ".join(str(e).split()))
    except Exception as e:  # anything else a broken store makes a backend raise: one line too
        return _fail(f"cannot check {path}: {type(e).__name__}: {' '.join(str(e).split())}")
    print(report.table(max_rows=args.max_rows))
    if args.json_out:
        try:
            out = report.write_json(args.json_out)
        except OSError as e:
            return _fail(f"cannot write {args.json_out}: {e}")
        print(f"findings: {out}")
    return report.exit_code

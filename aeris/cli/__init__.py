"""The `aeris` command. Thin: argument parsing, then calls into library functions.

Each area owns one module here with ``add_parser(subparsers)`` that registers its
sub-command(s) and sets ``func`` (a callable taking the parsed namespace):
``aeris data ...`` (data.py), ``aeris train`` (train.py), ``aeris forecast`` (forecast.py),
``aeris evaluate`` (evaluate.py), ``aeris track`` (track.py), ``aeris report`` (report.py),
``aeris demo`` (demo.py),
``aeris config show`` (config.py), ``aeris jobscript`` (jobscript.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = ("data", "train", "forecast", "evaluate", "track", "report", "demo", "config", "jobscript")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aeris",
        description="AERIS weather diffusion model trained with SWiPe parallelism.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"aeris.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"aeris.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command line: start it under the allocator policy
        from aeris.cli.common import apply_allocator_policy
        apply_allocator_policy()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from aeris.config import ConfigError
    from aeris.log import setup_console
    setup_console()
    try:
        rc = args.func(args)
    except ConfigError as e:
        print(f"aeris: config error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

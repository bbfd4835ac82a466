"""`aeris config show`: the resolved configuration, documented."""

from __future__ import annotations

import argparse

from aeris.cli.common import add_config_args, load_from_args
from aeris.config import SECTIONS, describe_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("config", help="show the resolved configuration with the doc of every key",
                              description="Inspect run configurations.")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = sub.add_parser(
        "show", help="print the resolved config as YAML, each key with its doc as a comment",
        description="Print the configuration that a command given the same --config and overrides "
                    "would run with (defaults, then the file and its bases, then the overrides), as "
                    "YAML with each key's doc as a comment above it, section by section. The output "
                    "is itself a config file: --config reads it back unchanged.",
        epilog="example: aeris config show -c tiny --section model model.depth=8")
    add_config_args(s)
    s.add_argument("--section", default=None, metavar="NAME",
                   help=f"print only this section: {', '.join(SECTIONS)}")
    s.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    print(describe_config(load_from_args(args), args.section), end="")
    return 0

"""Shared CLI helpers: the --config / overrides pair every run command takes."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", "-c", default=default,
                   help="YAML config (path, or a name in configs/, e.g. 'tiny')"
                        + (f" [default: {default}]" if default else ""))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. model.dim=64 data.path=/data/era5.zarr")


def load_from_args(args: argparse.Namespace):
    from aeris.config import load_config
    return load_config(args.config, args.overrides)

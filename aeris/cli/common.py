"""Shared CLI helpers: the --config / overrides pair every run command takes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aeris.config import Config


def add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", "-c", default=default,
                   help="YAML config (path, or a name in configs/, e.g. 'tiny')"
                        + (f" [default: {default}]" if default else ""))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. model.dim=64 data.path=/data/era5.zarr")


def load_from_args(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` with the overrides applied."""
    from aeris.config import load_config
    return load_config(args.config, args.overrides)


def apply_allocator_policy() -> None:
    """Restart this `aeris` process once under the memory-allocator policy ``AERIS_MALLOC``
    (`aeris.runtime`; docs/environment.md, "Allocator and threads"); called first thing by
    `aeris.cli.main` when it runs the process's own command line."""
    from aeris.runtime import reexec_with_allocator
    reexec_with_allocator()

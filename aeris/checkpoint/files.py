"""Checkpoints: atomic save, safe load (``weights_only=True``), clear errors, rotation.

A checkpoint is one ``.pt`` file holding plain tensors and containers only:
``{"format": 1, "step", "samples_seen", "model", "ema", "optimizer", "rng", "config", "meta"}``.
It is written to ``<name>.tmp`` and renamed, so a crash never leaves a half-written file
under the final name and never replaces a good checkpoint with a broken one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "check_meta", "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint",
           "rotate_checkpoints", "checkpoint_path"]

FORMAT = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the run."""


def check_meta(path, found: dict | None, expected: dict) -> None:
    """A checkpoint's data record (``meta``: channels, grid) against this run's; CheckpointError
    naming the difference. A checkpoint without a record is not checked."""
    if not found:
        return
    if "channels" in found and list(found["channels"]) != list(expected["channels"]):
        raise CheckpointError(f"checkpoint {path} was trained on channels {found.get('channels')}, "
                              f"this run uses {list(expected['channels'])}")
    if "grid" in found and list(found["grid"]) != list(expected["grid"]):
        raise CheckpointError(f"checkpoint {path} was trained on the grid {list(found['grid'])}, "
                              f"this run uses {list(expected['grid'])}")


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` atomically (tmp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # a failed write (disk full, bad state) must not leave a partial .tmp behind
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear CheckpointError if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated/corrupt files raise many different errors
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: unknown format {state.get('format') if isinstance(state, dict) else type(state)}")
    for key in ("step", "model"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return state


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rotate_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for p in list_checkpoints(out_dir)[:-keep]:
        p.unlink(missing_ok=True)

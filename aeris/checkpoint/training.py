"""Training checkpoints: one format for one process and every SWiPe mesh, on
`torch.distributed.checkpoint` (DCP).

A checkpoint is a directory ``<out_dir>/checkpoints/step_XXXXXXXX/``::

    .metadata, __R_0.distcp ...   DCP: {"model": {name: t}, "ema": {name: t}, "optim": {...}}
    run.json                      {"format", "step", "samples_seen", "config", "meta",
                                   "ema_decay", "mesh"}  (written last)

Tensors are keyed by GLOBAL parameter names (``blocks.3.attn.qkv.weight``; the optimizer state
flattened per name), so DCP's planner reshards on load: each rank writes its own shards (a
sharded stage writes only its element shards) and reads only the pieces its new layout holds,
whatever mesh wrote them, serial runs included (docs/checkpoints.md).

Atomic: everything is written into ``step_XXXXXXXX.tmp/``; rank 0 adds run.json and renames
the directory, so a crash never leaves a half checkpoint under the real name (a ``.tmp`` is
never read; a save of the same step or a fresh start removes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from aeris.atomic import atomic_write
from swipe.comm import root_then_all

__all__ = ["FORMAT", "CheckpointError", "CheckpointCorrupt", "CheckpointMismatch", "PendingSave", "quarantine", "checkpoint_path", "list_checkpoints", "latest_checkpoint",
           "rotate_checkpoints", "remove_all_checkpoints", "read_record", "check_record",
           "save_checkpoint", "load_checkpoint", "load_tensors"]

FORMAT = "aeris-dcp/1"
RECORD = "run.json"
_NAME = re.compile(r"^step_(\d{8})$")
_REQUIRED = ("format", "step", "samples_seen", "config", "meta", "ema_decay")
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the run."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint whose files are missing, truncated or unreadable (a resume falls back to an
    older one)."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint of another model or data (a resume stops: it is the user's call)."""


# the model fields that decide the weights' shapes and the function they compute
MODEL_FIELDS = ("dim", "depth", "heads", "ffn_dim", "window", "adaln_hidden", "rope", "rope_theta", "shift_every",
                "norm_order", "pole_mask", "time_scale", "norm_eps")


# ---- paths ---------------------------------------------------------------------------------------
def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run directory (those with their record), oldest first."""
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name) and (p / RECORD).is_file())


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rotate_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (``keep <= 0`` keeps all); nothing else is touched."""
    if keep <= 0:
        return
    for p in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def remove_all_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Delete every checkpoint of a run directory, unfinished (``.tmp``), replaced (``.old``)
    and quarantined (``.corrupt``) ones included; returns the complete ones that were removed."""
    found = list_checkpoints(out_dir)
    d = Path(out_dir) / "checkpoints"
    if d.is_dir():
        for p in d.iterdir():
            if p.is_dir() and (_NAME.match(p.name) or p.name.endswith((".tmp", ".old", ".corrupt"))):
                shutil.rmtree(p, ignore_errors=True)
    return found


def quarantine(path: str | os.PathLike) -> Path:
    """Move a checkpoint that could not be read aside (``step_X.corrupt``, kept for a look):
    it is no longer listed, so rotation cannot keep it in place of a good one."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(path, dest)
    return dest


# ---- the record ----------------------------------------------------------------------------------
def read_record(path: str | os.PathLike) -> dict:
    """The run record of a checkpoint, checked: CheckpointError when it is missing, not JSON,
    of an unknown format version or lacking fields."""
    path = Path(path)
    rp = path / RECORD
    if not path.is_dir():
        raise CheckpointCorrupt(f"checkpoint not found: {path}")
    if not rp.is_file():
        raise CheckpointCorrupt(f"{path} is not a complete checkpoint: it has no {RECORD}")
    try:
        rec = json.loads(rp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointCorrupt(f"{rp} is corrupt: {e}") from e
    if not isinstance(rec, dict):
        raise CheckpointCorrupt(f"{rp} is corrupt: not a mapping")
    if rec.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {rec.get('format')!r}; this version "
                              f"reads {FORMAT!r}")
    missing = [k for k in _REQUIRED if k not in rec]
    if missing:
        raise CheckpointCorrupt(f"checkpoint {path} is not a training checkpoint: it lacks {missing}")
    return rec


def check_record(path, found: dict, expected: dict, config: dict | None = None,
                 found_config: dict | None = None) -> None:
    """A checkpoint's data record (``meta``: channels, grid, forcing inputs) and model fields
    (`MODEL_FIELDS` of the stored config) against this run's; `CheckpointMismatch` naming
    every difference."""
    diffs = [f"{k}: checkpoint {found[k]!r}, this run {expected[k]!r}"
             for k in ("channels", "grid", "n_forcing") if k in found and k in expected
             and list(_as_list(found[k])) != list(_as_list(expected[k]))]
    if diffs and "channels" in diffs[0]:
        raise CheckpointMismatch(f"checkpoint {path} was trained on channels {found['channels']}, this run uses "
                                 f"{list(expected['channels'])}" + ("; " + "; ".join(diffs[1:]) if diffs[1:] else ""))
    if diffs:
        raise CheckpointMismatch(f"checkpoint {path} does not match this run's data: " + "; ".join(diffs))
    if config is not None and found_config is not None:
        mine, theirs = (_with_ffn(config.get("model", {})), _with_ffn(found_config.get("model", {})))
        model = [f"model.{k}: checkpoint {theirs[k]!r}, this run {mine[k]!r}" for k in MODEL_FIELDS
                 if k in mine and k in theirs and _as_list(mine[k]) != _as_list(theirs[k])]
        if model:
            raise CheckpointMismatch(f"checkpoint {path} does not fit this model: " + "; ".join(model))


def _with_ffn(model: dict) -> dict:
    """The model section with its SwiGLU width resolved (``mlp_hidden`` 0 means 4 d)."""
    if "dim" in model and "mlp_hidden" in model:
        model = {**model, "ffn_dim": model["mlp_hidden"] or 4 * model["dim"]}
    return model


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


# ---- save / load ---------------------------------------------------------------------------------
def _state(model: torch.nn.Module, optimizer, ema) -> dict[str, Any]:
    msd, osd = get_state_dict(model, optimizer, options=_OPTIONS)
    return {"model": msd, "optim": osd, "ema": dict(ema.shadow)}


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class PendingSave:
    """An asynchronous save in flight: the shards are being written in the background; `wait`
    (a collective on a mesh) finishes them, then the record and the rename make it a checkpoint."""

    def __init__(self, future, path: Path, tmp: Path, record: dict, distributed: bool, root: bool):
        self.future, self.path, self.tmp, self.record = future, path, tmp, record
        self.distributed, self.root = distributed, root

    def wait(self) -> Path:
        try:
            self.future.result()
        except BaseException:
            if self.root:
                shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return _finish(self.path, self.tmp, self.record, self.distributed, self.root)


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer, ema, record: dict,
                    distributed: bool, asynchronous: bool = False, process_group=None) -> Path | PendingSave:
    """Write the checkpoint ``path`` (collective over the default group when ``distributed``;
    one process otherwise). ``record``: step, samples_seen, config, meta (+ anything JSON).

    ``asynchronous``: the state is copied to host memory now and written by a background
    thread (DCP ``async_save``; on a mesh over ``process_group``, a group of its own so that
    the writes do not share a group with training); returns a `PendingSave` to `wait` on
    before the next save and at the end of the run."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    root = _rank() == 0 or not distributed

    def make_tmp():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    root_then_all(make_tmp, distributed)
    record = {"format": FORMAT, **record, "ema_decay": float(ema.decay)}
    try:
        with _one_process_quiet():
            if asynchronous:
                future = dcp.async_save(_state(model, optimizer, ema), checkpoint_id=str(tmp),
                                        no_dist=not distributed, process_group=process_group)
                return PendingSave(future, path, tmp, record, distributed, root)
            dcp.save(_state(model, optimizer, ema), checkpoint_id=str(tmp), no_dist=not distributed)
    except BaseException:
        if root:  # nothing half-written stays behind; the previous checkpoints are untouched
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish(path, tmp, record, distributed, root)


def _finish(path: Path, tmp: Path, record: dict, distributed: bool, root: bool) -> Path:
    """After every rank wrote its pieces into ``tmp``: the record, then the atomic rename."""
    if distributed:
        dist.barrier()

    def publish():
        text = json.dumps(record)
        atomic_write(tmp / RECORD, lambda t: t.write_text(text))
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)

    root_then_all(publish, distributed)
    return path


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer, ema,
                    distributed: bool) -> dict:
    """Load model, optimizer and EMA state in place from ``path`` (resharded to this rank's
    layout); returns the record. The caller checks the record first (`read_record`)."""
    path = Path(path)
    rec = read_record(path)
    state = _state(model, optimizer, ema)
    load_tensors(path, state, distributed=distributed)
    try:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=_OPTIONS)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointMismatch(f"checkpoint {path} does not fit this model: {e}") from e
    ema.decay = float(rec["ema_decay"])
    return rec


def load_tensors(path: Path, state: dict, *, distributed: bool) -> None:
    """Fill the tensors of ``state`` in place from checkpoint ``path`` (DCP), with clear errors."""
    try:
        with _one_process_quiet():
            dcp.load(state, checkpoint_id=str(path), no_dist=not distributed)
    except (Exception, CheckpointException) as e:  # DCP wraps per-rank failures in a BaseException
        text = str(e)
        if "Missing key" in text or "Size mismatch" in text or "size mismatch" in text:
            raise CheckpointMismatch(f"checkpoint {path} does not fit this model: {_first_line(text)}") from e
        raise CheckpointCorrupt(f"checkpoint {path} is corrupt or unreadable: {_first_line(text)}") from e


@contextlib.contextmanager
def _one_process_quiet():
    """DCP warns that it assumes one process even when told so (no_dist=True)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if any(w in ln for w in ("Missing key", "mismatch", "Error", "error")):
            return ln[:400]
    return (lines[0] if lines else text)[:400]

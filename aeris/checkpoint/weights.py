"""The weights inference needs from a training checkpoint of either kind.

    path = resolve_checkpoint("runs/demo")      # a run directory -> its newest checkpoint
    w = read_weights(path)                       # {"config", "meta", "step", "model", "ema"}

``model`` and ``ema`` are name-keyed tensors of the whole network (``ema`` None when the
checkpoint holds none); ``config`` is the run configuration as JSON text.
"""

from __future__ import annotations

from pathlib import Path

from aeris.checkpoint.files import CheckpointError, load_checkpoint
from aeris.checkpoint.sharded import latest_any_checkpoint, read_checkpoint

__all__ = ["resolve_checkpoint", "read_weights"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint as given (a serial file, or one SWiPe checkpoint directory), or a run
    directory's newest checkpoint; `CheckpointError` when there is none."""
    p = Path(path)
    if p.is_file() or (p / "meta.pt").is_file():
        return p
    if p.is_dir():
        ck = latest_any_checkpoint(p)
        if ck is None:
            raise CheckpointError(f"no checkpoint in run directory {p} (expected {p}/checkpoints/"
                                  f"step_*.pt or step_*.dist)")
        return ck
    raise CheckpointError(f"checkpoint not found: {p}")


def read_weights(path: str | Path) -> dict:
    """Model/EMA weights, config, meta and step of a serial (.pt) or SWiPe (.dist) checkpoint."""
    path = Path(path)
    if path.is_dir():
        ck = read_checkpoint(path)
        return {"config": ck["config"], "meta": ck["meta"], "step": ck["step"], "model": ck["model"],
                "ema": ck["ema"] or None}
    state = load_checkpoint(path, map_location="cpu")
    ema = state.get("ema")
    return {"config": state.get("config"), "meta": state.get("meta") or {}, "step": state["step"],
            "model": state["model"], "ema": ema["shadow"] if ema else None}

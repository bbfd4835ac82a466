"""The weights inference needs from a training checkpoint.

    path = resolve_checkpoint("runs/demo")      # a run directory -> its newest checkpoint
    w = read_weights(path)                       # {"config", "meta", "step", "model", "ema"}

``model`` and ``ema`` are name-keyed whole tensors of the network (read in one process from
the shards any mesh wrote); ``config`` is the run configuration as JSON text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from aeris.checkpoint.training import (CheckpointError, latest_checkpoint, list_checkpoints, load_tensors,
                                       read_record)
from aeris.config import Config, from_dict
from aeris.model.network import AerisNet

__all__ = ["resolve_checkpoint", "read_weights"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as given, or a run directory's newest checkpoint."""
    p = Path(path)
    if (p / "run.json").is_file():
        return p
    if p.is_dir():
        ck = latest_checkpoint(p)
        if ck is None:
            if (p / "checkpoints").is_dir() and not list_checkpoints(p):
                raise CheckpointError(f"no complete checkpoint in run directory {p} ({p}/checkpoints/ holds "
                                      f"none with a run.json: an interrupted save, or another format)")
            raise CheckpointError(f"no checkpoint in run directory {p} (expected {p}/checkpoints/step_*/)")
        return ck
    raise CheckpointError(f"checkpoint not found: {p}")


def read_weights(path: str | Path) -> dict:
    """Model and EMA weights (whole, on the CPU), config, meta and step of a checkpoint."""
    path = Path(path)
    rec = read_record(path)
    cfg = from_dict(Config, json.loads(rec["config"]))
    meta = rec["meta"]
    with torch.device("meta"):
        net = AerisNet.for_data(cfg.model, len(meta["channels"]), int(meta["n_forcing"]), tuple(meta["grid"]))
    net = net.to_empty(device="cpu")
    state = {"model": dict(net.named_parameters()),
             "ema": {n: torch.empty(p.shape, dtype=torch.float32) for n, p in net.named_parameters()}}
    with torch.no_grad():
        load_tensors(path, state, distributed=False)
    return {"config": rec["config"], "meta": meta, "step": int(rec["step"]),
            "model": {n: t.detach() for n, t in state["model"].items()}, "ema": state["ema"]}

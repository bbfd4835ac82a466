"""Distributed checkpoints keyed by GLOBAL parameter names: save under one SWiPe mesh, resume
under any other mesh or in the serial Trainer.

Layout of a checkpoint directory ``<out>/checkpoints/step_XXXXXXXX.dist/``::

    meta.pt          {"format", "step", "samples_seen", "config", "meta", "mesh", "ema_decay",
                      "param_groups": {name: AdamW hyper-parameters of its group}}
    shard_RRRRR.pt   {"model": {name: tensor}, "ema": {name: tensor},
                      "optim": {name: {"step", "exp_avg", "exp_avg_sq"}}}

Names are AerisNet's (``blocks.3.attn.qkv.weight``); every pipeline stage keeps them (see
aeris.model.network.AerisStage). Each parameter and its EMA are written once, by the
weight-group leader (dp = wy = wx = sp = 0) of the stage holding it; its AdamW state by the
rank of the weight group that owns it in the ZeroRedundancyOptimizer. Reading merges the
shards, so the reader needs no knowledge of the writer's mesh: a rank loads the names its
stage holds, and the states of the parameters its ZeRO partition owns.

Atomic: every rank writes into ``step_XXXXXXXX.dist.tmp``; after a barrier rank 0 writes
meta.pt and renames the directory. A crash leaves at most a ``.tmp`` directory, which is never
read and is removed by the next save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from aeris.checkpoint.files import (CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint,
                                    save_checkpoint)

__all__ = ["FORMAT", "dist_checkpoint_path", "list_dist_checkpoints", "latest_any_checkpoint",
           "save_distributed", "read_checkpoint", "load_into_stage", "serial_state", "export_serial_checkpoint",
           "optimizer_state_by_name", "rotate_dist_checkpoints"]

FORMAT = "swipe-dist-1"
_NAME = re.compile(r"^step_(\d{8})\.dist$")
_HPARAMS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable",
            "differentiable", "fused", "decoupled_weight_decay")


def dist_checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}.dist"


def list_dist_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name) and (p / "meta.pt").exists())


def remove_all_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Delete every checkpoint (serial ``.pt`` and SWiPe ``.dist``) under out_dir; returns them.

    A run starting from step 0 owns its out_dir: an earlier run's checkpoints would outrank the
    new ones in rotation and resume."""
    found = list_checkpoints(out_dir) + list_dist_checkpoints(out_dir)
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def _step_of(p: Path) -> int:
    return int(re.match(r"^step_(\d{8})", p.name).group(1))


def latest_any_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of either kind (serial ``step_X.pt`` or distributed ``step_X.dist``)."""
    found = list_checkpoints(out_dir) + list_dist_checkpoints(out_dir)
    return max(found, key=lambda p: (_step_of(p), p.suffix == ".dist")) if found else None


def rotate_dist_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` distributed checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for p in list_dist_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


# ---- ZeRO optimizer state by name ----------------------------------------------------------------
def _local_optimizer(optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds this rank's states: ZeRO's local partition, or the optimizer."""
    return getattr(optimizer, "optim", optimizer)


def optimizer_state_by_name(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """({name: state} of the parameters whose state THIS rank holds, {name: group hyper-params})
    for every parameter of ``model`` in ``optimizer``'s groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    local = _local_optimizer(optimizer)
    states = {names[id(p)]: {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in s.items()}
              for p, s in local.state.items() if id(p) in names}
    hparams = {}
    for g in optimizer.param_groups:
        h = {k: g[k] for k in _HPARAMS if k in g}
        for p in g["params"]:
            hparams[names[id(p)]] = h
    return states, hparams


# ---- save ----------------------------------------------------------------------------------------
def _fsync_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_distributed(path: str | os.PathLike, *, model: torch.nn.Module, ema, optimizer, mesh,
                     step: int, samples_seen: int, config: str = "", meta: dict | None = None) -> Path:
    """Collective over the default group: every rank of the mesh calls it. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    c = mesh.coords
    leader = c.dp == 0 and c.wy == 0 and c.wx == 0 and c.sp == 0
    states, hparams = optimizer_state_by_name(model, optimizer)
    shard = {"model": {n: p.detach().cpu().clone() for n, p in model.named_parameters()} if leader else {},
             "ema": {n: t.detach().cpu().clone() for n, t in ema.shadow.items()} if leader else {},
             "optim": {n: {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in s.items()}
                       for n, s in states.items()}}
    _fsync_save(shard, tmp / f"shard_{rank:05d}.pt")
    # group hyper-parameters of every stage reach rank 0 (small: a few floats per parameter)
    gathered = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(hparams if leader else {}, gathered, dst=0)
    if rank == 0:
        all_h = {}
        for h in gathered:
            all_h.update(h)
        s = mesh.shape
        _fsync_save({"format": FORMAT, "step": int(step), "samples_seen": int(samples_seen),
                     "config": config, "meta": meta or {}, "ema_decay": float(ema.decay),
                     "mesh": [s.dp, s.pp, s.wy, s.wx, s.sp], "param_groups": all_h}, tmp / "meta.pt")
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    dist.barrier()
    return path


# ---- read ----------------------------------------------------------------------------------------
def _serial_param_order(model: torch.nn.Module) -> list[str]:
    """Parameter order of the serial AdamW (aeris.train.optim): decay group, then no-decay group,
    each in named_parameters order."""
    decay = set(model.decay_parameter_names())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return [n for n in names if n in decay] + [n for n in names if n not in decay]


def read_checkpoint(path: str | os.PathLike, full_model: torch.nn.Module | None = None) -> dict:
    """A checkpoint of either kind as a name-keyed dict::

        {"step", "samples_seen", "config", "meta", "ema_decay", "model": {name: t},
         "ema": {name: t}, "optim": {name: state}, "param_groups": {name: hparams}}

    A serial ``.pt`` needs ``full_model`` (the whole AerisNet) to name its optimizer states.
    """
    path = Path(path)
    if path.is_dir():
        mp = path / "meta.pt"
        if not mp.exists():
            raise CheckpointError(f"distributed checkpoint {path} has no meta.pt (incomplete save?)")
        meta = torch.load(mp, map_location="cpu", weights_only=True)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: unknown distributed checkpoint format {meta.get('format')!r}")
        out = {k: meta[k] for k in ("step", "samples_seen", "config", "meta", "ema_decay", "param_groups")}
        out.update(model={}, ema={}, optim={})
        shards = sorted(path.glob("shard_*.pt"))
        if not shards:
            raise CheckpointError(f"distributed checkpoint {path} has no shards")
        for sp in shards:
            try:
                sh = torch.load(sp, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                raise CheckpointError(f"shard {sp} is corrupt: {e}") from e
            for key in ("model", "ema", "optim"):
                dup = set(out[key]) & set(sh[key])
                if dup:
                    raise CheckpointError(f"{sp}: {key} entries {sorted(dup)[:3]} written twice")
                out[key].update(sh[key])
        missing = set(out["param_groups"]) - set(out["model"])
        if missing:
            raise CheckpointError(f"{path}: parameters {sorted(missing)[:5]} are in no shard")
        return out
    state = load_checkpoint(path)
    if full_model is None:
        raise CheckpointError(f"reading the serial checkpoint {path} needs the full model (parameter order)")
    order = _serial_param_order(full_model)
    opt = state.get("optimizer", {"state": {}, "param_groups": []})
    optim, hparams = {}, {}
    for g in opt["param_groups"]:
        h = {k: g[k] for k in _HPARAMS if k in g}
        for idx in g["params"]:
            hparams[order[idx]] = h
    for idx, s in opt["state"].items():
        optim[order[int(idx)]] = s
    return {"step": int(state["step"]), "samples_seen": int(state.get("samples_seen", 0)),
            "config": state.get("config", ""), "meta": state.get("meta", {}),
            "ema_decay": float(state["ema"]["decay"]), "model": dict(state["model"]),
            "ema": dict(state["ema"]["shadow"]), "optim": optim, "param_groups": hparams}


def load_into_stage(ck: dict, *, model: torch.nn.Module, ema=None, optimizer=None) -> None:
    """Load a name-keyed checkpoint into one rank: its stage's parameters and EMA, and the AdamW
    states of the parameters this rank's optimizer (ZeRO partition or whole) holds."""
    names = dict(model.named_parameters())
    missing = set(names) - set(ck["model"])
    if missing:
        raise CheckpointError(f"checkpoint lacks parameters {sorted(missing)[:5]} of this stage")
    with torch.no_grad():
        for n, p in names.items():
            src = ck["model"][n]
            if src.shape != p.shape:
                raise CheckpointError(f"parameter {n}: checkpoint shape {tuple(src.shape)} != model {tuple(p.shape)}")
            p.copy_(src.to(p.dtype))
    if ema is not None:
        lacking = set(ema.shadow) - set(ck["ema"])
        if lacking:
            raise CheckpointError(f"checkpoint lacks EMA weights {sorted(lacking)[:5]}")
        ema.decay = float(ck["ema_decay"])
        ema.shadow = {n: ck["ema"][n].float().clone() for n in ema.shadow}
    if optimizer is not None:
        local = _local_optimizer(optimizer)
        by_id = {id(p): n for n, p in names.items()}
        for g in local.param_groups:
            for p in g["params"]:
                s = ck["optim"].get(by_id[id(p)])
                if s is not None:
                    local.state[p] = {k: (v.clone().to(p.device) if torch.is_tensor(v) and v.dim() else
                                          (v.clone() if torch.is_tensor(v) else v)) for k, v in s.items()}


def serial_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """A distributed checkpoint as the serial Trainer's state dict (aeris.train.trainer
    ``Trainer.load`` format): model state, EMA, the AdamW state of ``optimizer`` (built with
    aeris.train.optim.build_optimizer on the whole ``model``), step and data position."""
    ck = read_checkpoint(path, model)
    order = _serial_param_order(model)
    missing = set(order) - set(ck["model"])
    if missing:
        raise CheckpointError(f"{path} lacks parameters {sorted(missing)[:5]}")
    template = optimizer.state_dict()
    opt_state = {i: ck["optim"][n] for i, n in enumerate(order) if n in ck["optim"]}
    return {"step": ck["step"], "samples_seen": ck["samples_seen"],
            "model": {n: ck["model"][n] for n in dict(model.named_parameters())},
            "ema": {"decay": ck["ema_decay"], "shadow": dict(ck["ema"])},
            "optimizer": {"state": opt_state, "param_groups": template["param_groups"]},
            "rng": {"torch": torch.get_rng_state()}, "config": ck["config"], "meta": ck["meta"]}


def export_serial_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike,
                             model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Path:
    """Write a distributed checkpoint as the serial Trainer's ``<out_dir>/checkpoints/step_X.pt``
    (atomic), so ``Trainer(cfg, resume=True)`` with ``train.out_dir=out_dir`` continues from it."""
    state = serial_state(path, model, optimizer)
    return save_checkpoint(checkpoint_path(out_dir, state["step"]), state)


def config_of(ck: dict) -> dict:
    """The run config stored in a checkpoint, as a plain dict ({} if none)."""
    return json.loads(ck["config"]) if ck.get("config") else {}

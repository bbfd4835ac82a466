"""The ensemble-forecast trainer: data order, objective, optimizer, EMA, validation, checkpoints.

One code path for one process and for a SWiPe mesh: the model and loss see tokens through a
window context, and the `engine` (serial here, `aeris.train.swipe_engine` under SWiPe) turns
micro-batches into accumulated gradients. Everything random is keyed by (seed, step, sample position, dataset index),
so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aeris.config import dump_config, to_dict
from aeris.data.dataset import ForecastDataset
from aeris.diffusion.objective import diffusion_loss
from aeris.diffusion.weights import latitude_weight_field, token_weights, variable_weights
from aeris.forecast.ensemble import member_keys, sample_residuals
from aeris.model.flops import exact_flops_per_sample, paper_flops_per_sample
from aeris.model.network import AerisNet
from aeris.train.checkpoint import (checkpoint_path, load_checkpoint,
                                    rotate_checkpoints, save_checkpoint, CheckpointError)
from aeris.train.data_order import sample_keys, samples_for_step
from aeris.train.dist_checkpoint import latest_any_checkpoint, remove_all_checkpoints, serial_state
from aeris.train.ema import EMA, ema_decay
from aeris.train.logging import MetricsLogger
from aeris.train.optim import build_optimizer
from aeris.train.schedule import lr_at
from aeris.train.skill import SKILL_TERMS, finish_scores, partial_sums, standardised_fields, validation_picks
from swipe.context import SerialContext
from swipe.layout import WindowLayout

__all__ = ["Trainer", "build_model", "collate", "autocast_dtype", "CPU_PEAK_FLOPS"]

# ENVIRONMENT.md: a large matmul on these 2-core machines runs at ~175 GFLOP/s (fp32), ~400 (bf16)
CPU_PEAK_FLOPS = {"fp32": 175e9, "bf16": 400e9}


def build_model(cfg, ds: ForecastDataset) -> AerisNet:
    n_out = len(ds.channels)
    return AerisNet(cfg.model, n_out=n_out, n_in=2 * n_out + ds.n_forcing, grid=ds.grid)


def collate(samples: list[dict]) -> dict:
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast when asked, or (auto) on a CUDA device that supports it; else fp32 (None)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    seconds: float


class Trainer:
    """Single-process trainer (the serial reference for SWiPe). `run()` trains `train.steps` steps."""

    def __init__(self, cfg, *, resume: bool = True, device: str | torch.device = "cpu"):
        self.cfg = cfg
        tc = cfg.train
        self.device = torch.device(device)
        self.out_dir = Path(tc.out_dir)
        train = ForecastDataset(cfg.data, "train")
        H, W = train.grid
        self.layout = WindowLayout(H, W, *cfg.model.window)
        self.ctx = SerialContext(self.layout)
        # tokens in the MODEL's window order (the prepared store may be tiled for another window)
        ids = self.ctx.token_ids(0)
        self.train_ds = train if np.array_equal(train.index_map, ids) else \
            ForecastDataset(cfg.data, "train", index_map=ids)
        self.val_ds = ForecastDataset(cfg.data, "val", index_map=ids)
        torch.manual_seed(tc.seed)
        self.model = build_model(cfg, self.train_ds).to(self.device)
        ids = self.ctx.token_ids(0)
        lat_field = latitude_weight_field(self.train_ds.latitudes, W, cfg.diffusion.lat_weight_epsilon)
        self.w_token = torch.as_tensor(token_weights(lat_field, ids), dtype=torch.float32, device=self.device)
        self.w_channel = torch.as_tensor(
            variable_weights(self.train_ds.channels, cfg.diffusion.surface_weights,
                             cfg.diffusion.level_weight_total), dtype=torch.float32, device=self.device)
        self.optimizer = build_optimizer(
            self.model, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay,
            decay_names=set(self.model.decay_parameter_names()))
        self.samples_per_step = tc.micro_batch * tc.grad_accum
        self.ema = EMA(self.model, ema_decay(self.samples_per_step, tc.ema_halflife_samples))
        self.amp = autocast_dtype(tc.precision, self.device)
        self.step = 0
        self.samples_seen = 0
        T = H * W
        self.flops_per_sample = exact_flops_per_sample(self.model)
        self.paper_flops_per_sample = paper_flops_per_sample(cfg.model, T, self.model.n_in)
        if resume:
            ck = latest_any_checkpoint(self.out_dir)
            if ck is not None:
                self.load(ck)
        self.logger = MetricsLogger(self.out_dir, resume_step=self.step if self.step else None,
                                    tensorboard=tc.tensorboard, wandb=tc.wandb)

    # ---- one optimizer step -------------------------------------------------------------------
    def _micro_batches(self, step_start_sample: int) -> list[tuple[np.ndarray, dict]]:
        tc = self.cfg.train
        idx = samples_for_step(tc.seed, len(self.train_ds), step_start_sample, self.samples_per_step)
        out = []
        for k in range(tc.grad_accum):
            sel = idx[k * tc.micro_batch:(k + 1) * tc.micro_batch]
            batch = collate([self.train_ds[int(i)] for i in sel])
            out.append((sel, {k2: v.to(self.device) for k2, v in batch.items()}))
        return out

    def _loss(self, batch: dict, keys, normaliser: float) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            return diffusion_loss(self.model, self.ctx, batch, keys, self.cfg.diffusion,
                                  self.w_token, self.w_channel, normaliser)

    def train_step(self) -> StepResult:
        tc = self.cfg.train
        t0 = time.perf_counter()
        lr = lr_at(self.step, lr=tc.lr, warmup=tc.warmup_steps, total=tc.steps, min_ratio=tc.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        normaliser = float(self.layout.H * self.layout.W * self.samples_per_step)
        total = 0.0
        for k, (sel, batch) in enumerate(self._micro_batches(self.samples_seen)):
            pos = self.samples_seen + k * tc.micro_batch + np.arange(len(sel))
            keys = sample_keys(tc.seed, self.step, pos, sel)
            loss = self._loss(batch, keys, normaliser)
            loss.backward()
            total += float(loss.detach())
        params = [p for p in self.model.parameters() if p.grad is not None]
        if tc.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        else:
            gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        if not math.isfinite(total) or not math.isfinite(gnorm):
            raise FloatingPointError(f"non-finite loss {total} or grad norm {gnorm} at step {self.step}")
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        self.samples_seen += self.samples_per_step
        return StepResult(total, gnorm, lr, time.perf_counter() - t0)

    # ---- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validation_loss(self, n_samples: int | None = None) -> float:
        """Mean loss over the first n validation samples with fixed keys (comparable across steps)."""
        n = min(n_samples or self.cfg.train.val_samples, len(self.val_ds))
        if n == 0:
            return float("nan")
        self.model.eval()
        T = self.layout.H * self.layout.W
        total = 0.0
        for i in range(n):
            batch = {k: v.to(self.device) for k, v in collate([self.val_ds[i]]).items()}
            total += float(self._loss(batch, [(self.cfg.train.seed, -1, i)], float(T * n)))
        return total

    @torch.no_grad()
    def one_step_skill(self, n_inits: int, members: int, sampler_steps: int | None = None,
                       use_ema: bool = True, progress: bool = False) -> dict:
        """Ensemble one-step forecast vs persistence on held-out (validation) times.

        Scores are latitude-weighted RMSEs of standardised fields (each channel divided by its
        climatological std, so channels are comparable), averaged over channels, plus the fair
        CRPS and spread/skill ratio of the ensemble (the maths: aeris.train.skill).
        """
        from dataclasses import replace
        dcfg = self.cfg.diffusion if sampler_steps is None else replace(self.cfg.diffusion, steps=sampler_steps)
        picks = validation_picks(len(self.val_ds), n_inits)
        model = self._ema_model() if use_ema else self.model
        model.eval()
        sums = torch.zeros(len(SKILL_TERMS), dtype=torch.float64)
        for i in tqdm(picks, desc="ensemble validation", disable=not progress, leave=False):
            s = self.val_ds[int(i)]
            cond = torch.cat([s["cond"], s["forcing"]], -1).to(self.device)
            keys = member_keys(self.cfg.train.seed, int(s["time"]) // 3_600_000_000_000, range(members), 0)
            r = sample_residuals(model, self.ctx, cond, keys, len(self.val_ds.channels), dcfg)
            fields = standardised_fields(self.val_ds, s["cond"].to(self.device), s["target"].to(self.device), r)
            sums += partial_sums(*fields, self.w_token)
        n_points = self.layout.H * self.layout.W * len(self.val_ds.channels)
        return finish_scores(sums, len(picks), members, n_points)

    def _ema_model(self) -> AerisNet:
        # a deep copy, not build_model: a fresh init would draw from the global RNG, so
        # validating would change the random stream of the training that follows
        m = copy.deepcopy(self.model)
        self.ema.copy_to(m)
        return m

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "config": json.dumps(to_dict(self.cfg)),
            "meta": {"channels": list(self.train_ds.channels), "grid": list(self.train_ds.grid),
                     "n_forcing": int(self.train_ds.n_forcing)},
        }

    def save(self) -> Path:
        path = save_checkpoint(checkpoint_path(self.out_dir, self.step), self.state_dict())
        rotate_checkpoints(self.out_dir, self.cfg.train.keep_checkpoints)
        return path

    def _remove_stale_checkpoints(self) -> None:
        """A run starting from step 0 owns its out_dir: checkpoints of an earlier run there would
        outrank this run's ones in rotation and resume (its metrics.jsonl is already restarted)."""
        stale = remove_all_checkpoints(self.out_dir)
        if stale:
            warnings.warn(f"starting from scratch in {self.out_dir}: removing {len(stale)} checkpoint(s) "
                          f"of an earlier run ({stale[-1].name}, ...)")

    def load(self, path) -> None:
        # a SWiPe run's checkpoint (a directory of shards) resumes here too
        state = (serial_state(path, self.model, self.optimizer) if Path(path).is_dir()
                 else load_checkpoint(path, map_location=self.device))
        missing = [k for k in ("samples_seen", "ema", "optimizer", "rng") if k not in state]
        if missing:
            raise CheckpointError(f"checkpoint {path} is not a training checkpoint: it lacks {missing}")
        meta = state.get("meta", {})
        if meta and list(meta.get("channels", [])) != list(self.train_ds.channels):
            raise CheckpointError(f"checkpoint {path} was trained on channels {meta.get('channels')}, "
                                  f"this run uses {list(self.train_ds.channels)}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {e}") from e
        try:
            self.ema.load_state_dict(state["ema"])
            # the half-life is in samples: a resume with another batch size needs this run's decay
            self.ema.decay = ema_decay(self.samples_per_step, self.cfg.train.ema_halflife_samples)
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: EMA or optimizer state does not fit this model: {e}") from e
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        tc = self.cfg.train
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / "config.yaml.tmp"
        tmp.write_text(dump_config(self.cfg))
        os.replace(tmp, self.out_dir / "config.yaml")
        if self.step == 0:
            self._remove_stale_checkpoints()
        peak = CPU_PEAK_FLOPS["bf16" if self.amp == torch.bfloat16 else "fp32"]
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", disable=not tc.progress,
                   dynamic_ncols=True)
        last: dict = {}
        while self.step < tc.steps:
            res = self.train_step()
            flops = self.flops_per_sample * self.samples_per_step / res.seconds
            rec = {"step": self.step, "loss": res.loss, "grad_norm": res.grad_norm, "lr": res.lr,
                   "samples": self.samples_seen, "samples_per_s": self.samples_per_step / res.seconds,
                   "tflops": flops / 1e12, "mfu": flops / peak if self.device.type == "cpu" else None,
                   "paper_tflops": self.paper_flops_per_sample * self.samples_per_step / res.seconds / 1e12}
            if tc.val_every and (self.step % tc.val_every == 0 or self.step == tc.steps):
                rec["val_loss"] = self.validation_loss()
            if tc.ens_val_every and (self.step % tc.ens_val_every == 0 or self.step == tc.steps):
                skill = self.one_step_skill(tc.ens_val_inits, tc.ens_val_members, tc.ens_val_sampler_steps)
                rec.update({f"ens_{k}": v for k, v in skill.items()})
            if (tc.log_every and self.step % tc.log_every == 0) or "val_loss" in rec or "ens_rmse_ens_mean" in rec \
                    or self.step == tc.steps:
                self.logger.log(rec)
            bar.set_postfix(loss=f"{res.loss:.4f}", **({"val": f"{rec['val_loss']:.4f}"} if "val_loss" in rec else {}))
            bar.update(1)
            if (tc.ckpt_every and self.step % tc.ckpt_every == 0) or self.step == tc.steps:
                self.save()
            last = rec
        bar.close()
        self.logger.close()
        return last

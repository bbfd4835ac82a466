"""The engine the one training loop runs over: its interface, and the serial engine.

An engine is how this rank computes a step: its parameters (the whole network in one process,
one pipeline stage under SWiPe), the optimizer, the reductions, the sampler used for ensemble
validation, and how its state is checkpointed. The `Trainer` (aeris.train.trainer) owns the
rest, once for every engine: data order and noise keys, schedule, EMA, validation, logging,
progress, checkpoint cadence and resume (docs/training.md, "Training loop and engines").

`SerialEngine` is the plain one-process model, the independent reference the SWiPe engine
(aeris.train.swipe_engine) is tested against.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.objective import batch_noise, diffusion_loss
from aeris.diffusion.weights import token_weights
from aeris.forecast.ensemble import sample_residuals
from aeris.model.network import AerisNet
from aeris.train.optim import build_optimizer
from swipe.context import SerialContext
from swipe.layout import WindowLayout

__all__ = ["MicroBatch", "Engine", "Stepper", "SerialEngine", "DATA_FIELDS"]

# the tensors of a sample a micro-batch can carry (aeris.data.dataset.SAMPLE_FIELDS)
DATA_FIELDS = ("cond", "forcing", "target")

# (cond (B, n_lw, tpp, C_cond), member keys) -> standardised residual samples (B, n_lw, tpp, C)
Stepper = Callable[[torch.Tensor, Sequence[Sequence[int]]], torch.Tensor]


@dataclass
class MicroBatch:
    """One micro-batch for this rank: a key tuple per sample (seed, step, position, dataset
    index) and, where the rank reads data, its tokens in frame 0: ``data`` = the fields of the
    engine's ``data_fields`` ("target", "cond", "forcing"), each (B, n_lw, tpp, C) (the
    ForecastDataset layout); None elsewhere."""

    keys: list[tuple[int, ...]]
    data: dict[str, torch.Tensor] | None = None


class Engine(Protocol):
    """How a step is computed on this rank; every method is called on every rank.

    Attributes: ``model`` (this rank's parameters), ``optimizer``, ``device``, ``amp`` (the
    compute dtype, None = fp32), ``layout`` (this rank's window layout), ``token_ids``
    (this rank's tokens in frame 0, the Dataset's index map), ``w_token`` (their latitude
    weights), ``replica``/``replicas`` (data-parallel coordinates: replica d takes its share
    of each step's samples), ``reads_data`` (this rank needs the samples' data), ``data_fields``
    (which of `DATA_FIELDS` it needs: all of them on the first pipeline stage, "target" alone on
    a last stage, none on a middle one; ``reads_data == bool(data_fields)``), ``scores``
    (this rank scores ensemble validation; the scores of all such ranks add up),
    ``is_root`` (logs, prints, writes run files), ``distributed`` (checkpoints are collective
    over the default process group). Checkpoints of ``model``, ``optimizer`` and the EMA have
    one format for every engine (aeris.checkpoint.training).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: torch.dtype | None
    layout: WindowLayout
    token_ids: np.ndarray
    w_token: torch.Tensor
    replica: int
    replicas: int
    reads_data: bool
    data_fields: tuple[str, ...]
    scores: bool
    is_root: bool
    distributed: bool

    def build_optimizer(self, *, lr: float, betas, eps: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW over this rank's parameters with the decay groups of aeris.train.optim."""

    def gradients(self, mbs: Sequence[MicroBatch], normaliser: float, *, grad_clip: float) -> tuple[float, float]:
        """zero_grad, forward+backward of this rank's micro-batches (each loss / normaliser),
        reduction, global-norm clipping. Returns (global loss, global gradient norm before
        clipping), the same on every rank (possibly not finite: the caller decides)."""

    def update(self, lr: float) -> None:
        """The optimizer step on the gradients of `gradients`, at learning rate ``lr``."""

    def train_step(self, mbs: Sequence[MicroBatch], normaliser: float, *, lr: float,
                   grad_clip: float) -> tuple[float, float]:
        """`gradients` then `update`; FloatingPointError (and no update) if not finite."""

    def eval_loss(self, mbs: Sequence[MicroBatch], normaliser: float) -> float:
        """Sum over all ranks and micro-batches of the loss / normaliser, no gradients."""

    def sampler(self, dcfg: DiffusionConfig, weights: dict[str, torch.Tensor] | None = None) -> Stepper:
        """The ensemble stepper of this rank's model, or of a copy of it holding ``weights``
        (by parameter name, e.g. the EMA's); a collective call under SWiPe."""

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over all ranks (returned on the CPU)."""

    def broadcast(self, obj):
        """``obj`` of the root rank, on every rank."""

    def barrier(self) -> None:
        """Wait for every rank."""

    def comm_record(self) -> dict[str, int]:
        """Bytes moved by kind in the last step ({} without communication)."""

    def step_times(self) -> dict[str, float]:
        """This rank's seconds of the last ``gradients`` spent drawing noise (``noise_s``),
        blocked in its own collectives and exchanges (``comm_wait_s``) and blocked on pipeline
        sends and receives (``bubble_s``: the 1F1B bubble plus the transfers)."""

    def gather_rows(self, row: Sequence[float]) -> list[list[float]]:
        """Every rank's ``row`` (same length everywhere), in rank order; a collective call."""

    def describe(self) -> str | None:
        """Lines printed at the start of a run (None: nothing to say)."""


class SerialEngine:
    """The whole network in one process (the reference every SWiPe layout is tested against).

    ``net``: the whole AerisNet; ``w_lat_field`` (H, W) latitude weights; ``w_channel`` (C,)
    variable weights; ``amp``: autocast dtype or None (fp32).
    """

    replica, replicas, reads_data, scores, is_root, distributed = 0, 1, True, True, True, False
    data_fields = DATA_FIELDS

    def __init__(self, net: AerisNet, diffusion: DiffusionConfig, *, w_lat_field: np.ndarray,
                 w_channel, device: torch.device, amp: torch.dtype | None = None):
        self.model = net.to(device)
        self.device, self.diffusion, self.amp = torch.device(device), diffusion, amp
        self.noise_s = 0.0   # seconds of the last gradients() spent drawing noise
        H, W = net.grid
        self.layout = WindowLayout(H, W, *net.cfg.window)
        self.ctx = SerialContext(self.layout)
        self.token_ids = self.ctx.token_ids(0)
        self.w_token = torch.as_tensor(token_weights(w_lat_field, self.token_ids), dtype=torch.float32,
                                       device=self.device)
        self.w_channel = torch.as_tensor(w_channel, dtype=torch.float32, device=self.device)
        self.optimizer: torch.optim.Optimizer | None = None

    def build_optimizer(self, *, lr: float, betas, eps: float, weight_decay: float) -> torch.optim.Optimizer:
        """AdamW with the decay groups of aeris.train.optim."""
        self.optimizer = build_optimizer(self.model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                         decay_names=set(self.model.decay_parameter_names()))
        return self.optimizer

    def _loss(self, mb: MicroBatch, normaliser: float) -> torch.Tensor:
        x0 = mb.data["target"]
        t0 = time.perf_counter()
        noise = batch_noise(self.layout, 0, mb.keys, x0.shape[-1], self.diffusion, x0.dtype, x0.device)
        self.noise_s += time.perf_counter() - t0
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            return diffusion_loss(self.model, self.ctx, mb.data, mb.keys, self.diffusion,
                                  self.w_token, self.w_channel, normaliser, noise)

    def gradients(self, mbs, normaliser, *, grad_clip):
        self.noise_s = 0.0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for mb in mbs:
            loss = self._loss(mb, normaliser)
            loss.backward()
            total += float(loss.detach())
        params = [p for p in self.model.parameters() if p.grad is not None]
        if grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        else:
            gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        return total, gnorm

    def update(self, lr):
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.step()

    def train_step(self, mbs, normaliser, *, lr, grad_clip):
        loss, gnorm = self.gradients(mbs, normaliser, grad_clip=grad_clip)
        if not math.isfinite(loss) or not math.isfinite(gnorm):
            raise FloatingPointError(f"non-finite loss {loss} or grad norm {gnorm}")
        self.update(lr)
        return loss, gnorm

    @torch.no_grad()
    def eval_loss(self, mbs, normaliser):
        return sum(float(self._loss(mb, normaliser)) for mb in mbs)

    def sampler(self, dcfg, weights=None):
        model = self.model
        if weights is not None:
            # a copy, not a new build: a fresh init would draw from the global RNG, so
            # validating would change the random stream of the training that follows
            model = copy.deepcopy(model).eval()
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(weights[n].to(p.dtype))
        ctx, n_out = self.ctx, model.n_out
        return lambda cond, keys: sample_residuals(model, ctx, cond, keys, n_out, dcfg)

    def all_sum(self, x):
        return x.cpu()

    def broadcast(self, obj):
        return obj

    def barrier(self) -> None:
        pass

    def comm_record(self) -> dict[str, int]:
        return {}

    def step_times(self) -> dict[str, float]:
        return {"noise_s": self.noise_s, "comm_wait_s": 0.0, "bubble_s": 0.0}

    def gather_rows(self, row):
        return [list(row)]

    def describe(self) -> str | None:
        return None

"""One rank of a SWiPe training run: its pipeline stage of AerisNet, the SWiPe window context,
the pipeline executor, the gradient reduction and a ZeRO-sharded AdamW.

Maths (SWIPE.md section 6), for a global step over the samples S (all replicas, all
micro-batches) and T = H*W tokens per sample::

    loss_rank = sum_{s in my samples, tokens g I hold} w_lat(g) sum_c w_var(c) (sigma_d F - v)^2 / (T |S|)

Gradients are SUMMED over the weight group (dp, wy, wx, sp at fixed pp): the sum over every rank
of a stage of d loss_rank / d theta is d (serial mean loss) / d theta, whatever the layout.
The global gradient norm sums norm^2 over the pp group after that reduction; the optimizer is
``torch.distributed.optim.ZeroRedundancyOptimizer`` (AdamW, the decay groups of
aeris.train.optim) sharded over the weight group.

Noise, sigma and t come from the sample keys (seed, step, position, dataset index) exactly as in the serial
trainer (aeris.diffusion.objective.batch_noise), so every rank of a sample agrees and the run
equals the serial one to rounding. The time embedding is recomputed from t on every stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.noise import sample_sigmas
from aeris.diffusion.objective import batch_noise, network_input
from aeris.diffusion.trigflow import sigma_to_t, trigflow_inputs, weighted_error_sum
from aeris.diffusion.weights import token_weights
from aeris.model.layers import timestep_embedding
from aeris.model.network import AerisNet
from aeris.train.optim import param_groups
from swipe.comm import CommCounter, all_reduce_sum
from swipe.mesh import SwipeMesh
from swipe.parallel_context import SwipeContext
from swipe.pipeline import PipelineExecutor, StagePlan, plan_stages, stage_routes

__all__ = ["MicroBatch", "SwipeEngine", "prune_to_stage", "run_stage_blocks"]


def run_stage_blocks(model, plan, h, c, ctx):
    """The blocks of one pipeline stage: h enters in ``plan.start_frame`` and leaves in
    ``plan.end_frame``; frame changes inside the stage go through ``ctx.change_frame``."""
    frame = plan.start_frame
    for i in plan.blocks:
        f = model.block_frame(i)
        if f != frame:
            h, frame = ctx.change_frame(h, frame, f), f
        h = model.block(i, h, c, ctx)
    if frame != plan.end_frame:
        h = ctx.change_frame(h, frame, plan.end_frame)
    return h


@dataclass
class MicroBatch:
    """One micro-batch for this rank: a key tuple per sample (seed, step, position, dataset index) and,
    on the first and last stage, this rank's tokens in frame 0: ``data`` = {"target", "cond",
    "forcing"} each (B, n_lw, tpp, C) (the ForecastDataset layout). None on middle stages."""

    keys: list[tuple[int, ...]]
    data: dict[str, torch.Tensor] | None = None


def prune_to_stage(net: AerisNet, plan: StagePlan) -> AerisNet:
    """Drop the parts of ``net`` another stage runs, in place; parameter names stay AerisNet's
    (blocks.3.attn.qkv.weight), so checkpoints are keyed by global names on every stage."""
    for i in range(net.n_blocks):
        if i not in plan.blocks:
            net.blocks[i] = nn.Identity()  # keeps the block numbering (and names) of the others
    if not plan.is_first:
        net.input = None
    if not plan.is_last:
        net.out = None
    return net


class SwipeEngine:
    """A SWiPe stage: ``train_step`` runs 1F1B over the micro-batches, reduces, clips and steps.

    ``net`` is the WHOLE AerisNet, built identically on every rank (same seed) and pruned here
    to this rank's stage. ``w_lat_field`` (H, W) latitude weights, ``w_channel`` (C,) variable
    weights. ``split``: explicit blocks per stage (default swipe.pipeline.stage_split).
    """

    def __init__(self, net: AerisNet, mesh: SwipeMesh, diffusion: DiffusionConfig, *,
                 w_lat_field: np.ndarray, w_channel: torch.Tensor, split: Sequence[int] | None = None,
                 counter: CommCounter | None = None, amp: torch.dtype | None = None):
        cfg = net.cfg
        H, W = net.grid
        self.mesh, self.diffusion, self.counter, self.amp = mesh, diffusion, counter, amp
        self.layout = mesh.layout(H, W, *cfg.window, heads=cfg.heads)
        self.ctx = SwipeContext(mesh, self.layout, counter)
        c = mesh.coords
        self.plans = plan_stages(net.n_blocks, mesh.shape.pp, net.block_frame, split)
        self.plan = self.plans[c.pp]
        self.n_out, self.dim, self.time_scale = net.n_out, cfg.dim, cfg.time_scale
        self.model = prune_to_stage(net, self.plan)
        params = list(self.model.parameters())
        if not params:
            raise ValueError(f"pipeline stage {c.pp} holds no parameters (split "
                             f"{[len(p.blocks) for p in self.plans]}): give every stage at least one block")
        self.dtype, self.device = params[0].dtype, params[0].device
        recv, send = stage_routes(self.layout, self.plans, c.pp)
        self.executor = PipelineExecutor(
            c.pp, mesh.shape.pp, mesh.window_rank, prev_ranks=mesh.prev_stage_ranks,
            next_ranks=mesh.next_stage_ranks, recv_route=recv, send_route=send, counter=counter)
        ids = self.ctx.token_ids(0)
        self.w_token = torch.as_tensor(token_weights(w_lat_field, ids), dtype=self.dtype, device=self.device)
        self.w_channel = torch.as_tensor(w_channel, dtype=self.dtype, device=self.device)
        self.optimizer = None
        self.outputs: list[torch.Tensor] = []   # last stage: F per micro-batch when keep_outputs

    # ---- optimizer ------------------------------------------------------------------------------
    def build_optimizer(self, *, lr: float, betas, eps: float, weight_decay: float):
        """ZeroRedundancyOptimizer(AdamW) over the weight group, decay groups as the serial trainer."""
        from torch.distributed.optim import ZeroRedundancyOptimizer
        groups = [{k: v for k, v in g.items() if k != "names"}
                  for g in param_groups(self.model, weight_decay, set(self.model.decay_parameter_names()))]
        groups = [g for g in groups if g["params"]]
        self.optimizer = ZeroRedundancyOptimizer(
            groups, optimizer_class=torch.optim.AdamW, process_group=self.mesh.weight_group,
            lr=lr, betas=tuple(betas), eps=eps)
        return self.optimizer

    # ---- the stage's computation ----------------------------------------------------------------
    def _time(self, keys) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (B,), time embedding (B, d)) from the sample keys, as every stage computes them."""
        d = self.diffusion
        t = sigma_to_t(sample_sigmas(keys, d.sigma_min, d.sigma_max), d.sigma_data).to(self.dtype)
        emb = timestep_embedding(t.detach().cpu(), self.dim, self.time_scale, self.dtype)
        return t.to(self.device), emb.to(self.device)

    def _noisy(self, mb: MicroBatch):
        x0 = mb.data["target"].to(self.device, self.dtype)
        z, t = batch_noise(self.layout, self.ctx.rank, mb.keys, x0.shape[-1], self.diffusion, self.dtype)
        x_scaled, v = trigflow_inputs(x0, z.to(self.device), t.to(self.device), self.diffusion.sigma_data)
        return x_scaled, v

    def _forward_fn(self, mbs: Sequence[MicroBatch], normaliser: float | None, keep_outputs: bool):
        plan, model, ctx = self.plan, self.model, self.ctx

        def forward(k: int, x: torch.Tensor | None) -> torch.Tensor:
            mb = mbs[k]
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                _, c = self._time(mb.keys)
                v = None
                if plan.is_first:
                    if mb.data is None:
                        raise ValueError("the first pipeline stage needs the micro-batch data")
                    x_scaled, v = self._noisy(mb)
                    cond = torch.cat([mb.data["cond"], mb.data["forcing"]], dim=-1).to(self.device)
                    h = model.embed(network_input(x_scaled, cond), ctx)
                else:
                    h = x
                h = run_stage_blocks(model, plan, h, c, ctx)
                if not plan.is_last:
                    return h.to(self.dtype)
                F = model.head(h, c, ctx)
            if keep_outputs:
                self.outputs.append(F.detach())
            if normaliser is None:
                return F
            if v is None:
                if mb.data is None:
                    raise ValueError("the last pipeline stage needs the micro-batch data (labels)")
                _, v = self._noisy(mb)
            return weighted_error_sum(F.to(self.dtype), v, self.w_token, self.w_channel,
                                      self.diffusion.sigma_data) / normaliser

        return forward

    def _act_shape(self, mbs):
        L = self.layout
        return lambda k: (len(mbs[k].keys), L.n_local_windows, L.tokens_per_piece, self.dim)

    def forward_backward(self, mbs: Sequence[MicroBatch], normaliser: float,
                         keep_outputs: bool = False) -> float:
        """1F1B over the micro-batches; gradients accumulate UNREDUCED in the stage's parameters.
        Returns this rank's loss (sum over its micro-batches; 0 off the last stage)."""
        if normaliser <= 0:
            raise ValueError(f"normaliser must be positive, got {normaliser}")
        self.outputs = []
        self.model.train()
        losses = self.executor.train(len(mbs), self._forward_fn(mbs, normaliser, keep_outputs),
                                     self._act_shape(mbs), self.dtype, self.device)
        return float(sum(float(l) for l in losses))

    @torch.no_grad()
    def forward(self, mbs: Sequence[MicroBatch], normaliser: float | None = None) -> list[torch.Tensor]:
        """Forward only (DeepSpeed InferenceSchedule). On the last stage: the network outputs F
        (B, n_lw, tpp, C) per micro-batch, or the losses when ``normaliser`` is given."""
        self.outputs = []
        return self.executor.infer(len(mbs), self._forward_fn(mbs, normaliser, False),
                                   self._act_shape(mbs), self.dtype, self.device)

    # ---- reductions -----------------------------------------------------------------------------
    def reduce_gradients(self) -> None:
        """Sum every parameter's gradient over the weight group (one flat all-reduce)."""
        params = list(self.model.parameters())
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        all_reduce_sum(flat, self.mesh.weight_group, self.counter)
        off = 0
        for p in params:
            n = p.numel()
            p.grad = flat[off:off + n].view_as(p).clone()
            off += n

    def grad_norm(self) -> float:
        """Global L2 norm of the (reduced) gradients of ALL stages: norm^2 summed over the pp group."""
        sq = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in self.model.parameters():
            if p.grad is not None:
                sq += p.grad.detach().double().square().sum()
        if self.mesh.shape.pp > 1:
            dist.all_reduce(sq, group=self.mesh.pp_group)
        return float(sq.sqrt())

    def clip_gradients(self, max_norm: float) -> float:
        """Global-norm clipping with torch's rule (coef = max_norm / (norm + 1e-6), at most 1);
        returns the norm before clipping. ``max_norm <= 0`` only measures."""
        norm = self.grad_norm()
        if max_norm > 0:
            coef = min(1.0, max_norm / (norm + 1e-6))
            if coef < 1.0:
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(coef)
        return norm

    def global_sum(self, value: float) -> float:
        """Sum of a per-rank number over the whole replica set (weight group, then pp group)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.mesh.weight_group)
        if self.mesh.shape.pp > 1:
            dist.all_reduce(t, group=self.mesh.pp_group)
        return float(t)

    # ---- one optimizer step ---------------------------------------------------------------------
    def train_step(self, mbs: Sequence[MicroBatch], normaliser: float, *, lr: float,
                   grad_clip: float, keep_outputs: bool = False) -> tuple[float, float]:
        """zero_grad, 1F1B, weight-group reduction, global clip, ZeRO AdamW step.
        Returns (global loss, global grad norm before clipping), equal on every rank."""
        if self.optimizer is None:
            raise RuntimeError("call build_optimizer() before train_step()")
        self.optimizer.zero_grad(set_to_none=True)
        local = self.forward_backward(mbs, normaliser, keep_outputs)
        self.reduce_gradients()
        gnorm = self.clip_gradients(grad_clip)
        loss = self.global_sum(local)
        if not math.isfinite(loss) or not math.isfinite(gnorm):
            raise FloatingPointError(f"non-finite loss {loss} or grad norm {gnorm}")
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.step()
        return loss, gnorm

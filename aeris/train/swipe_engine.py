"""The SWiPe engine: one rank's pipeline stage, trained with 1F1B, reduced over its weight group.

Maths (docs/training.md, "Gradient normalisation"), for a global step over the samples S (all
replicas, all micro-batches) and T = H*W tokens per sample::

    loss_rank = sum_{s in my samples, tokens g I hold} w_lat(g) sum_c w_var(c) (sigma_d F - v)^2 / (T |S|)

Gradients are SUMMED over the weight group (dp, wy, wx, sp at fixed pp): the sum over every rank
of a stage of d loss_rank / d theta is d (serial mean loss) / d theta, whatever the layout.
The stage's state is sharded over its weight group with FSDP2 (``fully_shard`` per block and
on the stage, element-wise dim-0 shards): parameters are all-gathered once per step (or, with
``reshard_after_forward``, for every forward and backward), gradients reduce-scattered with a
SUM (divide factor 1) into the shards after the step's last backward (or after every one);
AdamW (the decay groups of aeris.train.optim) and the EMA hold only this rank's shards. The global
gradient norm sums the shards' norm^2 over the weight group and the pp group.

Noise, sigma and t come from the sample keys (seed, step, position, dataset index) exactly as in
the serial engine (aeris.diffusion.objective.batch_noise), so every rank of a sample agrees and
the run equals the serial one to rounding. The time embedding is recomputed from t on every
stage (inside `AerisStage.forward`).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.noise import sample_sigmas
from aeris.diffusion.objective import batch_noise, network_input
from aeris.diffusion.trigflow import sigma_to_t, trigflow_inputs, weighted_error_sum
from aeris.diffusion.weights import token_weights
from aeris.distributed.inference import PipelineSampler
from aeris.distributed.stage import MeshStage, assign_slice
from aeris.model.init import materialise
from aeris.model.network import AerisNet
from aeris.train.engine import DATA_FIELDS, MicroBatch
from aeris.train.optim import adamw, param_groups
from swipe.comm import KINDS, CommCounter, all_reduce_sum
from swipe.mesh import SwipeMesh

__all__ = ["MicroBatch", "SwipeEngine"]


class SwipeEngine:
    """A SWiPe stage (implements aeris.train.engine.Engine): ``train_step`` runs 1F1B over the
    micro-batches, reduces, clips and steps.

    ``net`` is the whole AerisNet: on the meta device (shapes only; this rank's stage is then
    materialised on ``device`` and keyed-initialised from ``seed``), or with real weights,
    the same on every rank. ``w_lat_field`` (H, W) latitude weights, ``w_channel`` (C,)
    variable weights. ``split``: explicit blocks per stage (default swipe.pipeline.stage_split).
    ``amp``: autocast dtype (None = fp32); ``reduce_dtype``: dtype of the gradient
    reduce-scatter (None = the parameters'); ``reshard_after_forward``: gather every block for
    each forward and backward of every micro-batch (least memory) instead of once per step.
    """

    def __init__(self, net: AerisNet, mesh: SwipeMesh, diffusion: DiffusionConfig, *,
                 w_lat_field: np.ndarray, w_channel, split: Sequence[int] | None = None,
                 counter: CommCounter | None = None, amp: torch.dtype | None = None,
                 device: torch.device | str | None = None, seed: int | None = None,
                 reduce_dtype: torch.dtype | None = None, reshard_after_forward: bool = False):
        self.mesh, self.diffusion, self.amp = mesh, diffusion, amp
        self.counter = counter if counter is not None else CommCounter()
        self.stage = MeshStage.build(net, mesh, split, self.counter)
        self.model, self.ctx, self.layout = self.stage.model, self.stage.ctx, self.stage.layout
        self.plans, self.plan, self.executor = self.stage.plans, self.stage.plan, self.stage.executor
        self.noise_s = 0.0   # seconds of the last gradients() spent drawing noise
        meta = next(self.model.parameters()).is_meta
        if meta and (device is None or seed is None):
            raise ValueError("a meta-device network needs the rank's device and the init seed")
        self.reshard_after_forward = reshard_after_forward
        self._shard(reduce_dtype)
        if meta:  # sharded first, then allocated: a rank only ever holds its shards (+ one whole parameter)
            materialise(self.model, device, seed, assign_slice)
        self.dtype, self.device = self.stage.dtype, self.stage.device
        # activations between stages travel (and live) in the compute dtype
        self.act_dtype = amp if amp is not None else self.dtype
        c, s = mesh.coords, mesh.shape
        self.replica, self.replicas = c.dp, s.dp
        self.reads_data = self.plan.is_first or self.plan.is_last
        # the first stage builds the network input; a last stage needs only the labels (`_noisy`)
        self.data_fields = DATA_FIELDS if self.plan.is_first else ("target",) if self.plan.is_last else ()
        self.scores = c.pp == 0          # stage 0 holds the sampler state and reads the data
        self.is_root = mesh.rank == 0
        self.distributed = True
        self.token_ids = self.ctx.token_ids(0)
        self.w_token = torch.as_tensor(token_weights(w_lat_field, self.token_ids), dtype=self.dtype,
                                       device=self.device)
        self.w_channel = torch.as_tensor(w_channel, dtype=self.dtype, device=self.device)
        self.optimizer = None
        self.outputs: list[torch.Tensor] = []   # last stage: F per micro-batch when keep_outputs
        self._step_micro_batches = 0             # of the last training step (comm_record)

    # ---- sharded state ---------------------------------------------------------------------------
    def _shard(self, reduce_dtype: torch.dtype | None) -> None:
        """FSDP2 over the weight group: one unit per block (so at most one block is gathered at
        a time) and the stage's own parts (embedding, head) in the root unit."""
        policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
        # FSDP2 warns that a returned view would lose its backward hook under an in-place op; the
        # pipeline executor never modifies a stage's output in place
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        units = [b for b in self.model.blocks if any(True for _ in b.parameters())]
        for b in units:
            fully_shard(b, mesh=self.mesh.weight_mesh, mp_policy=policy,
                        reshard_after_forward=self.reshard_after_forward)
        fully_shard(self.model, mesh=self.mesh.weight_mesh, mp_policy=policy,
                    reshard_after_forward=self.reshard_after_forward)
        for m in self.model.modules():
            if isinstance(m, FSDPModule):
                m.set_gradient_divide_factor(1.0)         # a SUM over the weight group
                m.set_force_sum_reduction_for_comms(True)  # plain SUM collectives (any backend)
        n = self.mesh.shape.world_size // self.mesh.shape.pp
        elem = {p: p.element_size() for p in self.model.parameters()}
        full = sum(p.numel() * elem[p] for p in self.model.parameters())
        red = sum(p.numel() * (torch.finfo(reduce_dtype).bits // 8 if reduce_dtype else elem[p])
                  for p in self.model.parameters())
        # bytes this rank sends per all-gather / reduce-scatter of the whole stage (ring: (n-1)/n)
        self._gather_bytes, self._scatter_bytes, self._n_weight = (n - 1) * full // n, (n - 1) * red // n, n

    def _count_sharded_traffic(self, n_micro: int) -> None:
        """Resharding after forward: every unit is gathered for each forward and again for each
        backward and reduce-scattered after each backward. Otherwise once per step each."""
        if self._n_weight > 1:
            gathers, scatters = (2 * n_micro, n_micro) if self.reshard_after_forward else (1, 1)
            self.counter.add("all_gather", self._gather_bytes * gathers, (self._n_weight - 1) * gathers)
            self.counter.add("reduce_scatter", self._scatter_bytes * scatters, (self._n_weight - 1) * scatters)

    def _before_backward(self, k: int, last: bool) -> None:
        """Without resharding after forward the stage stays gathered and its gradients accumulate
        unsharded until the step's last backward, which reduce-scatters them once."""
        if not self.reshard_after_forward:
            self.model.set_requires_gradient_sync(last)
            self.model.set_reshard_after_backward(last)

    def full_weights(self, source: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Whole tensors by name of this stage's parameters, or of ``source`` (e.g. the EMA
        shards): a collective over the weight group."""
        src = source if source is not None else {n: p.detach() for n, p in self.model.named_parameters()}
        return {n: (t.full_tensor() if isinstance(t, DTensor) else t) for n, t in src.items()}

    # ---- optimizer ------------------------------------------------------------------------------
    def build_optimizer(self, *, lr: float, betas, eps: float, weight_decay: float):
        """AdamW over this rank's parameter shards (element-sharded state), decay groups as the
        serial engine."""
        groups = [{k: v for k, v in g.items() if k != "names"}
                  for g in param_groups(self.model, weight_decay, set(self.model.decay_parameter_names()))]
        groups = [g for g in groups if g["params"]]
        self.optimizer = adamw(groups, lr=lr, betas=betas, eps=eps)
        return self.optimizer

    # ---- the stage's computation ----------------------------------------------------------------
    def _t(self, keys) -> torch.Tensor:
        """TrigFlow time t (B,) of the samples, from their keys, as every stage computes it."""
        d = self.diffusion
        return sigma_to_t(sample_sigmas(keys, d.sigma_min, d.sigma_max), d.sigma_data).to(self.device, self.dtype)

    def _noisy(self, mb: MicroBatch):
        x0 = mb.data["target"].to(self.device, self.dtype)
        t0 = time.perf_counter()
        z, t = batch_noise(self.layout, self.ctx.rank, mb.keys, x0.shape[-1], self.diffusion, self.dtype,
                           self.device)
        self.noise_s += time.perf_counter() - t0
        return trigflow_inputs(x0, z, t, self.diffusion.sigma_data)

    def _forward_fn(self, mbs: Sequence[MicroBatch], normaliser: float | None, keep_outputs: bool,
                    model: torch.nn.Module | None = None):
        plan, ctx = self.plan, self.ctx
        model = self.model if model is None else model

        def forward(k: int, x: torch.Tensor | None) -> torch.Tensor:
            mb = mbs[k]
            v = None
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                if plan.is_first:
                    if mb.data is None:
                        raise ValueError("the first pipeline stage needs the micro-batch data")
                    x_scaled, v = self._noisy(mb)
                    x = network_input(x_scaled, torch.cat([mb.data["cond"], mb.data["forcing"]], -1).to(self.device))
                out = model(x, self._t(mb.keys), ctx)
            if not plan.is_last:
                return out.to(self.act_dtype)
            if keep_outputs:
                self.outputs.append(out.detach())
            if normaliser is None:
                return out
            if v is None:
                if mb.data is None:
                    raise ValueError("the last pipeline stage needs the micro-batch data (labels)")
                _, v = self._noisy(mb)
            return weighted_error_sum(out.to(self.dtype), v, self.w_token, self.w_channel,
                                      self.diffusion.sigma_data) / normaliser

        return forward

    def _act_shape(self, mbs):
        return lambda k: self.stage.act_shape(len(mbs[k].keys))

    def forward_backward(self, mbs: Sequence[MicroBatch], normaliser: float,
                         keep_outputs: bool = False) -> float:
        """1F1B over the micro-batches; gradients accumulate UNREDUCED in the stage's parameters.
        Returns this rank's loss (sum over its micro-batches; 0 off the last stage)."""
        if normaliser <= 0:
            raise ValueError(f"normaliser must be positive, got {normaliser}")
        self.outputs = []
        self.model.train()
        losses = self.executor.train(len(mbs), self._forward_fn(mbs, normaliser, keep_outputs),
                                     self._act_shape(mbs), self.act_dtype, self.device, self._before_backward)
        return float(sum(float(l) for l in losses))

    # ---- reductions -----------------------------------------------------------------------------
    def grad_norm(self) -> float:
        """Global L2 norm of the (reduced, sharded) gradients of ALL stages: the shards' norm^2
        summed over the weight group, then over the pp group."""
        sq = torch.zeros(1, dtype=torch.float64, device=self.device)
        for p in self.model.parameters():
            if p.grad is not None:
                g = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
                sq += g.detach().double().square().sum()
        all_reduce_sum(sq, self.mesh.weight_group, self.counter)
        if self.mesh.shape.pp > 1:
            all_reduce_sum(sq, self.mesh.pp_group, self.counter)
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
        all_reduce_sum(t, self.mesh.weight_group, self.counter)
        if self.mesh.shape.pp > 1:
            all_reduce_sum(t, self.mesh.pp_group, self.counter)
        return float(t)

    # ---- the Engine interface -------------------------------------------------------------------
    def gradients(self, mbs: Sequence[MicroBatch], normaliser: float, *, grad_clip: float,
                  keep_outputs: bool = False) -> tuple[float, float]:
        """zero_grad, 1F1B (gradients reduce-scattered into the shards), global clip. Returns
        (global loss, global grad norm before clipping), equal on every rank."""
        if self.optimizer is None:
            raise RuntimeError("call build_optimizer() before training")
        self.counter.reset()
        self.noise_s = 0.0
        self._step_micro_batches = len(mbs)   # for comm_record's calls per block
        self.optimizer.zero_grad(set_to_none=True)
        local = self.forward_backward(mbs, normaliser, keep_outputs)
        self._count_sharded_traffic(len(mbs))
        gnorm = self.clip_gradients(grad_clip)
        return self.global_sum(local), gnorm

    def update(self, lr: float) -> None:
        """AdamW on this rank's shards."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.step()

    def train_step(self, mbs: Sequence[MicroBatch], normaliser: float, *, lr: float,
                   grad_clip: float, keep_outputs: bool = False) -> tuple[float, float]:
        """`gradients` then `update` (FloatingPointError and no update if not finite)."""
        loss, gnorm = self.gradients(mbs, normaliser, grad_clip=grad_clip, keep_outputs=keep_outputs)
        if not math.isfinite(loss) or not math.isfinite(gnorm):
            raise FloatingPointError(f"non-finite loss {loss} or grad norm {gnorm}")
        self.update(lr)
        return loss, gnorm

    def eval_loss(self, mbs: Sequence[MicroBatch], normaliser: float) -> float:
        # on a plain copy of the stage: replicas may hold different numbers of micro-batches,
        # and a sharded forward is a collective over the weight group, which spans them
        stage = self.stage.with_weights(self.full_weights())
        fwd = self._forward_fn(mbs, normaliser, False, model=stage.model)
        with torch.no_grad():
            losses = self.executor.infer(len(mbs), fwd, self._act_shape(mbs), self.act_dtype, self.device) if mbs else []
        return self.global_sum(sum(float(l) for l in losses))

    def sampler(self, dcfg: DiffusionConfig, weights: dict[str, torch.Tensor] | None = None) -> PipelineSampler:
        # a plain copy with whole weights, for the reason of eval_loss
        return PipelineSampler(self.stage.with_weights(self.full_weights(weights)), dcfg)

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        dist.all_reduce(x)
        return x.cpu()

    def broadcast(self, obj):
        box = [obj if self.is_root else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def comm_record(self) -> dict:
        """Bytes of the last step by kind: this rank's (``bytes_<kind>_rank0`` on rank 0) and the
        sum over all ranks (``bytes_<kind>_all``); this rank's calls per block per micro-batch
        (``calls_<kind>_per_block_rank0``) and wall seconds blocked waiting
        (``seconds_<kind>_rank0``); a collective call."""
        # on the communication device: an nccl group serves only CUDA tensors
        mine = torch.tensor([self.counter.bytes[k] for k in KINDS], dtype=torch.float64, device=self.device)
        total = mine.clone()
        dist.all_reduce(total)
        mine, total = mine.cpu(), total.cpu()
        rec = {f"bytes_{k}_rank0": int(mine[i]) for i, k in enumerate(KINDS)}
        rec.update({f"bytes_{k}_all": int(total[i]) for i, k in enumerate(KINDS)})
        # this rank's calls per block per micro-batch (p2p includes the pipeline sends, all_reduce
        # the step's scalars; none where the stage has no blocks) and seconds blocked in waits
        per = len(self.plan.blocks) * self._step_micro_batches
        rec.update({f"calls_{k}_per_block_rank0": self.counter.calls[k] / per if per else None for k in KINDS})
        rec.update({f"seconds_{k}_rank0": self.counter.seconds[k] for k in KINDS})
        return rec

    def step_times(self) -> dict[str, float]:
        """Seconds of the last ``gradients``: noise, own communication (Ulysses, frame changes,
        scalar all-reduces; FSDP2's gathers run inside its hooks and count as compute) and the
        pipeline's blocked sends/receives (bubble + transfer)."""
        bubble = self.executor.wait_s
        return {"noise_s": self.noise_s, "comm_wait_s": max(0.0, sum(self.counter.seconds.values()) - bubble),
                "bubble_s": bubble}

    def gather_rows(self, row: Sequence[float]) -> list[list[float]]:
        world, me = dist.get_world_size(), dist.get_rank()
        table = torch.zeros(world, len(row), dtype=torch.float64, device=self.device)
        table[me] = torch.tensor([float(v) for v in row], dtype=torch.float64)
        dist.all_reduce(table)
        return table.cpu().tolist()

    def describe(self) -> str:
        s, lay = self.mesh.shape, self.layout
        plans = ", ".join(f"stage {p.index}: {'embed+' if p.is_first else ''}blocks "
                          f"{list(p.blocks) if len(p.blocks) else '-'}{'+head' if p.is_last else ''} "
                          f"(frames {p.start_frame}->{p.end_frame})" for p in self.plans)
        return (f"[swipe] mesh dp={s.dp} pp={s.pp} wy={s.wy} wx={s.wx} sp={s.sp} = {s.world_size} ranks; "
                f"grid {lay.H}x{lay.W}, window {lay.ws_h}x{lay.ws_w}, {lay.n_windows_y}x{lay.n_windows_x} windows\n"
                f"[swipe] per rank: {lay.n_local_windows} windows x {lay.tokens_per_piece} tokens = "
                f"{lay.tokens_per_rank} tokens ({lay.tokens_per_rank / (lay.H * lay.W):.3%} of a sample)\n"
                f"[swipe] {plans}")

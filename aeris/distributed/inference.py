"""Pipeline inference: the diffusion sampler through a SWiPe mesh's forward-only schedule.

Ensemble members are the pipeline micro-batches: every network evaluation of the ODE sampler
runs DeepSpeed's InferenceSchedule (`swipe.pipeline.PipelineExecutor.infer`) with one
micro-batch per member. The sampler state lives on every stage: the last stage's output F is
broadcast over the pp group after each evaluation, so each stage keeps the same x_t for its
window tokens and the first stage can build the next input (B x tokens x C per evaluation,
the size of the sampler state, small next to the activations the pipeline moves). The noise of
a member is keyed per global token (aeris.diffusion.noise), so the samples equal the serial ones to
rounding whatever the layout (docs/pipeline.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.objective import network_input
from aeris.diffusion.sampler import sample_members
from aeris.distributed.stage import MeshStage

__all__ = ["PipelineSampler"]


class PipelineSampler:
    """Residual samples of a member batch through this rank's stage: a stepper
    ``(cond (B or none, n_lw, tpp, C_cond), keys) -> (B, n_lw, tpp, n_out)`` like the serial
    `aeris.forecast.ensemble.sample_residuals` (a collective call on every rank of the mesh;
    ``cond`` matters on the first stage only)."""

    def __init__(self, stage: MeshStage, dcfg: DiffusionConfig):
        self.stage, self.dcfg = stage, dcfg
        mesh = stage.mesh
        c, s = mesh.coords, mesh.shape
        self.last_rank = s.rank(dp=c.dp, pp=s.pp - 1, wy=c.wy, wx=c.wx, sp=c.sp)

    @torch.no_grad()
    def __call__(self, cond: torch.Tensor, keys: Sequence[Sequence[int]]) -> torch.Tensor:
        st = self.stage
        plan, model, ctx, L = st.plan, st.model, st.ctx, st.layout
        device, dtype, n_out = st.device, st.dtype, model.n_out
        B = len(keys)
        if cond.dim() == 3:  # one state for every member
            cond = cond.unsqueeze(0).expand(B, *cond.shape)
        cond = cond.to(device, dtype)

        def denoise(x_scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            def forward(k: int, h: torch.Tensor | None) -> torch.Tensor:
                x = network_input(x_scaled[k:k + 1], cond[k:k + 1]) if plan.is_first else h
                return model(x, t[k:k + 1], ctx)

            outs = st.executor.infer(B, forward, lambda k: st.act_shape(1), dtype, device)
            if plan.is_last:
                F = torch.cat(outs).contiguous()
            else:
                F = torch.empty(B, L.n_local_windows, L.tokens_per_piece, n_out, dtype=dtype, device=device)
            if st.mesh.shape.pp > 1:
                dist.broadcast(F, src=self.last_rank, group=st.mesh.pp_group)
            return F

        return sample_members(denoise, L, ctx.rank, keys, n_out, self.dcfg, dtype=cond.dtype, device=cond.device)

"""SWiPe inference: the rollout on a dp x pp x (wy, wx, sp) mesh.

* Ensemble members are the pipeline micro-batches: every network evaluation of the ODE sampler
  runs the forward-only schedule (`swipe.pipeline.PipelineExecutor.infer`, DeepSpeed's
  InferenceSchedule) with one micro-batch per member of the unit's member batch.
* The sampler state lives on every stage: the last stage's output F is broadcast over the pp
  group after each evaluation, so each stage keeps the same x_t for its window tokens and the
  first stage can build the next input. (The broadcast is B x tokens x C per evaluation, the
  size of the sampler state, small next to the activations the pipeline moves.)
* Window/sequence ranks hold their tokens only (`ForecastDataset(index_map=...)` reads just
  their tiles); the noise of a member is keyed per window, so it is the serial noise whatever
  the layout, and the store equals the serial one to rounding.
* dp replicas take (init, member batch) units round-robin; per replica the rank at pp = 0,
  window rank 0 gathers the field over its window group and writes the regions.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
import torch.distributed as dist

from aeris.diffusion.objective import network_input
from aeris.diffusion.sampler import sample_members
from aeris.forecast.rollout import Forecaster, RankRole, _dataset

__all__ = ["PipelineStepper", "swipe_forecaster"]


class PipelineStepper:
    """Residual samples of a member batch through this rank's pipeline stage (module docstring)."""

    def __init__(self, engine, n_out: int, dcfg):
        self.engine, self.n_out, self.dcfg = engine, n_out, dcfg
        mesh = engine.mesh
        c, s = mesh.coords, mesh.shape
        self.pp = s.pp
        self.last_rank = s.rank(dp=c.dp, pp=s.pp - 1, wy=c.wy, wx=c.wx, sp=c.sp)

    @torch.no_grad()
    def __call__(self, cond: torch.Tensor, keys) -> torch.Tensor:
        from aeris.train.swipe_engine import run_stage_blocks  # lazy: imports the pipeline
        eng = self.engine
        plan, model, ctx, L = eng.plan, eng.model, eng.ctx, eng.layout
        B = len(keys)
        cond = cond.to(eng.device, eng.dtype)

        def denoise(x_scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            def forward(k: int, h: torch.Tensor | None) -> torch.Tensor:
                c = model.time_embedding(t[k:k + 1])
                if plan.is_first:
                    h = model.embed(network_input(x_scaled[k:k + 1], cond[k:k + 1]), ctx)
                h = run_stage_blocks(model, plan, h, c, ctx)
                return model.head(h, c, ctx) if plan.is_last else h

            outs = eng.executor.infer(B, forward, lambda k: (1, L.n_local_windows, L.tokens_per_piece, eng.dim),
                                      eng.dtype, eng.device)
            if plan.is_last:
                F = torch.cat(outs).contiguous()
            else:
                F = torch.empty(B, L.n_local_windows, L.tokens_per_piece, self.n_out, dtype=eng.dtype,
                                device=eng.device)
            if self.pp > 1:
                dist.broadcast(F, src=self.last_rank, group=eng.mesh.pp_group)
            return F

        return sample_members(denoise, L, ctx.rank, keys, self.n_out, self.dcfg,
                              dtype=cond.dtype, device=cond.device)


def _window_gather(mesh, layout):
    """tokens (B, n_lw, tpp, C) -> whole field (B, C, H, W) on window rank 0 of pp stage 0."""
    writer = mesh.coords.pp == 0 and mesh.window_rank == 0
    n = mesh.shape.n_window

    def gather(x: torch.Tensor):
        if mesh.coords.pp != 0:
            return None  # stage 0 holds the same state; other stages skip the collective
        x = x.detach().contiguous()
        if n == 1:
            pieces = [x]
        else:
            pieces = [torch.empty_like(x) for _ in range(n)]
            dist.all_gather(pieces, x, group=mesh.window_group)
        if not writer:
            return None
        return layout.assemble([p.permute(0, 3, 1, 2).cpu().numpy() for p in pieces], 0)

    return gather, writer


def swipe_forecaster(fc: Forecaster, mesh, split=None) -> tuple[Forecaster, PipelineStepper, RankRole]:
    """This rank's (forecaster, stepper, role) for `run_forecast` on `mesh` (a SwipeMesh).

    `fc` is the whole model loaded on every rank (`load_forecaster`); it is copied and pruned to
    this rank's pipeline stage. split: explicit blocks per stage (default swipe.pipeline's).
    """
    from aeris.train.swipe_engine import SwipeEngine

    if dist.get_group_rank(mesh.window_group, mesh.rank) != mesh.window_rank:
        raise RuntimeError("window group ranks are not ordered by window rank")
    H, W = fc.ds.grid
    net = copy.deepcopy(fc.model)
    engine = SwipeEngine(net, mesh, fc.dcfg, w_lat_field=np.ones((H, W)),
                         w_channel=torch.ones(len(fc.channels)), split=split)
    engine.model.eval()
    layout = engine.layout
    ds = _dataset(fc.cfg.data, index_map=layout.index_map(0, mesh.window_rank))
    local = replace(fc, ds=ds, model=engine.model, ctx=engine.ctx)
    gather, writer = _window_gather(mesh, layout)
    c, s = mesh.coords, mesh.shape
    role = RankRole(replica=c.dp, replicas=s.dp, writer=writer, gather=gather,
                    barrier=lambda: dist.barrier(), is_root=mesh.rank == 0)
    return local, PipelineStepper(engine, len(fc.channels), fc.dcfg), role

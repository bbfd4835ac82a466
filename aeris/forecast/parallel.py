"""SWiPe inference: the rollout on a dp x pp x (wy, wx, sp) mesh.

* Every network evaluation of the sampler runs through the forward-only pipeline with the
  members as micro-batches (`aeris.distributed.inference.PipelineSampler`).
* Window/sequence ranks hold their tokens only (`ForecastDataset(index_map=...)` reads just
  their tiles); the noise of a member is keyed per global token, so it is the serial noise whatever
  the layout, and the store equals the serial one to rounding.
* dp replicas take (init, member batch) units round-robin; per replica the rank at pp = 0,
  window rank 0 gathers the field over its window group and writes the regions.
* The members per sampler call (``forecast.eval_batch``) are the micro-batches of one pass
  through the pipeline; measured like the serial rollout's (`SwipeStepper.probe`), every rank
  timing the same collective evaluations, so the choice weighs pipeline fill against the cost
  per member.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.distributed as dist

from aeris.distributed.inference import PipelineSampler
from aeris.distributed.stage import MeshStage
from aeris.forecast.rollout import Forecaster, RankRole, open_view

__all__ = ["swipe_forecaster", "SwipeStepper"]


class SwipeStepper(PipelineSampler):
    """The pipeline sampler as the rollout's stepper, with the probe the rollout measures its
    member batch with."""

    def probe(self) -> PipelineSampler:
        """This sampler with one sampler step: one pipeline evaluation per call (collective)."""
        return PipelineSampler(self.stage, replace(self.dcfg, steps=1))


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


def swipe_forecaster(fc: Forecaster, mesh, split=None) -> tuple[Forecaster, SwipeStepper, RankRole]:
    """This rank's (forecaster, stepper, role) for `run_forecast` on `mesh` (a SwipeMesh).

    `fc` is the whole model loaded on every rank (`load_forecaster`); this rank keeps a copy of
    its pipeline stage. split: explicit blocks per stage (default swipe.pipeline's).
    """
    if dist.get_group_rank(mesh.window_group, mesh.rank) != mesh.window_rank:
        raise RuntimeError("window group ranks are not ordered by window rank")
    stage = MeshStage.build(copy.deepcopy(fc.model), mesh, split)
    stage.model.eval()
    layout = stage.layout
    ds = open_view(fc.cfg.data, index_map=layout.index_map(0, mesh.window_rank))
    local = replace(fc, ds=ds, model=stage.model, ctx=stage.ctx)
    gather, writer = _window_gather(mesh, layout)
    c, s = mesh.coords, mesh.shape
    role = RankRole(replica=c.dp, replicas=s.dp, writer=writer, gather=gather,
                    barrier=lambda: dist.barrier(), is_root=mesh.rank == 0)
    return local, SwipeStepper(stage, fc.dcfg), role

"""One rank's pipeline stage of the network on a SWiPe mesh.

A `MeshStage` is what both the training engine (aeris.train.swipe_engine) and pipeline
inference (aeris.distributed.inference) run: the rank's `AerisStage` module, the SWiPe window
context of its layout (attention within windows, frame changes: swipe.parallel_context), the
stage plans of the whole pipeline and the executor that moves activations between stages
along re-addressed routes (swipe.pipeline; docs/pipeline.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from aeris.model.network import AerisNet, AerisStage
from swipe.comm import CommCounter
from swipe.layout import WindowLayout
from swipe.mesh import SwipeMesh
from swipe.parallel_context import SwipeContext
from swipe.pipeline import PipelineExecutor, StagePlan, plan_stages, stage_routes

__all__ = ["MeshStage", "assign_slice"]


def assign_slice(p: torch.Tensor, whole: torch.Tensor) -> None:
    """Give parameter ``p`` the values ``whole`` of the unsharded parameter: its own slice
    when ``p`` is a DTensor shard (every rank drew the whole tensor, none is sent)."""
    if isinstance(p, DTensor):
        whole = distribute_tensor(whole.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None)
    p.copy_(whole)


@dataclass
class MeshStage:
    """This rank's stage: ``model`` (the `AerisStage` of ``plan``), ``ctx`` (its window
    context), ``executor`` (its place in the pipeline), ``plans`` (every stage's plan)."""

    mesh: SwipeMesh
    layout: WindowLayout
    ctx: SwipeContext
    plans: list[StagePlan]
    model: AerisStage
    executor: PipelineExecutor

    @classmethod
    def build(cls, net: AerisNet, mesh: SwipeMesh, split: Sequence[int] | None = None,
              counter: CommCounter | None = None) -> MeshStage:
        """The stage of ``net`` this rank runs (its parts are shared with ``net``, not copied).
        ``split``: explicit blocks per stage (default swipe.pipeline.stage_split).

        A ``net`` on the meta device (shapes only: the whole network costs no memory there)
        gives a stage on the meta device too: `aeris.model.init.materialise` it (after sharding it, if it is
        to be sharded), so that no rank ever holds more than its stage."""
        cfg = net.cfg
        H, W = net.grid
        layout = mesh.layout(H, W, *cfg.window, heads=cfg.heads)
        c = mesh.coords
        plans = plan_stages(net.n_blocks, mesh.shape.pp, net.block_frame, split)
        model = net.stage(plans[c.pp])
        if not list(model.parameters()):
            raise ValueError(f"pipeline stage {c.pp} holds no parameters (split "
                             f"{[len(p.blocks) for p in plans]}): give every stage at least one block")
        recv, send = stage_routes(layout, plans, c.pp)
        executor = PipelineExecutor(
            c.pp, mesh.shape.pp, mesh.window_rank, prev_ranks=mesh.prev_stage_ranks,
            next_ranks=mesh.next_stage_ranks, recv_route=recv, send_route=send, counter=counter)
        return cls(mesh, layout, SwipeContext(mesh, layout, counter), plans, model, executor)

    @property
    def plan(self) -> StagePlan:
        return self.model.plan

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def act_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of the activations a stage sends: (B, n_local_windows, tokens_per_piece, d)."""
        L = self.layout
        return (batch, L.n_local_windows, L.tokens_per_piece, self.model.cfg.dim)

    def with_weights(self, weights: dict[str, torch.Tensor]) -> MeshStage:
        """This stage as a plain (unsharded) module in eval mode holding ``weights`` (whole
        tensors by global name, e.g. the EMA's); context, routes and executor are shared, so
        no process group is made. Inference runs on it without the sharded training state."""
        m = self.model
        with torch.device("meta"):
            model = AerisStage(m.cfg, m.n_out, m.n_in, m.grid, m.plan)
        model = model.to_empty(device=self.device)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n].to(p.dtype))
        return replace(self, model=model.eval())

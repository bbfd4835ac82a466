"""The SWiPe window context: the same two requests as SerialContext, answered with collectives.

* ``attention``: ONE Ulysses all-to-all of the stacked q, k, v over the sp group (every sp rank
  gets heads/sp heads of its windows' ALL tokens, in quadrant-major order), plain window
  attention on whole windows (with the pole mask of this window rank if asked), ONE inverse
  all-to-all of the output: 2 all-to-alls forward, 2 backward per attention (sp > 1).
* ``change_frame``: shift exchange over the window group along ``layout.route(src, dst)``.

Both are autograd-exact, so a model built on a WindowContext trains identically (to rounding)
under SerialContext and SwipeContext.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from swipe.comm import CommCounter, shift_exchange, ulysses_qkv_to_heads, ulysses_to_tokens
from swipe.context import WindowContext
from swipe.layout import Route, WindowLayout
from swipe.mesh import MeshError, SwipeMesh

__all__ = ["SwipeContext"]


@lru_cache(maxsize=64)
def _route(layout: WindowLayout, src: int, dst: int) -> Route:
    return layout.route(src, dst)


class SwipeContext(WindowContext):
    """Window attention and frame changes for one rank of a SwipeMesh.

    ``layout`` must be the mesh's layout (wpy = wy, wpx = wx, same sp); build both with
    ``mesh.layout(H, W, ws_h, ws_w, heads)``. ``counter`` collects this context's traffic
    (default: swipe.comm's process-wide counter).
    """

    def __init__(self, mesh: SwipeMesh, layout: WindowLayout, counter: CommCounter | None = None):
        s = mesh.shape
        if (layout.wpy, layout.wpx, layout.sp) != (s.wy, s.wx, s.sp):
            raise MeshError(
                f"layout (wy={layout.wpy}, wx={layout.wpx}, sp={layout.sp}) does not match the mesh "
                f"(wy={s.wy}, wx={s.wx}, sp={s.sp})")
        c = mesh.coords
        super().__init__(layout, c.wy, c.wx, c.sp)
        assert self.rank == mesh.window_rank  # one numbering for mesh and layout
        self.mesh = mesh
        self.counter = counter

    def attention(self, qkv: torch.Tensor, frame: int, mask_poles: bool = False) -> torch.Tensor:
        """qkv: (B, n_lw, tpp, 3, heads, dh), all heads of the local tokens -> (B, n_lw, tpp, heads, dh)."""
        heads, sp = qkv.shape[-2], self.layout.sp
        if heads % sp:
            raise MeshError(f"heads={heads} is not divisible by sp={sp}")
        g, ctr = self.mesh.sp_group, self.counter
        # the attention needs every token of its heads at once: nothing to overlap the
        # all-to-alls with (docs/layout.md, "Communication primitives")
        q, k, v = ulysses_qkv_to_heads(qkv, g, ctr).unbind(dim=3)
        # whole windows now: the local attention of this window rank (its pole split if asked)
        return ulysses_to_tokens(self.local_attention(q, k, v, frame, mask_poles), g, ctr)

    def change_frame(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        """x: (B, n_lw, tpp, C) in frame ``src`` -> the same shape in frame ``dst``."""
        if src == dst:
            return x
        return shift_exchange(x, _route(self.layout, src, dst), self.rank,
                              self.mesh.window_group, self.counter)

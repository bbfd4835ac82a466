"""The SWiPe process mesh (dp, pp, wy, wx, sp), sp innermost, and its derived process groups.

Pure part (`MeshShape`, no process group): global rank <-> coordinates and the rank lists of
every derived group. Global rank of coordinates (d, p, y, x, s)::

    rank = (((d * pp + p) * wy + y) * wx + x) * sp + s = (d * pp + p) * n_window + r

where ``r = (y * wx + x) * sp + s`` is the rank inside the window group, numbered exactly like
swipe.layout.WindowLayout.rank_index. Derived groups:

* sp group      (s varies)              Ulysses all-to-all;
* window group  (y, x, s vary)          shift exchanges; list index = window-group rank r;
* weight group  (d, y, x, s vary)       ranks holding the same pipeline stage's weights;
* pp group      (p varies)              global grad-norm, pipeline neighbours;
* dp group      (d varies)              replicas of the same piece of the same stage.

Process part (`SwipeMesh.build`): one named DeviceMesh plus those groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import NamedTuple

import numpy as np

from swipe.layout import WindowLayout

__all__ = ["DIMS", "MeshError", "MeshCoords", "MeshShape", "SwipeMesh"]

DIMS = ("dp", "pp", "wy", "wx", "sp")


class MeshError(ValueError):
    """A mesh that does not fit the world, the grid or the model."""


class MeshCoords(NamedTuple):
    dp: int
    pp: int
    wy: int
    wx: int
    sp: int


@dataclass(frozen=True)
class MeshShape:
    """Sizes of the five mesh dimensions; all index maths, no processes."""

    dp: int = 1
    pp: int = 1
    wy: int = 1
    wx: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        for name in DIMS:
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise MeshError(f"mesh dimension {name}={v!r} must be a positive integer")

    @property
    def sizes(self) -> tuple[int, int, int, int, int]:
        return (self.dp, self.pp, self.wy, self.wx, self.sp)

    @property
    def world_size(self) -> int:
        return prod(self.sizes)

    @property
    def n_window(self) -> int:
        """Ranks in one window group (wy * wx * sp)."""
        return self.wy * self.wx * self.sp

    def check_world(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise MeshError(
                f"world size {world_size} does not match the mesh dp={self.dp} x pp={self.pp} x "
                f"wy={self.wy} x wx={self.wx} x sp={self.sp} = {self.world_size}")

    # ---- rank <-> coordinates -----------------------------------------------------------
    def coords(self, rank: int) -> MeshCoords:
        if not 0 <= rank < self.world_size:
            raise MeshError(f"rank {rank} out of range for a mesh of {self.world_size} ranks")
        return MeshCoords(*(int(c) for c in np.unravel_index(rank, self.sizes)))

    def rank(self, dp: int = 0, pp: int = 0, wy: int = 0, wx: int = 0, sp: int = 0) -> int:
        c = (dp, pp, wy, wx, sp)
        for name, v, n in zip(DIMS, c, self.sizes):
            if not 0 <= v < n:
                raise MeshError(f"coordinate {name}={v} out of range [0, {n})")
        return int(np.ravel_multi_index(c, self.sizes))

    def window_rank(self, rank: int) -> int:
        """Rank inside its window group (= WindowLayout.rank_index(wy, wx, s))."""
        self.coords(rank)
        return rank % self.n_window

    # ---- groups -------------------------------------------------------------------------
    def groups(self, dims: tuple[str, ...] | list[str]) -> list[list[int]]:
        """Every group varying over ``dims`` (others fixed), each listed in row-major order of
        ``dims`` (mesh order); groups ordered row-major over the fixed dimensions."""
        dims = tuple(dims)
        bad = [d for d in dims if d not in DIMS]
        if bad or len(set(dims)) != len(dims):
            raise MeshError(f"group dimensions {dims} must be distinct names from {DIMS}")
        vary = [i for i, d in enumerate(DIMS) if d in dims]
        fixed = [i for i in range(len(DIMS)) if i not in vary]
        ranks = np.arange(self.world_size).reshape(self.sizes).transpose(fixed + vary)
        return ranks.reshape(-1, prod(self.sizes[i] for i in vary)).tolist()

    def group_of(self, rank: int, dims: tuple[str, ...] | list[str]) -> list[int]:
        """The group over ``dims`` that contains ``rank``."""
        for g in self.groups(dims):
            if rank in g:
                return g
        raise MeshError(f"rank {rank} out of range for a mesh of {self.world_size} ranks")

    def sp_groups(self) -> list[list[int]]:
        return self.groups(("sp",))

    def window_groups(self) -> list[list[int]]:
        return self.groups(("wy", "wx", "sp"))

    def weight_groups(self) -> list[list[int]]:
        return self.groups(("dp", "wy", "wx", "sp"))

    def pp_groups(self) -> list[list[int]]:
        return self.groups(("pp",))

    def dp_groups(self) -> list[list[int]]:
        return self.groups(("dp",))

    def stage_ranks(self, dp: int, pp: int) -> list[int]:
        """Global ranks of stage ``pp`` of replica ``dp``, indexed by window-group rank."""
        return [self.rank(dp, pp) + r for r in range(self.n_window)]

    def next_stage_ranks(self, rank: int) -> list[int] | None:
        """Global ranks of stage p+1 (same replica) by window-group rank; None on the last stage."""
        c = self.coords(rank)
        return None if c.pp == self.pp - 1 else self.stage_ranks(c.dp, c.pp + 1)

    def prev_stage_ranks(self, rank: int) -> list[int] | None:
        """Global ranks of stage p-1 (same replica) by window-group rank; None on stage 0."""
        c = self.coords(rank)
        return None if c.pp == 0 else self.stage_ranks(c.dp, c.pp - 1)

    # ---- compatibility with the grid and the model --------------------------------------
    def validate(self, H: int, W: int, ws_h: int, ws_w: int, heads: int | None = None) -> WindowLayout:
        """The WindowLayout of this mesh on an H x W grid with ws_h x ws_w windows.

        Raises LayoutError (a ValueError) when (wy, wx, sp) do not divide the window grid or the
        window, and MeshError when ``heads`` is not divisible by sp (Ulysses splits heads).
        """
        layout = WindowLayout(H, W, ws_h, ws_w, self.wy, self.wx, self.sp)
        if heads is not None and heads % self.sp:
            raise MeshError(f"heads={heads} is not divisible by sp={self.sp} "
                            "(Ulysses gives every sequence rank heads/sp whole heads)")
        return layout


class SwipeMesh:
    """A named DeviceMesh ("dp", "pp", "wy", "wx", "sp") and the derived process groups.

    Build it with ``SwipeMesh.build`` on every rank (after ``init_process_group``). Attributes:
    ``shape`` (MeshShape), ``device_mesh``, ``rank`` (global), ``coords``, ``window_rank``, and
    groups ``sp_group``, ``dp_group``, ``pp_group`` (DeviceMesh dims), ``window_group``,
    ``weight_group`` (new_subgroups_by_enumeration) and ``weight_mesh`` (the weight group as a
    1-D DeviceMesh, for sharding a stage's state over it); ``next_stage_ranks`` /
    ``prev_stage_ranks`` (global ranks of the neighbouring stages by window-group rank).
    """

    def __init__(self, shape: MeshShape, device_mesh, window_group, weight_group, rank: int):
        from torch.distributed.device_mesh import DeviceMesh  # torch.distributed only for a live mesh

        self.shape = shape
        self.device_mesh = device_mesh
        self.rank = rank
        self.coords = shape.coords(rank)
        self.window_rank = shape.window_rank(rank)
        self.sp_group = device_mesh.get_group("sp")
        self.dp_group = device_mesh.get_group("dp")
        self.pp_group = device_mesh.get_group("pp")
        self.window_group = window_group
        self.weight_group = weight_group
        self.weight_mesh = DeviceMesh.from_group(weight_group, device_mesh.device_type,
                                                 mesh_dim_names=("weight",))
        self.next_stage_ranks = shape.next_stage_ranks(rank)
        self.prev_stage_ranks = shape.prev_stage_ranks(rank)

    @classmethod
    def build(cls, dp: int = 1, pp: int = 1, wy: int = 1, wx: int = 1, sp: int = 1,
              device_type: str = "cpu") -> "SwipeMesh":
        """Collective: every rank of the default group must call it with the same arguments."""
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        shape = MeshShape(dp, pp, wy, wx, sp)
        if not dist.is_initialized():
            raise MeshError("torch.distributed is not initialised: call swipe.launch.init_distributed() first")
        shape.check_world(dist.get_world_size())
        device_mesh = init_device_mesh(device_type, shape.sizes, mesh_dim_names=DIMS)
        # every rank creates every subgroup, in the same order (new_group is collective)
        window_group, _ = dist.new_subgroups_by_enumeration(shape.window_groups())
        weight_group, _ = dist.new_subgroups_by_enumeration(shape.weight_groups())
        return cls(shape, device_mesh, window_group, weight_group, dist.get_rank())

    def layout(self, H: int, W: int, ws_h: int, ws_w: int, heads: int | None = None) -> WindowLayout:
        """``shape.validate``: the WindowLayout this mesh runs, with the same clear errors."""
        return self.shape.validate(H, W, ws_h, ws_w, heads)

    def __repr__(self) -> str:
        s = self.shape
        return (f"SwipeMesh(dp={s.dp}, pp={s.pp}, wy={s.wy}, wx={s.wx}, sp={s.sp}; rank {self.rank} "
                f"at {tuple(self.coords)})")

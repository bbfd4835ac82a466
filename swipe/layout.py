"""Pure index maths of the SWiPe layout: windows, frames, pieces, index maps, shift routes.

Everything here is integer arithmetic on numpy arrays; no process group, no torch.

Conventions (docs/layout.md, "Grid, windows and frames"):

* Field of H x W tokens, global token id ``g = y * W + x``.
* Windows of ws_h x ws_w; window (i, j) covers rows ``i*ws_h ...`` and columns ``j*ws_w ...``
  of the frame.
* Frame 0 = unshifted. Frame 1 = the field rolled by (-ws_h/2, -ws_w/2), i.e. exactly
  ``torch.roll(x, (-ws_h//2, -ws_w//2), dims=(y, x))`` followed by window partition: token
  at frame-1 position (y', x') is global token ((y' + ws_h/2) % H, (x' + ws_w/2) % W).
* Window (i, j) belongs to window rank (i mod WPy, j mod WPx) (strided); its local window
  index is (i div WPy, j div WPx), row-major.
* Tokens inside a window are quadrant-major: TL, TR, BL, BR quadrants of (ws_h/2 x ws_w/2),
  row-major inside each.
* The window's tokens are cut into ``sp`` contiguous pieces; sequence rank s holds piece s
  of every local window.
* Rank within the window group: ``r = (wy * WPx + wx) * sp + s`` (sp innermost).

``index_map(frame, r)`` returns the global token ids of rank r in local storage order,
shape (n_local_windows, tokens_per_piece). Any per-token quantity of any layout is a gather
``global[..., index_map(frame, r)]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["WindowLayout", "Message", "Route", "LayoutError", "quadrant_major_coords", "latitude_wrap_mask"]


class LayoutError(ValueError):
    """A layout that cannot be built (grid not divisible, unsupported sp, ...)."""


def quadrant_major_coords(ws_h: int, ws_w: int) -> np.ndarray:
    """In-window (row, col) of each position in quadrant-major order, shape (ws_h*ws_w, 2)."""
    qh, qw = ws_h // 2, ws_w // 2
    r, c = np.meshgrid(np.arange(qh), np.arange(qw), indexing="ij")
    r, c = r.ravel(), c.ravel()
    quads = [(0, 0), (0, qw), (qh, 0), (qh, qw)]  # TL, TR, BL, BR
    return np.concatenate([np.stack([r + dr, c + dc], axis=1) for dr, dc in quads]).astype(np.int64)


@dataclass(frozen=True)
class Message:
    """Tokens moved from one rank to another when changing frame.

    The sender sends ``x[src_slots]`` (flat slots of its (n_local_windows*tokens_per_piece)
    storage, in this order); the receiver writes them to ``y[dst_slots]``.
    """

    src: int
    dst: int
    src_slots: np.ndarray
    dst_slots: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.src_slots.size)


@dataclass(frozen=True)
class Route:
    """All messages of a frame change ``src_frame -> dst_frame`` within one window group."""

    src_frame: int
    dst_frame: int
    messages: tuple[Message, ...]

    def sends(self, rank: int) -> list[Message]:
        return [m for m in self.messages if m.src == rank]

    def recvs(self, rank: int) -> list[Message]:
        return [m for m in self.messages if m.dst == rank]

    def inverse(self) -> "Route":
        """The route back: every message reversed (used for gradients)."""
        msgs = tuple(Message(m.dst, m.src, m.dst_slots, m.src_slots) for m in self.messages)
        return Route(self.dst_frame, self.src_frame, tuple(sorted(msgs, key=lambda m: (m.src, m.dst))))


@dataclass(frozen=True)
class WindowLayout:
    """How the windows and their tokens of an H x W field are spread over WPy*WPx*sp ranks."""

    H: int
    W: int
    ws_h: int
    ws_w: int
    wpy: int = 1
    wpx: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        H, W, wh, ww = self.H, self.W, self.ws_h, self.ws_w
        if min(H, W, wh, ww, self.wpy, self.wpx, self.sp) < 1:
            raise LayoutError(f"all layout sizes must be positive, got {self}")
        if wh % 2 or ww % 2:
            raise LayoutError(f"window {wh}x{ww}: both sides must be even (half-window shift)")
        if H % wh or W % ww:
            raise LayoutError(
                f"grid {H}x{W} is not divisible by the window {wh}x{ww} "
                f"(need H % {wh} == 0 and W % {ww} == 0)")
        if self.n_windows_y % self.wpy or self.n_windows_x % self.wpx:
            raise LayoutError(
                f"window grid {self.n_windows_y}x{self.n_windows_x} is not divisible by the "
                f"window-parallel grid wy={self.wpy} x wx={self.wpx}")
        if not (self.sp in (1, 2) or self.sp % 4 == 0):
            raise LayoutError(f"sp={self.sp}: sequence parallelism supports sp in {{1, 2}} or a multiple of 4")
        if (wh * ww) % self.sp:
            raise LayoutError(f"window of {wh * ww} tokens cannot be cut into sp={self.sp} equal pieces")

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def n_windows_y(self) -> int:
        return self.H // self.ws_h

    @property
    def n_windows_x(self) -> int:
        return self.W // self.ws_w

    @property
    def n_local_windows_y(self) -> int:
        return self.n_windows_y // self.wpy

    @property
    def n_local_windows_x(self) -> int:
        return self.n_windows_x // self.wpx

    @property
    def n_local_windows(self) -> int:
        return self.n_local_windows_y * self.n_local_windows_x

    @property
    def window_tokens(self) -> int:
        return self.ws_h * self.ws_w

    @property
    def tokens_per_piece(self) -> int:
        return self.window_tokens // self.sp

    @property
    def tokens_per_rank(self) -> int:
        return self.n_local_windows * self.tokens_per_piece

    @property
    def n_ranks(self) -> int:
        """Ranks in one window group (wy * wx * sp)."""
        return self.wpy * self.wpx * self.sp

    def shift(self, frame: int) -> tuple[int, int]:
        """Roll offset (rows, cols) of a frame: frame 1 starts half a window down/right."""
        _check_frame(frame)
        return (self.ws_h // 2, self.ws_w // 2) if frame else (0, 0)

    # ---- rank numbering ------------------------------------------------------------------
    def rank_coords(self, r: int) -> tuple[int, int, int]:
        """(wy, wx, s) of window-group rank r."""
        if not 0 <= r < self.n_ranks:
            raise LayoutError(f"rank {r} out of range for {self.n_ranks} window-group ranks")
        s = r % self.sp
        w = r // self.sp
        return w // self.wpx, w % self.wpx, s

    def rank_index(self, wy: int, wx: int, s: int) -> int:
        return (wy * self.wpx + wx) * self.sp + s

    # ---- token maps ----------------------------------------------------------------------
    @cached_property
    def window_coords(self) -> np.ndarray:
        """In-window (row, col) of each quadrant-major position, shape (ws_h*ws_w, 2)."""
        return quadrant_major_coords(self.ws_h, self.ws_w)

    def piece_coords(self, s: int) -> np.ndarray:
        """In-window (row, col) of the positions of piece s, shape (tokens_per_piece, 2)."""
        t = self.tokens_per_piece
        return self.window_coords[s * t:(s + 1) * t]

    def window_ids(self, frame: int, wy: int, wx: int) -> np.ndarray:
        """Global token ids of the whole local windows of window rank (wy, wx) (all pieces),
        shape (n_local_windows, ws_h*ws_w), quadrant-major inside each window."""
        oy, ox = self.shift(frame)
        li, lj = np.meshgrid(np.arange(self.n_local_windows_y), np.arange(self.n_local_windows_x),
                             indexing="ij")
        i = (li.ravel() * self.wpy + wy)[:, None]
        j = (lj.ravel() * self.wpx + wx)[:, None]
        rc = self.window_coords
        y = (i * self.ws_h + rc[None, :, 0] + oy) % self.H
        x = (j * self.ws_w + rc[None, :, 1] + ox) % self.W
        return (y * self.W + x).astype(np.int64)

    def index_map(self, frame: int, r: int) -> np.ndarray:
        """Global token ids held by rank r in frame `frame`, shape (n_local_windows, tokens_per_piece)."""
        wy, wx, s = self.rank_coords(r)
        t = self.tokens_per_piece
        return self.window_ids(frame, wy, wx)[:, s * t:(s + 1) * t]

    def index_maps(self, frame: int) -> list[np.ndarray]:
        """`index_map(frame, r)` for every rank r of the window group."""
        return [self.index_map(frame, r) for r in range(self.n_ranks)]

    def owner(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """For every global token id: (rank holding it, flat slot in that rank's storage)."""
        rank = np.empty(self.H * self.W, dtype=np.int64)
        slot = np.empty(self.H * self.W, dtype=np.int64)
        for r, g in enumerate(self.index_maps(frame)):
            g = g.ravel()
            rank[g] = r
            slot[g] = np.arange(g.size)
        return rank, slot

    # ---- frame changes -------------------------------------------------------------------
    def route(self, src_frame: int, dst_frame: int) -> Route:
        """Messages that move every token from its slot in `src_frame` to its slot in `dst_frame`.

        Token g held at (r, slot) in the source frame goes to the unique (r', slot') with
        ``index_map(dst_frame, r').ravel()[slot'] == g``.
        """
        _check_frame(src_frame)
        _check_frame(dst_frame)
        dst_rank, dst_slot = self.owner(dst_frame)
        msgs = []
        for r, g in enumerate(self.index_maps(src_frame)):
            g = g.ravel()
            to = dst_rank[g]
            for rp in np.unique(to):
                sel = np.nonzero(to == rp)[0]
                msgs.append(Message(r, int(rp), sel, dst_slot[g[sel]]))
        return Route(src_frame, dst_frame, tuple(msgs))

    # ---- whole-field helpers (tests, I/O, inference output) ------------------------------
    def scatter(self, field: np.ndarray, frame: int) -> list[np.ndarray]:
        """Cut a field (..., H, W) into every rank's local storage (..., n_lw, tokens_per_piece)."""
        flat = np.asarray(field).reshape(*np.shape(field)[:-2], self.H * self.W)
        return [flat[..., g] for g in self.index_maps(frame)]

    def assemble(self, pieces: list[np.ndarray], frame: int) -> np.ndarray:
        """Inverse of `scatter`: every rank's storage (..., n_lw, tpp) -> field (..., H, W)."""
        lead = pieces[0].shape[:-2]
        out = np.empty((*lead, self.H * self.W), dtype=pieces[0].dtype)
        for g, p in zip(self.index_maps(frame), pieces):
            out[..., g.ravel()] = p.reshape(*lead, -1)
        return out.reshape(*lead, self.H, self.W)


def _check_frame(frame: int) -> None:
    if frame not in (0, 1):
        raise LayoutError(f"frame must be 0 (unshifted) or 1 (shifted), got {frame!r}")


def latitude_wrap_mask(layout: WindowLayout, frame: int, wy: int, wx: int) -> np.ndarray | None:
    """Attention mask that stops shifted windows from mixing the two poles.

    In frame 1 the windows of the last window row wrap from the bottom rows of the field
    (one pole) to the top rows (the other pole). A token has "wrapped" when its row in the
    rolled frame plus the roll offset passes the last row (it came across the seam); token i
    may attend token j iff both wrapped or neither did.
    Returns a bool array (n_local_windows, T, T) with T = ws_h*ws_w (True = may attend), or
    None when no local window of window rank (wy, wx) wraps (nothing to mask).
    """
    ids = layout.window_ids(frame, wy, wx)
    oy, _ = layout.shift(frame)
    frame_row = (ids // layout.W - oy) % layout.H
    wrapped = frame_row + oy >= layout.H
    allowed = wrapped[:, :, None] == wrapped[:, None, :]
    return None if allowed.all() else allowed

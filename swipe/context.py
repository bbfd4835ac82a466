"""What a window transformer asks of its parallel layout: attend within windows, change frame.

The model never communicates. It holds its tokens as (B, n_local_windows, tokens_per_piece, C)
in the layout's storage order (swipe.layout) and calls:

* ``ctx.token_ids(frame)``     global token ids of its local tokens, (n_lw, tpp) numpy int64;
* ``ctx.piece_coords()``       in-window (row, col) of its local tokens, (tpp, 2) (for RoPE);
* ``ctx.attention(qkv, frame, mask_poles)``  window attention; qkv is q, k, v stacked,
  (B, n_lw, tpp, 3, heads, dh), with ALL heads of the local tokens (stacked so that a
  parallel context moves them in one collective); returns (B, n_lw, tpp, heads, dh);
* ``ctx.change_frame(x, src, dst)``  re-lay tokens (B, n_lw, tpp, C) from frame src to dst.

`SerialContext` (one rank: sp = 1, one window rank) does all of it with local tensor ops; the
SWiPe context (swipe.parallel_context.SwipeContext) does the same with collectives. Same model code either way,
so the serial run IS the reference for the parallel one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from swipe.layout import LayoutError, WindowLayout, latitude_wrap_mask

__all__ = ["WindowContext", "SerialContext", "PoleSplit", "pole_split", "window_attention"]


@dataclass(frozen=True)
class PoleSplit:
    """The pole mask of a rank's local windows as a partition of their tokens.

    Windows ``[start, n)`` wrap across the poles and in each of them the first and the second
    half of the tokens may attend only among themselves; windows ``[0, start)`` wrap nowhere.
    Masked attention over such a window is exactly unmasked attention over its two halves, so
    every window goes through the fused (unmasked) kernel (docs/layout.md, "Pole masks").
    """

    start: int


def pole_split(mask: np.ndarray) -> PoleSplit | None:
    """The `PoleSplit` equal to a bool mask (n, T, T) (True = may attend), or None if the mask
    is not of that form (its wrapping windows are not a contiguous tail of two-halves masks)."""
    mask = np.asarray(mask, dtype=bool)
    n, T, _ = mask.shape
    wraps = ~mask.reshape(n, -1).all(axis=1)
    if not wraps.any() or T % 2:
        return None
    start = int(np.argmax(wraps))
    half = np.arange(T) < T // 2
    if not wraps[start:].all() or not (mask[start:] == (half[:, None] == half[None, :])).all():
        return None
    return PoleSplit(start)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: PoleSplit | torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention inside each window.

    q, k, v: (B, n_windows, T, heads, dh) with all T tokens of each window (any strides: the
    unbound views of a stacked qkv are used as they are). ``mask``:

    * None: every pair attends; one fused SDPA call over all windows;
    * a `PoleSplit`: the windows before ``start`` in one fused call, the wrapping windows as
      twice as many windows of T/2 tokens (their halves) in another; no mask tensor, no
      gather or scatter, the same cost as no mask;
    * a tensor (n_windows, T, T), bool (True = may attend) or additive float: one masked call
      over all windows (the general form; a reference for the split).

    Returns (B, n_windows, T, heads, dh).
    """
    B, n, T, h, dh = q.shape
    if isinstance(mask, PoleSplit):
        s = mask.start
        if not 0 <= s < n or T % 2:
            raise ValueError(f"{mask} does not fit {n} windows of {T} tokens")
        # (B, n-s, T) tokens viewed as (B, 2(n-s), T/2): each half a window of its own
        tail = _sdpa(*(t[:, s:].reshape(B, 2 * (n - s), T // 2, h, dh) for t in (q, k, v)))
        tail = tail.reshape(B, n - s, T, h, dh)
        # cat writes (B, n, T, h, dh) contiguous, so the caller's merge of the heads is a view
        return tail if s == 0 else torch.cat([_sdpa(*(t[:, :s] for t in (q, k, v))), tail], dim=1)
    if mask is not None and tuple(mask.shape) != (n, T, T):
        raise ValueError(f"mask of shape {tuple(mask.shape)} for {n} windows of {T} tokens")
    return _sdpa(q, k, v, mask)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA over (B, n, T, heads, dh) windows -> (B, n, T, heads, dh) (a permuted view)."""
    B, n, T, h, dh = q.shape
    # SDPA wants (batch, heads, T, dh); 4-D inputs take the fused kernels (a view when B == 1
    # or the windows are all of a contiguous storage, a copy otherwise)
    args = [t.permute(0, 1, 3, 2, 4).reshape(B * n, h, T, dh) for t in (q, k, v)]
    if mask is not None:
        mask = mask.to(q.device)[None, :, None].expand(B, n, 1, T, T).reshape(B * n, 1, T, T)
    out = F.scaled_dot_product_attention(*args, attn_mask=mask)
    return out.reshape(B, n, h, T, dh).permute(0, 1, 3, 2, 4)


class WindowContext:
    """Base: the layout maths shared by the serial and the parallel contexts.

    Subclasses provide ``attention`` and ``change_frame``. ``wy, wx, s`` are this rank's
    coordinates in its window group. A context's layout and coordinates never change, so
    whatever a model derives from ``token_ids`` / ``piece_coords`` may be cached per context.
    """

    def __init__(self, layout: WindowLayout, wy: int = 0, wx: int = 0, s: int = 0):
        self.layout = layout
        self.wy, self.wx, self.s = wy, wx, s
        self.rank = layout.rank_index(wy, wx, s)

    def token_ids(self, frame: int) -> np.ndarray:
        return self.layout.index_map(frame, self.rank)

    def piece_coords(self) -> np.ndarray:
        return self.layout.piece_coords(self.s)

    def pole_mask(self, frame: int, device: torch.device | None = None) -> torch.Tensor | None:
        """Bool (n_lw, T, T) mask of this rank's whole local windows, or None if nothing wraps
        (the reference form; attention uses `pole_split`)."""
        m = _cached_mask(self.layout, frame, self.wy, self.wx)
        return None if m is None else m.to(device)

    def pole_split(self, frame: int) -> PoleSplit | None:
        """This rank's pole mask as a `PoleSplit` (``window_attention``'s ``mask``), or None
        if no local window wraps; plain integers, so nothing is copied to any device."""
        return _cached_split(self.layout, frame, self.wy, self.wx)

    def compact_pole_mask(self, frame: int, device: torch.device | None = None) -> tuple[PoleSplit | None]:
        """``(pole_split(frame),)``: the mask argument of ``window_attention`` as a tuple, for
        callers that star-unpack it; ``device`` is unused (a split holds no tensor). New code
        calls `local_attention`."""
        return (self.pole_split(frame),)

    def local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame: int,
                        mask_poles: bool) -> torch.Tensor:
        """`window_attention` over this window rank's whole local windows (B, n_lw, T, heads, dh)
        in ``frame``, with its pole split when ``mask_poles``."""
        return window_attention(q, k, v, self.pole_split(frame) if mask_poles else None)

    def attention(self, qkv, frame: int, mask_poles: bool = False):  # pragma: no cover
        raise NotImplementedError

    def change_frame(self, x, src: int, dst: int):  # pragma: no cover
        raise NotImplementedError


@lru_cache(maxsize=64)
def _cached_mask(layout: WindowLayout, frame: int, wy: int, wx: int) -> torch.Tensor | None:
    m = latitude_wrap_mask(layout, frame, wy, wx)
    return None if m is None else torch.from_numpy(m)


@lru_cache(maxsize=64)
def _cached_split(layout: WindowLayout, frame: int, wy: int, wx: int) -> PoleSplit | None:
    m = _cached_mask(layout, frame, wy, wx)
    if m is None:
        return None
    split = pole_split(m.numpy())
    if split is None:  # the layout's window order (row-major windows, quadrant-major tokens) makes it one
        raise LayoutError(f"the pole mask of window rank ({wy}, {wx}) in frame {frame} of {layout} "
                          "is not a tail of windows cut in two halves")
    return split


@lru_cache(maxsize=64)
def _permutation(layout: WindowLayout, src: int, dst: int, device: torch.device) -> torch.Tensor:
    """Single-rank frame change as a gather: out.flat[j] = x.flat[perm[j]]; on ``device``
    (cached there, so a frame change copies nothing from the host)."""
    (msg,) = layout.route(src, dst).messages
    perm = np.empty(layout.tokens_per_rank, dtype=np.int64)
    perm[msg.dst_slots] = msg.src_slots
    return torch.from_numpy(perm).to(device)


class SerialContext(WindowContext):
    """One rank holds every window whole: local attention, frame change = a permutation."""

    def __init__(self, layout: WindowLayout):
        if layout.n_ranks != 1:
            raise ValueError(
                f"SerialContext needs a one-rank layout (wy = wx = sp = 1), got {layout}")
        super().__init__(layout)

    def attention(self, qkv: torch.Tensor, frame: int, mask_poles: bool = False) -> torch.Tensor:
        """qkv (B, n_lw, T, 3, heads, dh) -> (B, n_lw, T, heads, dh): every window is local."""
        return self.local_attention(*qkv.unbind(dim=3), frame, mask_poles)

    def change_frame(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        if src == dst:
            return x
        B, n, t, C = x.shape
        perm = _permutation(self.layout, src, dst, x.device)
        return x.reshape(B, n * t, C)[:, perm].reshape(B, n, t, C)

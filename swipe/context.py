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

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from swipe.layout import WindowLayout, latitude_wrap_mask

__all__ = ["WindowContext", "SerialContext", "window_attention", "wrapping_windows"]


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None = None,
                     masked_windows: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention inside each window.

    q, k, v: (B, n_windows, T, heads, dh) with all T tokens of each window;
    mask: optional bool, True = may attend: either (n_windows, T, T) for every window, or, with
    ``masked_windows`` (int64 indices of the windows that need a mask), (len(masked_windows), T, T)
    for those windows only (compact: at 0.25 deg only the last window row wraps).
    Returns (B, n_windows, T, heads, dh).
    """
    B, n, T, h, dh = q.shape
    # SDPA wants (batch, heads, T, dh); 4-D inputs without a mask take the fused kernels
    qh, kh, vh = (t.permute(0, 1, 3, 2, 4) for t in (q, k, v))
    idx = compact = None
    if mask is not None:
        if masked_windows is None:
            idx = wrapping_windows(mask).cpu()
            compact = mask.index_select(0, idx.to(mask.device))
        else:
            idx, compact = masked_windows.cpu(), mask
    if idx is None or idx.numel() == 0:
        out = F.scaled_dot_product_attention(*(t.reshape(B * n, h, T, dh) for t in (qh, kh, vh)))
        out = out.reshape(B, n, h, T, dh)
    else:
        # only the windows that wrap across the poles need the (slower) masked kernel; each
        # window is computed exactly once
        keep = torch.ones(n, dtype=torch.bool)
        keep[idx] = False
        keep = torch.nonzero(keep).flatten()
        out = qh.new_zeros(B, n, h, T, dh)
        for sel, m in ((keep, None), (idx, compact)):
            if sel.numel() == 0:
                continue
            k_ = sel.numel()
            sel = sel.to(q.device)
            args = [t.index_select(1, sel).reshape(B * k_, h, T, dh) for t in (qh, kh, vh)]
            attn_mask = None if m is None else \
                m.to(q.device)[None, :, None].expand(B, k_, 1, T, T).reshape(B * k_, 1, T, T)
            part = F.scaled_dot_product_attention(*args, attn_mask=attn_mask)
            out = out.index_copy(1, sel, part.reshape(B, k_, h, T, dh))
    return out.permute(0, 1, 3, 2, 4)


def wrapping_windows(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the windows of a (n_windows, T, T) mask that forbid some pair."""
    return torch.nonzero(~mask.reshape(mask.shape[0], -1).all(dim=1)).flatten()


class WindowContext:
    """Base: the layout maths shared by the serial and the parallel contexts.

    Subclasses provide ``attention`` and ``change_frame``. ``wy, wx, s`` are this rank's
    coordinates in its window group.
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
        """Bool (n_lw, T, T) mask of this rank's whole local windows, or None if nothing wraps."""
        m = _cached_mask(self.layout, frame, self.wy, self.wx)
        return None if m is None else m.to(device)

    def masked_windows(self, frame: int) -> torch.Tensor | None:
        """Local windows whose pole mask forbids some pair (int64, CPU), or None."""
        m = _cached_mask(self.layout, frame, self.wy, self.wx)
        return None if m is None else _cached_wrapping(self.layout, frame, self.wy, self.wx)

    def compact_pole_mask(self, frame: int, device: torch.device | None = None):
        """(masks of the wrapping windows only, on `device`; their indices) or (None, None),
        cached per device so the attention hot path copies nothing."""
        return _cached_compact(self.layout, frame, self.wy, self.wx, str(torch.device(device or "cpu")))

    def attention(self, qkv, frame: int, mask_poles: bool = False):  # pragma: no cover
        raise NotImplementedError

    def change_frame(self, x, src: int, dst: int):  # pragma: no cover
        raise NotImplementedError


@lru_cache(maxsize=64)
def _cached_mask(layout: WindowLayout, frame: int, wy: int, wx: int) -> torch.Tensor | None:
    m = latitude_wrap_mask(layout, frame, wy, wx)
    return None if m is None else torch.from_numpy(m)


@lru_cache(maxsize=64)
def _cached_compact(layout: WindowLayout, frame: int, wy: int, wx: int, device: str):
    m = _cached_mask(layout, frame, wy, wx)
    if m is None:
        return None, None
    idx = _cached_wrapping(layout, frame, wy, wx)
    return m.index_select(0, idx).to(device), idx


@lru_cache(maxsize=64)
def _cached_wrapping(layout: WindowLayout, frame: int, wy: int, wx: int) -> torch.Tensor:
    return wrapping_windows(_cached_mask(layout, frame, wy, wx))


@lru_cache(maxsize=64)
def _permutation(layout: WindowLayout, src: int, dst: int) -> torch.Tensor:
    """Single-rank frame change as a gather: out.flat[j] = x.flat[perm[j]]."""
    (msg,) = layout.route(src, dst).messages
    perm = np.empty(layout.tokens_per_rank, dtype=np.int64)
    perm[msg.dst_slots] = msg.src_slots
    return torch.from_numpy(perm)


class SerialContext(WindowContext):
    """One rank holds every window whole: local attention, frame change = a permutation."""

    def __init__(self, layout: WindowLayout):
        if layout.n_ranks != 1:
            raise ValueError(
                f"SerialContext needs a one-rank layout (wy = wx = sp = 1), got {layout}")
        super().__init__(layout)

    def attention(self, qkv, frame: int, mask_poles: bool = False):
        q, k, v = qkv.unbind(dim=3)
        if not mask_poles:
            return window_attention(q, k, v)
        return window_attention(q, k, v, *self.compact_pole_mask(frame, q.device))

    def change_frame(self, x: torch.Tensor, src: int, dst: int) -> torch.Tensor:
        if src == dst:
            return x
        B, n, t, C = x.shape
        perm = _permutation(self.layout, src, dst).to(x.device)
        return x.reshape(B, n * t, C)[:, perm].reshape(B, n, t, C)

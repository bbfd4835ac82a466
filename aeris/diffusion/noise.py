"""Layout-independent random numbers: per-window noise and per-sample noise levels.

Every random draw comes from a `torch.Generator` seeded by a stable hash of integer keys
(e.g. (seed, step, sample) in training, (seed, init_time, member, sampler_step) in sampling),
so a value never depends on which rank draws it (docs/training.md, "Keyed noise"):

* noise: the WHOLE window's (ws_h*ws_w, C) standard normal block, in quadrant-major order,
  for the window's GLOBAL id in frame 0 (i * n_windows_x + j); each rank then keeps its piece.
* sigma: one per sample, keyed by the sample's keys, so every rank of that sample agrees.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Sequence

import numpy as np
import torch

from swipe.layout import WindowLayout

__all__ = ["key_seed", "keyed_generator", "window_noise", "members_noise", "field_noise",
           "sample_sigma", "sample_sigmas"]


def key_seed(tag: str, keys: Sequence[int]) -> int:
    """Stable 63-bit seed from a tag and a tuple of integers (blake2b; not Python's hash)."""
    parts = []
    for k in keys:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Integral, np.integer)):
            raise TypeError(f"random-stream keys must be integers, got {k!r} in {tuple(keys)}")
        parts.append(str(int(k)))
    digest = hashlib.blake2b(f"{tag}|{','.join(parts)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(tag: str, keys: Sequence[int]) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(key_seed(tag, keys))
    return g


def window_noise(layout: WindowLayout, rank: int, keys: Sequence[int], n_channels: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise of rank `rank`'s tokens in frame 0, shape (n_lw, tpp, C).

    Window (i, j) draws its (ws_h*ws_w, C) block from keyed_generator("noise", keys + (i*nwx + j,))
    in quadrant-major order; the rank keeps piece s. Equal to slicing `field_noise` with the
    layout's index map, for any (wy, wx, sp).
    """
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    wy, wx, s = layout.rank_coords(rank)
    t = layout.tokens_per_piece
    out = torch.empty(layout.n_local_windows, t, n_channels, dtype=dtype)
    for li in range(layout.n_local_windows_y):
        for lj in range(layout.n_local_windows_x):
            gid = (li * layout.wpy + wy) * layout.n_windows_x + (lj * layout.wpx + wx)
            gen = keyed_generator("noise", (*keys, gid))
            block = torch.randn(layout.window_tokens, n_channels, generator=gen, dtype=torch.float64)
            out[li * layout.n_local_windows_x + lj] = block[s * t:(s + 1) * t].to(dtype)
    return out


def members_noise(layout: WindowLayout, rank: int, keys_per_member: Sequence[Sequence[int]],
                  n_channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`window_noise` for a batch: one key tuple per batch entry -> (B, n_lw, tpp, C)."""
    return torch.stack([window_noise(layout, rank, k, n_channels, dtype) for k in keys_per_member])


def field_noise(layout: WindowLayout, keys: Sequence[int], n_channels: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The whole field's noise (C, H, W) (serial reference; depends only on the window size)."""
    serial = WindowLayout(layout.H, layout.W, layout.ws_h, layout.ws_w)
    tok = window_noise(serial, 0, keys, n_channels, dtype)  # (n_windows, T, C)
    ids = serial.index_map(0, 0).ravel()
    out = torch.empty(layout.H * layout.W, n_channels, dtype=dtype)
    out[torch.from_numpy(ids)] = tok.reshape(-1, n_channels)
    return out.T.reshape(n_channels, layout.H, layout.W)


def sample_sigma(generator: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """n noise levels log-uniform on [lo, hi]: sigma = exp(U(log lo, log hi)), float64 (n,)."""
    if not 0 < lo <= hi:
        raise ValueError(f"sample_sigma needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def sample_sigmas(keys_per_sample: Sequence[Sequence[int]], lo: float, hi: float) -> torch.Tensor:
    """One sigma per sample, each from keyed_generator("sigma", keys): every rank of a sample agrees."""
    return torch.cat([sample_sigma(keyed_generator("sigma", k), 1, lo, hi) for k in keys_per_sample])

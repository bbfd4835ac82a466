"""Building blocks of the AERIS network: norms, SwiGLU, adaLN modulation, RoPE, embeddings.

Token tensors are (B, n_windows, tokens, C) (swipe.layout storage order); everything here is
per token except attention, which goes through the window context. Tables derived from a
context's fixed token layout (RoPE cos/sin, the position encoding) are built once per
context, device and dtype (`context_constant`), so a step copies nothing from the host.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Hashable, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import SwiGLU
from torch import nn

__all__ = ["RMSNorm", "SwiGLU", "Modulation", "WindowAttention", "modulate", "axial_rope_angles",
           "rope_tables", "apply_rope", "timestep_embedding", "sincos_1d", "periodic_sincos",
           "position_embedding_2d", "init_linear", "swiglu", "default_std", "compute_dtype",
           "context_constant"]

_T = TypeVar("_T")
_PER_CONTEXT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def context_constant(ctx, key: Hashable, build: Callable[[], _T]) -> _T:
    """``build()`` once per (window context, key), kept while the context lives.

    A context's ``token_ids`` and ``piece_coords`` never change (swipe.context), so a table
    derived from them is a constant of the context; ``key`` names the table and everything
    else it depends on (sizes, device, dtype). Keyed by the context object itself: a context
    whose coordinates differ (another rank, a subclass) never shares an entry. Built outside
    inference mode, so a table first made by an inference pass can be saved for backward later.
    """
    per = _PER_CONTEXT.get(ctx)
    if per is None:
        per = _PER_CONTEXT.setdefault(ctx, {})
    if key not in per:
        with torch.inference_mode(False):
            per[key] = build()
    return per[key]


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """dtype of what a float32 layer computes: the autocast dtype when autocast is on for the
    weight's device, the weight's dtype otherwise."""
    dev = weight.device.type
    if weight.dtype == torch.float32 and dev != "meta" and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dim (torch's fused ``rms_norm``).

    The gain (``weight``, initialised to 1) is cast to the input's dtype, so bf16 activations
    take the fused kernel rather than the unfused mixed-dtype fallback.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        return F.rms_norm(x, w.shape, w, self.eps)


def init_linear(layer: nn.Linear, std: float) -> None:
    """Truncated normal N(0, std^2) cut at +-2 std; bias zero."""
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift; shift/scale (B, C) broadcast over (B, ..., C)."""
    expand = (slice(None),) + (None,) * (x.dim() - 2)
    return x * (1 + scale[expand]) + shift[expand]


def swiglu(x: torch.Tensor, w_g: torch.Tensor, w_x: torch.Tensor, w_o: torch.Tensor) -> torch.Tensor:
    """Reference maths of SwiGLU without bias: (silu(x W_g^T) * (x W_x^T)) W_o^T."""
    return (torch.nn.functional.silu(x @ w_g.T) * (x @ w_x.T)) @ w_o.T


class Modulation(nn.Module):
    """Per-block conditioning c (B, d) -> n_out * d modulation parameters (adaLN-Zero).

    hidden=True: Linear(d,d)-SiLU-Linear(d, n*d) (AERIS); hidden=False: Linear(d, n*d).
    The last layer is zero-initialised, so every gate/shift/scale starts at 0.
    """

    def __init__(self, dim: int, n_out: int, hidden: bool, std: float):
        super().__init__()
        self.n_out = n_out
        self.hidden = nn.Linear(dim, dim) if hidden else None
        self.out = nn.Linear(dim, n_out * dim)
        if self.hidden is not None:
            init_linear(self.hidden, std)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.hidden is not None:
            c = nn.functional.silu(self.hidden(c))
        return self.out(c).chunk(self.n_out, dim=-1)


# ---- rotary position embedding ---------------------------------------------------------------
def axial_rope_angles(coords: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Rotation angles of 2-D axial RoPE, shape (T, head_dim/2).

    coords: (T, 2) in-window (row, col). With n = head_dim/4 frequencies
    f_k = theta^(-k/n), k < n, angles = [row * f_0..f_{n-1}, col * f_0..f_{n-1}]: the first
    half of the rotated pairs encodes the row, the second half the column.
    """
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs head_dim % 4 == 0, got {head_dim}")
    n = head_dim // 4
    freqs = theta ** (-torch.arange(n, dtype=torch.float64, device=coords.device) / n)
    c = coords.to(torch.float64)
    return torch.cat([c[:, :1] * freqs, c[:, 1:2] * freqs], dim=-1)


def rope_tables(coords: np.ndarray, head_dim: int, theta: float, dtype: torch.dtype,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of 2-D axial RoPE, each (T, head_dim), for `apply_rope`.

    With a = axial_rope_angles(coords) (T, dh/2): cos = [cos a, cos a], sin = [-sin a, sin a].
    Built in float64 on the host, then cast and moved once (no float64 on the device).
    """
    a = axial_rope_angles(torch.as_tensor(np.asarray(coords)), head_dim, theta)
    cos, sin = a.cos(), a.sin()
    return (torch.cat([cos, cos], dim=-1).to(device=device, dtype=dtype),
            torch.cat([-sin, sin], dim=-1).to(device=device, dtype=dtype))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x_i, x_{i+dh/2}) of x (..., dh) by the angles of `rope_tables`.

    out = x * cos + [x_{dh/2:}, x_{:dh/2}] * sin, i.e. (x1 cos a - x2 sin a, x1 sin a + x2 cos a);
    cos, sin broadcast against x. <R(a) q, R(b) k> depends only on b - a, so scores depend on
    the relative in-window position.
    """
    half = x.shape[-1] // 2
    return x * cos + torch.cat([x[..., half:], x[..., :half]], dim=-1) * sin


class WindowAttention(nn.Module):
    """qkv (no bias) -> 2-D RoPE on in-window coords -> ctx.attention -> output projection.

    RoPE is per token, so applying it before ``ctx.attention`` is valid whatever piece of the
    window this rank holds (sp > 1). Its tables are constants of the context (`context_constant`).
    """

    def __init__(self, dim: int, heads: int, rope: bool, rope_theta: float, std: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.rope, self.rope_theta = rope, rope_theta
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        init_linear(self.qkv, std)
        init_linear(self.proj, std)

    def rope_tables(self, ctx, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...] | None:
        """(cos, sin) of this rank's tokens, each (tpp, 1, 1, dh) to broadcast over
        (B, n_lw, tpp, 2, heads, dh); None without RoPE. Built once per context, device, dtype."""
        if not self.rope:
            return None

        def build():
            cos, sin = rope_tables(ctx.piece_coords(), self.head_dim, self.rope_theta, dtype, device)
            return cos[:, None, None], sin[:, None, None]

        return context_constant(ctx, ("rope", self.head_dim, self.rope_theta, device, dtype), build)

    def qkv_rope(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """x (B, n, t, d) -> q, k, v stacked (B, n, t, 3, heads, dh), q and k rotated together."""
        B, n, t, _ = x.shape
        qkv = self.qkv(x).view(B, n, t, 3, self.heads, self.head_dim)
        if rope is None:
            return qkv
        return torch.cat([apply_rope(qkv[:, :, :, :2], *rope), qkv[:, :, :, 2:]], dim=3)

    def forward(self, x: torch.Tensor, ctx, frame: int, mask_poles: bool) -> torch.Tensor:
        B, n, t, d = x.shape
        qkv = self.qkv_rope(x, self.rope_tables(ctx, x.device, compute_dtype(self.qkv.weight)))
        o = ctx.attention(qkv, frame, mask_poles=mask_poles)
        return self.proj(o.reshape(B, n, t, d))


# ---- fixed sinusoidal embeddings -------------------------------------------------------------
def sincos_1d(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoid: [sin(p w_k), cos(p w_k)], w_k = base^(-k/(dim/2)); (N,) -> (N, dim)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    half = dim // 2
    w = base ** (-torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    a = pos.to(torch.float64)[:, None] * w
    return torch.cat([a.sin(), a.cos()], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int, scale: float,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed (parameter-free) embedding of the TrigFlow time: sincos_1d(scale * t), (B,) -> (B, dim)."""
    return sincos_1d(t.to(torch.float64) * scale, dim).to(dtype)


def periodic_sincos(pos: torch.Tensor, dim: int, period: int) -> torch.Tensor:
    """Sinusoid on a circle of ``period`` points: [sin(2 pi m_k p / P), cos(2 pi m_k p / P)],
    (N,) -> (N, dim), with the harmonics m_k = 1 + (k mod M), k < dim/2, M = max(1, (P-1) // 2)
    (every whole number of cycles below the Nyquist rate, repeated if dim/2 > M).

    Exactly periodic: the phase m p is reduced mod P before the sine, so p and p + P give the
    same row (to the bit for integer p), and rows at distance 1 across the seam are as far
    apart as anywhere.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    m = 1 + torch.arange(dim // 2, dtype=torch.float64, device=pos.device) % max(1, (period - 1) // 2)
    a = torch.remainder(pos.to(torch.float64)[:, None] * m, period) * (2 * math.pi / period)
    return torch.cat([a.sin(), a.cos()], dim=-1)


def position_embedding_2d(token_ids: np.ndarray, W: int, dim: int, dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2-D sinusoidal encoding of the GLOBAL (y, x) of each token id g = y*W + x.

    First dim/2 channels: sincos_1d(y) (latitude); last dim/2: periodic_sincos(x, period W)
    (longitude wraps). (...) ids -> (..., dim), on ``device`` in ``dtype``.
    """
    if dim % 4:
        raise ValueError(f"2-D position embedding needs dim % 4 == 0, got {dim}")
    g = np.asarray(token_ids, dtype=np.int64)
    # float64 tables of the distinct rows/columns only, built on the host and moved in the
    # target dtype, gathered on the device: host memory (H + W) x dim, not T x dim
    ys, iy = np.unique(g.ravel() // W, return_inverse=True)
    xs, ix = np.unique(g.ravel() % W, return_inverse=True)

    def table(t: torch.Tensor, inv: np.ndarray) -> torch.Tensor:
        return t.to(device=device, dtype=dtype)[torch.as_tensor(inv.ravel(), device=device)]

    emb = torch.cat([table(sincos_1d(torch.as_tensor(ys), dim // 2), iy),
                     table(periodic_sincos(torch.as_tensor(xs), dim // 2, W), ix)], dim=-1)
    return emb.reshape(*g.shape, dim)


def default_std(dim: int) -> float:
    """Small init (docs/model.md, "Initialisation"): sqrt(2 / (5 d))."""
    return math.sqrt(2.0 / (5.0 * dim))

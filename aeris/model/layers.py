"""Building blocks of the AERIS network: norms, SwiGLU, adaLN modulation, RoPE, embeddings.

Token tensors are (B, n_windows, tokens, C) (swipe.layout storage order); everything here is
per token except attention, which goes through the window context.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.layers import RmsNorm, SwiGLU
from torch import nn

__all__ = ["RmsNorm", "SwiGLU", "Modulation", "WindowAttention", "modulate", "axial_rope_angles",
           "apply_rope", "timestep_embedding", "sincos_1d", "position_embedding_2d", "init_linear",
           "swiglu", "default_std"]


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


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+dh/2}) of x (..., T, heads, dh) by angles (T, dh/2).

    <R(a) q, R(b) k> depends only on b - a, so scores depend on relative in-window position.
    """
    half = x.shape[-1] // 2
    cos = angles.cos().to(x.dtype)[:, None, :]  # (T, 1, dh/2): broadcast over heads
    sin = angles.sin().to(x.dtype)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class WindowAttention(nn.Module):
    """qkv (no bias) -> 2-D RoPE on in-window coords -> ctx.attention -> output projection.

    RoPE is per token, so applying it before ``ctx.attention`` is valid whatever piece of the
    window this rank holds (sp > 1).
    """

    def __init__(self, dim: int, heads: int, rope: bool, rope_theta: float, std: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.rope, self.rope_theta = rope, rope_theta
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        init_linear(self.qkv, std)
        init_linear(self.proj, std)

    def forward(self, x: torch.Tensor, ctx, frame: int, mask_poles: bool) -> torch.Tensor:
        B, n, t, d = x.shape
        qkv = self.qkv(x).view(B, n, t, 3, self.heads, self.head_dim)
        if self.rope:
            coords = torch.as_tensor(np.asarray(ctx.piece_coords()), device=x.device)
            ang = axial_rope_angles(coords, self.head_dim, self.rope_theta)
            q, k, v = qkv.unbind(dim=3)
            qkv = torch.stack((apply_rope(q, ang), apply_rope(k, ang), v), dim=3)
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


def position_embedding_2d(token_ids: np.ndarray, W: int, dim: int, dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2-D sinusoidal encoding of the GLOBAL (y, x) of each token id g = y*W + x.

    First dim/2 channels: sincos_1d(y); last dim/2: sincos_1d(x). (..., ) ids -> (..., dim).
    """
    if dim % 4:
        raise ValueError(f"2-D position embedding needs dim % 4 == 0, got {dim}")
    g = np.asarray(token_ids, dtype=np.int64)
    # float64 tables of the distinct rows/columns only (built on the target device), gathered in
    # the target dtype: memory T x dim, no host->device copy of a T x dim tensor
    ys, iy = np.unique(g.ravel() // W, return_inverse=True)
    xs, ix = np.unique(g.ravel() % W, return_inverse=True)

    def table(vals, inv):
        t = sincos_1d(torch.as_tensor(vals, device=device), dim // 2).to(dtype)
        return t[torch.as_tensor(inv.ravel(), device=device)]

    emb = torch.cat([table(ys, iy), table(xs, ix)], dim=-1)
    return emb.reshape(*g.shape, dim)


def default_std(dim: int) -> float:
    """Small init (docs/model.md, "Initialisation"): sqrt(2 / (5 d))."""
    return math.sqrt(2.0 / (5.0 * dim))

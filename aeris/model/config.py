"""Configuration of the AERIS network (section ``model`` of a run config; AERIS.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelConfig", "NORM_ORDERS"]

NORM_ORDERS = ("norm_modulate", "modulate_norm")


@dataclass
class ModelConfig:
    """Shape and switches of the pixel-level Swin diffusion transformer.

    ``heads * head_dim == dim`` with ``head_dim = dim // heads`` (128 at scale). The window
    is a model hyper-parameter (the SWiPe layout is built from it); frames alternate every
    ``shift_every`` blocks: frame of block i = (i // shift_every) % 2.
    """

    dim: int = 64
    depth: int = 4
    heads: int = 4
    # SwiGLU hidden width; 0 = 4 * dim
    mlp_hidden: int = 0
    window: list[int] = field(default_factory=lambda: [8, 8])
    shift_every: int = 1
    # "norm_modulate": modulate(RMSNorm(x)) (DiT order, default); "modulate_norm": RMSNorm(modulate(x)) (orig)
    norm_order: str = "norm_modulate"
    # 2-D axial rotary embedding of the in-window (row, col) on q and k
    rope: bool = True
    rope_theta: float = 100.0
    # stop shifted windows from attending across the pole-to-pole wrap
    pole_mask: bool = True
    # per-block modulation MLP Linear(d,d)-SiLU-Linear(d,6d) (true) or a single Linear(d,6d) (false)
    adaln_hidden: bool = True
    # multiplier of the TrigFlow time t in [0, pi/2] before the sinusoidal embedding
    time_scale: float = 1000.0
    norm_eps: float = 1e-6
    # activation checkpointing of every block (recompute in backward)
    checkpoint_blocks: bool = False

    def __post_init__(self) -> None:
        if min(self.dim, self.depth, self.heads, self.shift_every) < 1:
            raise ValueError(f"model.dim/depth/heads/shift_every must be positive, got {self}")
        if self.dim % self.heads:
            raise ValueError(f"model.dim={self.dim} is not divisible by model.heads={self.heads}")
        if self.rope and self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim % 4 == 0, got head_dim={self.head_dim}")
        if self.mlp_hidden < 0:
            raise ValueError(f"model.mlp_hidden must be >= 0 (0 = 4*dim), got {self.mlp_hidden}")
        if len(self.window) != 2 or min(self.window) < 2 or any(w % 2 for w in self.window):
            raise ValueError(f"model.window must be two even sizes [ws_h, ws_w], got {self.window}")
        if self.norm_order not in NORM_ORDERS:
            raise ValueError(f"model.norm_order must be one of {NORM_ORDERS}, got {self.norm_order!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def ffn_dim(self) -> int:
        return self.mlp_hidden or 4 * self.dim

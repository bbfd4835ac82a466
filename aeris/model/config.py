"""Configuration of the AERIS network (section ``model`` of a run config; docs/model.md, "Configuration switches")."""

from __future__ import annotations

from dataclasses import dataclass

from aeris.confdoc import doc

__all__ = ["ModelConfig", "NORM_ORDERS"]

NORM_ORDERS = ("norm_modulate", "modulate_norm")


@dataclass
class ModelConfig:
    """Shape and switches of the pixel-level Swin diffusion transformer.

    The window is a model hyper-parameter (the SWiPe layout is built from it).
    """

    dim: int = doc(64, "token width d; heads * head_dim == dim (head_dim 128 at scale)")
    depth: int = doc(4, "number of transformer blocks")
    heads: int = doc(4, "attention heads; head_dim = dim // heads (a multiple of 4 with rope)")
    mlp_hidden: int = doc(0, "SwiGLU hidden width; 0 = 4 * dim")
    window: list[int] = doc([8, 8], "attention window [ws_h, ws_w], two even sizes")
    shift_every: int = doc(1, "windows shift by half a window every N blocks: frame of block i = (i // N) % 2")
    norm_order: str = doc("norm_modulate", "norm_modulate: modulate(RMSNorm(x)) (DiT order); "
                                           "modulate_norm: RMSNorm(modulate(x)) (the original)")
    rope: bool = doc(True, "2-D axial rotary embedding of the in-window (row, col) on q and k")
    rope_theta: float = doc(100.0, "RoPE base: frequencies theta^(-k/n), n = head_dim / 4")
    pole_mask: bool = doc(True, "stop shifted windows from attending across the pole-to-pole wrap")
    adaln_hidden: bool = doc(True, "per-block modulation MLP Linear(d,d)-SiLU-Linear(d,6d) (true) "
                                   "or a single Linear(d,6d) (false)")
    time_scale: float = doc(1000.0, "multiplier of the TrigFlow time t in [0, pi/2] before the sinusoidal "
                                    "embedding")
    norm_eps: float = doc(1e-6, "RMSNorm epsilon")
    checkpoint_blocks: bool = doc(False, "activation checkpointing of every block (recompute in backward)")
    compile: bool = doc(False, "torch.compile each block's computation before and after ctx.attention; "
                               "attention and the context's collectives stay eager "
                               "(docs/model.md, \"Compiled blocks\")")
    compile_backend: str = doc("inductor", "torch.compile backend of model.compile (inductor needs a C "
                                           "compiler on CPU; aot_eager traces without generating code)")

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

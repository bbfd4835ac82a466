"""FLOP and parameter accounting of the AERIS network (docs/model.md, "FLOP accounting").

Two counts per training sample (forward + backward):

* `paper_flops_per_sample`: the formula the paper used for its EFLOP/s claims,
  F = 6 [L (4 T d^2 + 2 T Lw d + 3 T d_ffn d) + 2 T C d]  (no adaLN, norms, softmax);
* `exact_flops_per_sample`: every matrix multiply the network runs (input embedding, adaLN
  MLPs, qkv, QK^T, AV (the pole windows as two halves), projection, SwiGLU, head modulation,
  output linear), 2 FLOPs per
  multiply-add; backward = 2x forward except the input gradients that are never computed
  (of the data input and of the parameter-free time embedding).
"""

from __future__ import annotations

from aeris.model.config import ModelConfig

__all__ = ["paper_flops_per_sample", "forward_macs", "exact_flops_per_sample", "pole_split_macs", "parameter_count",
           "mfu"]


def paper_flops_per_sample(cfg: ModelConfig, T: int, C_in: int) -> float:
    """AERIS paper formula: 6 [L (4Td^2 + 2T Lw d + 3T d_ffn d) + 2TCd], T tokens, C_in input channels."""
    d, L, Lw = cfg.dim, cfg.depth, cfg.window[0] * cfg.window[1]
    return 6.0 * (L * (4 * T * d * d + 2 * T * Lw * d + 3 * T * cfg.ffn_dim * d) + 2 * T * C_in * d)


def forward_macs(cfg: ModelConfig, T: int, n_in: int, n_out: int) -> dict[str, int]:
    """Multiply-adds of one forward pass of one sample, by kind (all blocks summed)."""
    d, L, f, Lw = cfg.dim, cfg.depth, cfg.ffn_dim, cfg.window[0] * cfg.window[1]
    hid = d * d if cfg.adaln_hidden else 0
    return {
        "embed": T * n_in * d,
        "adaln": L * (hid + 6 * d * d),            # per sample: conditioning is per sample, not per token
        "qkv": L * 3 * T * d * d,
        "attention": L * 2 * T * Lw * d,           # QK^T and AV over Lw window tokens, all heads
        "proj": L * T * d * d,
        "mlp": L * 3 * T * f * d,
        "head_adaln": hid + 2 * d * d,
        "head": T * d * n_out,
    }


def exact_flops_per_sample(model, grid: tuple[int, int] | None = None, training: bool = True) -> int:
    """Every matmul FLOP of one sample through `model` (an AerisNet, may live on the meta device).

    Forward = 2 x MACs. Backward = 2 x forward, minus the input-gradient matmuls that autograd
    skips: the data input of the embedding and the first adaLN layer fed by the fixed time
    embedding (per block and in the head).
    """
    cfg: ModelConfig = model.cfg
    H, W = grid if grid is not None else model.grid
    macs = forward_macs(cfg, H * W, model.n_in, model.n_out)
    macs["attention"] -= pole_split_macs(cfg, W)
    fwd = 2 * sum(macs.values())
    if not training:
        return fwd
    d = cfg.dim
    first_adaln = (d * d, d * d) if cfg.adaln_hidden else (6 * d * d, 2 * d * d)  # (block, head)
    skipped = macs["embed"] + cfg.depth * first_adaln[0] + first_adaln[1]
    return fwd + 2 * fwd - 2 * skipped


def pole_split_macs(cfg: ModelConfig, W: int) -> int:
    """Attention multiply-adds the pole mask saves in one forward: each of the W / ws_w windows
    of the last window row, in every shifted block, attends as two halves of Lw/2 tokens
    (2 (Lw/2)^2 d x 2 instead of Lw^2 d x 2; docs/layout.md, "Pole masks")."""
    if not cfg.pole_mask:
        return 0
    shifted = sum((i // cfg.shift_every) % 2 for i in range(cfg.depth))
    Lw = cfg.window[0] * cfg.window[1]
    return shifted * (W // cfg.window[1]) * Lw * Lw * cfg.dim


def parameter_count(cfg: ModelConfig, n_in: int, n_out: int) -> int:
    """Analytic number of parameters of AerisNet(cfg, n_out, n_in, grid).

    block: 2 RMSNorm gains 2d + qkv 3d^2 + proj d^2 + SwiGLU 3 d d_ffn (no biases)
           + modulation [(d^2 + d) if adaln_hidden] + 6d^2 + 6d;
    embed: n_in d + d; head: gain d + modulation [(d^2 + d)] + 2d^2 + 2d + d n_out + n_out.
    """
    d, f = cfg.dim, cfg.ffn_dim
    hid = d * d + d if cfg.adaln_hidden else 0
    block = 2 * d + 4 * d * d + 3 * d * f + hid + 6 * d * d + 6 * d
    head = d + hid + 2 * d * d + 2 * d + d * n_out + n_out
    return cfg.depth * block + n_in * d + d + head


def mfu(flops_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOP utilisation: achieved / peak FLOP/s (both per device, or both in total)."""
    if peak_flops_per_s <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops_per_s}")
    return flops_per_s / peak_flops_per_s

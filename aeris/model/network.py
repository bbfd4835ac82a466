"""The AERIS network: a non-hierarchical pixel-level Swin transformer with adaLN-Zero.

Tokens are (B, n_local_windows, tokens_per_piece, C) in the storage order of a
`swipe.layout.WindowLayout`; the network asks a window context (swipe.context) for window
attention and frame changes and contains no communication, so the same code runs serially
and under SWiPe (where a rank may hold only a piece of each window).

    forward(x, t) = head(change_frame(... block_i(change_frame(embed(x)), c) ...), c),
    c = time_embedding(t)

Initialisation (docs/model.md, "Initialisation"): linears truncated normal std sqrt(2/(5d)), biases 0,
RMSNorm gains 1; the last layer of every modulation MLP is zero, so every residual gate is 0
and each block starts as the identity (adaLN-Zero); the output Linear is zero, so the network
output is exactly 0 at init while the head weight still receives gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from aeris.model.config import ModelConfig
from aeris.model.layers import (Modulation, RMSNorm, SwiGLU, WindowAttention, compute_dtype, context_constant,
                                default_std, init_linear, modulate, position_embedding_2d, timestep_embedding)
from swipe.pipeline import StagePlan

__all__ = ["AerisNet", "AerisStage", "AerisBlock", "OutputHead", "block_frame", "whole_plan",
           "decay_parameter_names"]


class AerisBlock(nn.Module):
    """x += g1 * Attn(N1(x)); x += g2 * SwiGLU(N2(x)), N = RMSNorm then modulate (or the reverse).

    The block is two pure tensor functions around ``ctx.attention``: `attention_in`
    (modulation, norm, qkv, RoPE) and `attention_out` (projection, residual, MLP). With
    ``cfg.compile`` both run through ``torch.compile`` (docs/model.md, "Compiled blocks");
    attention and whatever the context communicates stay eager.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, std = cfg.dim, default_std(cfg.dim)
        self.norm_order = cfg.norm_order
        self.compile_backend = cfg.compile_backend if cfg.compile else None  # None: eager
        self.norm1 = RMSNorm(d, eps=cfg.norm_eps)
        self.attn = WindowAttention(d, cfg.heads, cfg.rope, cfg.rope_theta, std)
        self.norm2 = RMSNorm(d, eps=cfg.norm_eps)
        self.mlp = SwiGLU(d, cfg.ffn_dim, bias=False)
        for lin in (self.mlp.fc1_g, self.mlp.fc1_x, self.mlp.fc2):
            init_linear(lin, std)
        self.modulation = Modulation(d, 6, cfg.adaln_hidden, std)

    def _pre(self, norm: nn.Module, x, shift, scale):
        if self.norm_order == "norm_modulate":
            return modulate(norm(x), shift, scale)
        return norm(modulate(x, shift, scale))

    def attention_in(self, h: torch.Tensor, c: torch.Tensor, rope) -> tuple[torch.Tensor, tuple]:
        """(q, k, v stacked (B, n, t, 3, heads, dh), the six modulation vectors)."""
        mods = self.modulation(c)
        return self.attn.qkv_rope(self._pre(self.norm1, h, mods[0], mods[1]), rope), mods

    def attention_out(self, h: torch.Tensor, o: torch.Tensor, mods: tuple) -> torch.Tensor:
        """The block's output from its input h and the attention output o (B, n, t, heads, dh)."""
        _, _, g1, sh2, sc2, g2 = mods
        gate = (slice(None),) + (None,) * (h.dim() - 2)
        h = h + g1[gate] * self.attn.proj(o.reshape(h.shape))
        return h + g2[gate] * self.mlp(self._pre(self.norm2, h, sh2, sc2))

    def forward(self, h: torch.Tensor, c: torch.Tensor, ctx, frame: int, mask_poles: bool) -> torch.Tensor:
        rope = self.attn.rope_tables(ctx, h.device, compute_dtype(self.attn.qkv.weight))
        qkv, mods = _compiled(AerisBlock.attention_in, self.compile_backend)(self, h, c, rope)
        o = ctx.attention(qkv, frame, mask_poles=mask_poles)
        return _compiled(AerisBlock.attention_out, self.compile_backend)(self, h, o, mods)


_COMPILED: dict = {}


def _compiled(fn, backend: str | None):
    """``fn`` itself (backend None) or its ``torch.compile`` with ``backend``, one per function
    and backend, shared by every block (the block is an argument whose parameters are graph
    inputs, so a deep network compiles each function once, not once per block). Kept outside
    the modules, so a model still deep-copies and pickles."""
    if backend is None:
        return fn
    if (fn, backend) not in _COMPILED:
        _COMPILED[fn, backend] = torch.compile(fn, backend=backend)
    return _COMPILED[fn, backend]


class OutputHead(nn.Module):
    """RMSNorm + (shift, scale) modulation + zero-initialised Linear(d -> n_out)."""

    def __init__(self, cfg: ModelConfig, n_out: int):
        super().__init__()
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.modulation = Modulation(cfg.dim, 2, cfg.adaln_hidden, default_std(cfg.dim))
        self.linear = nn.Linear(cfg.dim, n_out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)
        return self.linear(modulate(self.norm(h), shift, scale))


def block_frame(cfg: ModelConfig, i: int) -> int:
    """Frame of block i: windows shift by half a window every ``cfg.shift_every`` blocks."""
    if not 0 <= i < cfg.depth:
        raise IndexError(f"block {i} out of range (model has {cfg.depth} blocks)")
    return (i // cfg.shift_every) % 2


def whole_plan(depth: int) -> StagePlan:
    """The one stage that is the whole network: every block, frame 0 in and out."""
    return StagePlan(index=0, n_stages=1, blocks=range(depth), start_frame=0, end_frame=0)


class AerisStage(nn.Module):
    """A pipeline stage of the network, and a module whose ``forward`` runs on its own.

    It holds the blocks ``plan.blocks`` (other indices are parameter-free placeholders, so a
    parameter keeps its global name ``blocks.3.attn.qkv.weight`` on every stage), the input
    embedding on the first stage and the output head on the last::

        forward(x, t) = head(walk(embed(x))) on a one-stage plan (the whole network),
        walk(h) = change_frame to plan.end_frame of (... block_i(change_frame(h), c) ...),
        c = time_embedding(t)

    The first stage takes the network input (B, n_lw, tpp, n_in), any other stage the
    activations (B, n_lw, tpp, d) in ``plan.start_frame``; the last stage returns the output
    (B, n_lw, tpp, n_out), any other stage activations in ``plan.end_frame``.

    ``source``: take the parts from an existing network instead of building them (their
    weights are shared, not copied); without it the parts are built and initialised in the
    order input, blocks, head (the whole network's order, so a seeded build is reproducible).
    """

    def __init__(self, cfg: ModelConfig, n_out: int, n_in: int, grid: tuple[int, int],
                 plan: StagePlan | None = None, *, source: AerisStage | None = None):
        super().__init__()
        if n_in < 1 or n_out < 1:
            raise ValueError(f"AerisNet needs n_in, n_out >= 1, got n_in={n_in}, n_out={n_out}")
        H, W = grid
        ws_h, ws_w = cfg.window
        if H % ws_h or W % ws_w:
            raise ValueError(f"grid {H}x{W} is not divisible by the window {ws_h}x{ws_w}")
        if cfg.dim % 4:
            raise ValueError(f"model.dim={cfg.dim} must be a multiple of 4 (2-D position encoding)")
        plan = plan or whole_plan(cfg.depth)
        if plan.blocks and (plan.blocks.start < 0 or plan.blocks.stop > cfg.depth):
            raise ValueError(f"stage blocks {list(plan.blocks)} outside the model's {cfg.depth} blocks")
        self.cfg, self.n_in, self.n_out, self.grid, self.plan = cfg, n_in, n_out, (H, W), plan
        if plan.is_first:
            self.input = source.input if source is not None else nn.Linear(n_in, cfg.dim)
            if source is None:
                init_linear(self.input, default_std(cfg.dim))
        else:
            self.input = None
        self.blocks = nn.ModuleList(
            (source.blocks[i] if source is not None else AerisBlock(cfg)) if i in plan.blocks else nn.Identity()
            for i in range(cfg.depth))
        self.out = ((source.out if source is not None else OutputHead(cfg, n_out)) if plan.is_last else None)

    # ---- pipeline-splittable pieces -----------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def block_frame(self, i: int) -> int:
        """Frame of block i: windows shift by half a window every `shift_every` blocks."""
        return block_frame(self.cfg, i)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Fixed sinusoidal embedding of TrigFlow time t (B,) -> (B, d); no parameters."""
        t = torch.as_tensor(t)
        if t.dim() != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        # any parameter gives the compute dtype/device (a pipeline stage may have no input layer)
        w = next(self.parameters())
        return timestep_embedding(t.detach().to(w.device), self.cfg.dim, self.cfg.time_scale, w.dtype)

    def embed(self, x_in: torch.Tensor, ctx) -> torch.Tensor:
        """Per-pixel Linear(n_in -> d) + 2-D sinusoidal encoding of the global (y, x) (frame 0)."""
        if x_in.dim() != 4 or x_in.shape[-1] != self.n_in:
            raise ValueError(f"x_in must be (B, n_local_windows, tokens_per_piece, {self.n_in}), "
                             f"got {tuple(x_in.shape)}")
        self._check_ctx(ctx)
        dtype, W, d = self.input.weight.dtype, self.grid[1], self.cfg.dim
        # a constant of the context (its token ids never change): built once, then no host work
        pos = context_constant(ctx, ("position", W, d, x_in.device, dtype),
                               lambda: position_embedding_2d(ctx.token_ids(0), W, d, dtype, x_in.device))
        if tuple(pos.shape[:2]) != tuple(x_in.shape[1:3]):
            raise ValueError(f"x_in token dims {tuple(x_in.shape[1:3])} do not match the context's "
                             f"local storage {tuple(pos.shape[:2])}")
        return self.input(x_in) + pos

    def block(self, i: int, h: torch.Tensor, c: torch.Tensor, ctx) -> torch.Tensor:
        """Block i on h, which must already be in frame `block_frame(i)`."""
        fn = self.blocks[i]
        args = (h, c, ctx, self.block_frame(i), self.cfg.pole_mask)
        if self.cfg.checkpoint_blocks and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def head(self, h: torch.Tensor, c: torch.Tensor, ctx) -> torch.Tensor:
        """Output head on h in frame 0 -> (B, n_lw, tpp, n_out)."""
        return self.out(h, c)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx) -> torch.Tensor:
        """The stage on its input (class docstring); the one walk over blocks and frames."""
        plan = self.plan
        c = self.time_embedding(t)
        h = self.embed(x, ctx) if plan.is_first else x
        if h.device.type != "meta" and torch.is_autocast_enabled(h.device.type):  # meta: shapes only
            # the residual stream lives in the compute dtype: checkpointed activations, frame
            # changes and pipeline sends move half the bytes of fp32 under bf16
            h = h.to(torch.get_autocast_dtype(h.device.type))
        frame = plan.start_frame
        for i in plan.blocks:
            f = self.block_frame(i)
            if f != frame:
                h, frame = ctx.change_frame(h, frame, f), f
            h = self.block(i, h, c, ctx)
        if frame != plan.end_frame:
            h = ctx.change_frame(h, frame, plan.end_frame)
        return self.head(h, c, ctx) if plan.is_last else h

    def stage(self, plan: StagePlan) -> AerisStage:
        """The stage ``plan`` of this network, sharing its parts (the parts it does not run are
        left out; parameter names stay the global ones)."""
        return AerisStage(self.cfg, self.n_out, self.n_in, self.grid, plan, source=self)

    def _check_ctx(self, ctx) -> None:
        layout = getattr(ctx, "layout", None)
        if layout is None:
            return
        if (layout.H, layout.W) != self.grid or (layout.ws_h, layout.ws_w) != tuple(self.cfg.window):
            raise ValueError(
                f"context layout {layout.H}x{layout.W} with window {layout.ws_h}x{layout.ws_w} does not "
                f"match the model (grid {self.grid[0]}x{self.grid[1]}, window {tuple(self.cfg.window)})")

    def decay_parameter_names(self) -> list[str]:
        return decay_parameter_names(self)


class AerisNet(AerisStage):
    """F(x_in, t): per-pixel input channels n_in -> per-pixel output channels n_out; the
    one-stage `AerisStage` (every block, embedding and head).

    ``n_in`` = noisy residual (n_out) + standardised state (n_out) + forcings, concatenated by
    the caller; ``grid`` = (H, W) of the field the network sees (for the position encoding).
    """

    def __init__(self, cfg: ModelConfig, n_out: int, n_in: int, grid: tuple[int, int]):
        super().__init__(cfg, n_out, n_in, grid)

    @classmethod
    def for_data(cls, cfg: ModelConfig, n_channels: int, n_forcing: int, grid: tuple[int, int]) -> AerisNet:
        """The network for a dataset: n_out = n_channels prognostic channels, n_in = the noisy
        residual + the state + the forcing inputs (2 n_channels + n_forcing)."""
        return cls(cfg, n_out=n_channels, n_in=2 * n_channels + n_forcing, grid=tuple(grid))


# Matrix weights of the block linears: attention qkv/proj and the SwiGLU MLP.
_DECAY_SUFFIXES = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1_g.weight", "mlp.fc1_x.weight",
                   "mlp.fc2.weight")


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay (docs/training.md, "Optimizer and weight decay").

    Decay: the matrix weights of the Linear layers inside blocks (qkv, proj, SwiGLU).
    Names may carry a wrapper prefix (``module.blocks.3...``).
    No decay: input embedding, norm gains, biases, the output head, and the adaLN modulation
    MLPs (conditioning layers, treated like embeddings: decaying them pulls the gates to 0).
    """
    return [n for n, _ in model.named_parameters()
            if ".blocks." in f".{n}" and n.endswith(_DECAY_SUFFIXES)]

"""The AERIS network against a plain full-field reference (roll + window partition + SDPA).

* the serial context's window attention / frame change equal roll-then-partition attention,
  with and without the pole mask;
* the whole network run through a layout equals a full-field re-implementation (float64);
* a threaded multi-rank context (every rank holds only a piece of some windows, sp > 1)
  gives the serial output: the model is layout-agnostic;
* adaLN-Zero: output 0 at init, gradient reaches the head; weight-decay groups; parameter counts.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition, window_reverse

from aeris.config import load_config
from aeris.data.lexicon import channel_names
from aeris.model.config import ModelConfig
from aeris.model.flops import parameter_count
from aeris.model.network import AerisNet, decay_parameter_names
from swipe.context import SerialContext, WindowContext
from swipe.layout import WindowLayout


# ---- helpers -----------------------------------------------------------------------------------
def to_tokens(layout: WindowLayout, field: torch.Tensor, frame: int = 0, rank: int = 0) -> torch.Tensor:
    """(B, H, W, C) field -> (B, n_lw, tpp, C) storage of `rank`."""
    ids = torch.from_numpy(layout.index_map(frame, rank))
    B, H, W, C = field.shape
    return field.reshape(B, H * W, C)[:, ids]


def to_field(layout: WindowLayout, pieces: list[torch.Tensor], frame: int = 0) -> torch.Tensor:
    """Every rank's (B, n_lw, tpp, C) storage -> (B, H, W, C) field."""
    B, C = pieces[0].shape[0], pieces[0].shape[-1]
    out = torch.empty(B, layout.H * layout.W, C, dtype=pieces[0].dtype)
    for r, p in enumerate(pieces):
        out[:, torch.from_numpy(layout.index_map(frame, r).ravel())] = p.reshape(B, -1, C)
    return out.reshape(B, layout.H, layout.W, C)


def randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero weights everywhere (the zero-initialised layers too), gains near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.3 * noise / max(1, p.shape[-1]) ** 0.5)


def pole_reference_mask(ws_h: int, ws_w: int, n_wy: int, n_wx: int) -> torch.Tensor:
    """Frame-1 windows in row-major token order: windows of the LAST window row hold the bottom
    rows of the field in their upper half and the top rows in their lower half; tokens of
    different halves may not attend. Bool (n_windows, T, T), True = may attend."""
    r = torch.arange(ws_h).repeat_interleave(ws_w)
    same_half = (r[:, None] < ws_h // 2) == (r[None, :] < ws_h // 2)
    m = torch.ones(n_wy, n_wx, ws_h * ws_w, ws_h * ws_w, dtype=torch.bool)
    m[-1] = same_half
    return m.reshape(-1, ws_h * ws_w, ws_h * ws_w)


def reference_window_attention(q, k, v, ws, frame, mask_poles):
    """q, k, v: (B, H, W, heads, dh) fields. Roll, partition (timm), SDPA per window, reverse, roll back."""
    B, H, W, h, dh = q.shape
    sh = (ws[0] // 2, ws[1] // 2) if frame else (0, 0)

    def part(x):
        x = torch.roll(x.reshape(B, H, W, h * dh), (-sh[0], -sh[1]), dims=(1, 2))
        w = window_partition(x, ws).reshape(B, -1, ws[0] * ws[1], h, dh)
        return w.permute(0, 1, 3, 2, 4)  # (B, nW, heads, T, dh)

    mask = None
    if frame and mask_poles:
        mask = pole_reference_mask(ws[0], ws[1], H // ws[0], W // ws[1])[None, :, None]
    o = F.scaled_dot_product_attention(part(q), part(k), part(v), attn_mask=mask)
    o = o.permute(0, 1, 3, 2, 4).reshape(-1, ws[0], ws[1], h * dh)
    o = window_reverse(o, ws, H, W)
    return torch.roll(o, sh, dims=(1, 2)).reshape(B, H, W, h, dh)


def rope_reference(x, ws, theta):
    """2-D axial RoPE on row-major in-window coords (complex form), x: (B, nW, heads, T, dh)."""
    dh = x.shape[-1]
    n = dh // 4
    r = torch.arange(ws[0]).repeat_interleave(ws[1]).double()
    c = torch.arange(ws[1]).repeat(ws[0]).double()
    k = torch.arange(n, dtype=torch.float64)
    ang = torch.cat([r[:, None] * theta ** (-k / n), c[:, None] * theta ** (-k / n)], dim=1)  # (T, dh/2)
    z = torch.complex(x[..., : dh // 2], x[..., dh // 2:]) * torch.exp(1j * ang)
    return torch.cat([z.real, z.imag], dim=-1)


def rms(x, g, eps):
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * g


def sincos(p, n):
    w = 10000.0 ** (-torch.arange(n // 2, dtype=torch.float64) / (n // 2))
    a = p.double()[:, None] * w
    return torch.cat([a.sin(), a.cos()], dim=1)


def circle_sincos(p, n, period):
    """Harmonics 1, 2, ... of the circle (below Nyquist, repeating), without any phase reduction."""
    m = [1 + k % max(1, (period - 1) // 2) for k in range(n // 2)]
    a = 2 * np.pi * p.double()[:, None] * torch.tensor(m, dtype=torch.float64) / period
    return torch.cat([a.sin(), a.cos()], dim=1)


def reference_forward(net: AerisNet, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The whole network on a (B, H, W, n_in) field with plain torch ops and net's weights."""
    cfg = net.cfg
    B, H, W, _ = X.shape
    d, heads, ws = cfg.dim, cfg.heads, tuple(cfg.window)
    dh = d // heads
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.cat([sincos(yy.ravel(), d // 2), circle_sincos(xx.ravel(), d // 2, W)], 1).reshape(H, W, d)
    c = sincos(t * cfg.time_scale, d)
    h = X @ net.input.weight.T + net.input.bias + pos

    def mod_params(m, n):
        z = F.silu(c @ m.hidden.weight.T + m.hidden.bias) if m.hidden is not None else c
        return [p[:, None, None, :] for p in (z @ m.out.weight.T + m.out.bias).chunk(n, -1)]

    def pre(x, norm, shift, scale):
        if cfg.norm_order == "norm_modulate":
            return rms(x, norm.weight, cfg.norm_eps) * (1 + scale) + shift
        return rms(x * (1 + scale) + shift, norm.weight, cfg.norm_eps)

    for i, blk in enumerate(net.blocks):
        frame = (i // cfg.shift_every) % 2
        sh1, sc1, g1, sh2, sc2, g2 = mod_params(blk.modulation, 6)
        a = pre(h, blk.norm1, sh1, sc1)
        q, k, v = (a @ blk.attn.qkv.weight.T).reshape(B, H, W, 3, heads, dh).unbind(3)
        if cfg.rope:
            # rotate in the window frame (row-major in-window coordinates), then come back
            sh = (ws[0] // 2, ws[1] // 2) if frame else (0, 0)

            def rot(x):
                xr = torch.roll(x.reshape(B, H, W, d), (-sh[0], -sh[1]), dims=(1, 2))
                w = window_partition(xr, ws).reshape(B, -1, ws[0] * ws[1], heads, dh).permute(0, 1, 3, 2, 4)
                w = rope_reference(w, ws, cfg.rope_theta).permute(0, 1, 3, 2, 4).reshape(-1, ws[0], ws[1], d)
                return torch.roll(window_reverse(w, ws, H, W), sh, dims=(1, 2)).reshape(B, H, W, heads, dh)

            q, k = rot(q), rot(k)
        o = reference_window_attention(q, k, v, ws, frame, cfg.pole_mask).reshape(B, H, W, d)
        h = h + g1 * (o @ blk.attn.proj.weight.T)
        a = pre(h, blk.norm2, sh2, sc2)
        mlp = blk.mlp
        h = h + g2 * ((F.silu(a @ mlp.fc1_g.weight.T) * (a @ mlp.fc1_x.weight.T)) @ mlp.fc2.weight.T)
    shift, scale = mod_params(net.out.modulation, 2)
    a = rms(h, net.out.norm.weight, cfg.norm_eps) * (1 + scale) + shift
    return a @ net.out.linear.weight.T + net.out.linear.bias


# ---- serial context vs roll + partition -------------------------------------------------------
@pytest.mark.parametrize("frame", [0, 1])
@pytest.mark.parametrize("mask_poles", [False, True])
@pytest.mark.parametrize("H,W,ws", [(8, 16, (4, 4)), (12, 8, (6, 4))])
def test_serial_attention_equals_roll_partition_reference(frame, mask_poles, H, W, ws):
    g = torch.Generator().manual_seed(1)
    B, heads, dh = 2, 2, 4
    q, k, v = (torch.randn(B, H, W, heads, dh, generator=g, dtype=torch.float64) for _ in range(3))
    layout = WindowLayout(H, W, *ws)
    ctx = SerialContext(layout)
    tok = [to_tokens(layout, x.reshape(B, H, W, -1), frame).reshape(B, layout.n_local_windows, -1, heads, dh)
           for x in (q, k, v)]
    out = ctx.attention(torch.stack(tok, 3), frame, mask_poles=mask_poles)
    got = to_field(layout, [out.reshape(*out.shape[:3], -1)], frame).reshape(B, H, W, heads, dh)
    ref = reference_window_attention(q, k, v, ws, frame, mask_poles)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_pole_mask_stops_attention_across_the_wrap():
    """With the mask, perturbing the top rows' values changes nothing in the bottom rows (frame 1)."""
    H, W, ws = 8, 8, (4, 4)
    layout = WindowLayout(H, W, *ws)
    ctx = SerialContext(layout)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, H, W, 1, 4, generator=g, dtype=torch.float64) for _ in range(3))
    v2 = v.clone()
    v2[:, : ws[0] // 2] += 5.0  # the top rows (one pole)

    def run(vv, mask):
        tok = [to_tokens(layout, x.reshape(1, H, W, -1), 1).reshape(1, layout.n_local_windows, -1, 1, 4)
               for x in (q, k, vv)]
        o = ctx.attention(torch.stack(tok, 3), 1, mask_poles=mask)
        return to_field(layout, [o.reshape(*o.shape[:3], -1)], 1)

    bottom = slice(H - ws[0] // 2, H)
    torch.testing.assert_close(run(v, True)[:, bottom], run(v2, True)[:, bottom])
    assert (run(v, False)[:, bottom] - run(v2, False)[:, bottom]).abs().max() > 1e-3


def test_serial_change_frame_is_roll():
    layout = WindowLayout(8, 16, 4, 4)
    ctx = SerialContext(layout)
    x = torch.randn(2, 8, 16, 3)
    moved = ctx.change_frame(to_tokens(layout, x, 0), 0, 1)
    rolled = torch.roll(x, (-2, -2), dims=(1, 2))
    # frame-1 storage read back as frame 1 gives the field; as a rolled field, windows are unshifted
    torch.testing.assert_close(to_field(layout, [moved], 1), x)
    torch.testing.assert_close(moved, to_tokens(layout, rolled, 0))
    torch.testing.assert_close(ctx.change_frame(moved, 1, 0), to_tokens(layout, x, 0))


# ---- the whole network ------------------------------------------------------------------------
CASES = [
    dict(),
    dict(norm_order="modulate_norm", shift_every=2),
    dict(rope=False, pole_mask=False, adaln_hidden=False),
    dict(window=[4, 8], depth=3),
]


@pytest.mark.parametrize("over", CASES)
def test_network_equals_full_field_reference(over):
    cfg = ModelConfig(**{**dict(dim=16, depth=4, heads=2, mlp_hidden=24, window=[4, 4]), **over})
    H, W, n_in, n_out, B = 8, 16, 5, 3, 2
    net = AerisNet(cfg, n_out, n_in, (H, W)).double()
    randomise(net)
    layout = WindowLayout(H, W, *cfg.window)
    X = torch.randn(B, H, W, n_in, dtype=torch.float64)
    t = torch.tensor([0.3, 1.4], dtype=torch.float64)
    with torch.no_grad():
        out = net(to_tokens(layout, X), t, SerialContext(layout))
        ref = reference_forward(net, X, t)
    assert out.shape == (B, layout.n_local_windows, layout.tokens_per_piece, n_out)
    torch.testing.assert_close(to_field(layout, [out]), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("H,W,ws", [(8, 8, (4, 4)), (12, 16, (6, 8)), (16, 32, (8, 4))])
def test_shapes_for_several_grids(H, W, ws):
    cfg = ModelConfig(dim=16, depth=2, heads=4, window=list(ws))
    net = AerisNet(cfg, 2, 6, (H, W))
    layout = WindowLayout(H, W, *ws)
    out = net(torch.randn(3, layout.n_local_windows, layout.tokens_per_piece, 6), torch.rand(3),
              SerialContext(layout))
    assert out.shape == (3, (H // ws[0]) * (W // ws[1]), ws[0] * ws[1], 2)
    with pytest.raises(ValueError, match="x_in"):
        net(torch.randn(3, layout.n_local_windows, layout.tokens_per_piece, 5), torch.rand(3),
            SerialContext(layout))
    with pytest.raises(ValueError, match="does not match the model"):
        net(torch.randn(1, 2, 2, 6), torch.rand(1), SerialContext(WindowLayout(4, 4, 2, 2)))


class _ShiftedCoords(SerialContext):
    def __init__(self, layout, delta):
        super().__init__(layout)
        self.delta = np.asarray(delta)

    def piece_coords(self):
        return super().piece_coords() + self.delta


def test_rope_is_applied_and_only_relative_positions_matter():
    cfg = ModelConfig(dim=16, depth=2, heads=2, window=[4, 4])
    H, W = 8, 8
    layout = WindowLayout(H, W, 4, 4)
    x = torch.randn(1, layout.n_local_windows, layout.tokens_per_piece, 3, dtype=torch.float64)
    t = torch.tensor([0.7], dtype=torch.float64)
    net = AerisNet(cfg, 2, 3, (H, W)).double()
    randomise(net)
    with torch.no_grad():  # peaked attention, so positions matter visibly
        for blk in net.blocks:
            blk.attn.qkv.weight *= 5
    norope = AerisNet(ModelConfig(**{**cfg.__dict__, "rope": False}), 2, 3, (H, W)).double()
    norope.load_state_dict(net.state_dict())
    with torch.no_grad():
        base = net(x, t, SerialContext(layout))
        shifted = net(x, t, _ShiftedCoords(layout, (13, -5)))
        plain = norope(x, t, SerialContext(layout))
    assert (base - plain).abs().max() > 1e-2 * base.abs().max()  # RoPE changes the output
    torch.testing.assert_close(shifted, base)          # a global translation of coordinates does not


def test_zero_at_init_and_gradient_reaches_head():
    cfg = ModelConfig(dim=16, depth=2, heads=2, window=[4, 4])
    layout = WindowLayout(8, 8, 4, 4)
    net = AerisNet(cfg, 3, 5, (8, 8))
    x = torch.randn(2, layout.n_local_windows, layout.tokens_per_piece, 5)
    out = net(x, torch.rand(2), SerialContext(layout))
    assert torch.equal(out, torch.zeros_like(out))
    (out * torch.randn_like(out)).sum().backward()
    assert net.out.linear.weight.grad.abs().max() > 0
    assert net.out.linear.bias.grad.abs().max() > 0
    # blocks are the identity at init (zero gates), so nothing upstream gets gradient yet ...
    assert net.blocks[0].attn.qkv.weight.grad.abs().max() == 0
    # ... until the head has moved: then the gates of every block receive gradient
    with torch.no_grad():
        net.out.linear.weight -= 0.1 * net.out.linear.weight.grad
    net.zero_grad()
    out = net(x, torch.rand(2), SerialContext(layout))
    (out * torch.randn_like(out)).sum().backward()
    for blk in net.blocks:
        assert blk.modulation.out.weight.grad.abs().max() > 0


def test_checkpointing_gives_same_gradients():
    cfg = ModelConfig(dim=16, depth=3, heads=2, window=[4, 4])
    layout = WindowLayout(8, 8, 4, 4)
    a = AerisNet(cfg, 2, 3, (8, 8)).double()
    randomise(a)
    b = AerisNet(ModelConfig(**{**cfg.__dict__, "checkpoint_blocks": True}), 2, 3, (8, 8)).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, layout.n_local_windows, layout.tokens_per_piece, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 1.0], dtype=torch.float64)
    for net in (a, b):
        net(x, t, SerialContext(layout)).square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_pipeline_pieces_compose_to_forward():
    cfg = ModelConfig(dim=16, depth=5, heads=2, window=[4, 4], shift_every=2)
    layout = WindowLayout(8, 16, 4, 4)
    ctx = SerialContext(layout)
    net = AerisNet(cfg, 2, 3, (8, 16)).double()
    randomise(net)
    assert [net.block_frame(i) for i in range(5)] == [0, 0, 1, 1, 0]
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for m in (net.input, net.blocks, net.out) for p in m.parameters())
    x = torch.randn(1, layout.n_local_windows, layout.tokens_per_piece, 3, dtype=torch.float64)
    t = torch.tensor([0.9], dtype=torch.float64)
    c = net.time_embedding(t)
    h = net.embed(x, ctx)
    h = net.block(1, net.block(0, h, c, ctx), c, ctx)
    h = ctx.change_frame(h, 0, 1)
    h = net.block(3, net.block(2, h, c, ctx), c, ctx)
    h = net.block(4, ctx.change_frame(h, 1, 0), c, ctx)
    with torch.no_grad():
        torch.testing.assert_close(net.head(h, c, ctx), net(x, t, ctx))
    net.input = None  # a later pipeline stage: the time embedding still works
    torch.testing.assert_close(net.time_embedding(t), c)


# ---- a multi-rank context simulated with threads ----------------------------------------------
class _World:
    def __init__(self, layout: WindowLayout):
        self.layout = layout
        self.barrier = threading.Barrier(layout.n_ranks, timeout=60)
        self.slots: list = [None] * layout.n_ranks


class ThreadedContext(WindowContext):
    """Each rank (a thread) holds piece s of its strided local windows; attention gathers the
    sp pieces of each window, the frame change goes through the global field. Test-only."""

    def __init__(self, world: _World, rank: int):
        super().__init__(world.layout, *world.layout.rank_coords(rank))
        self.world = world

    def _exchange(self, x):
        self.world.slots[self.rank] = x
        self.world.barrier.wait()
        allx = list(self.world.slots)
        self.world.barrier.wait()
        return allx

    def attention(self, qkv, frame, mask_poles=False):
        lay, t = self.layout, self.layout.tokens_per_piece
        allqkv = self._exchange(qkv.unbind(dim=3))
        peers = [lay.rank_index(self.wy, self.wx, s) for s in range(lay.sp)]
        full = [torch.cat([allqkv[p][i] for p in peers], dim=2) for i in range(3)]
        o = self.local_attention(*full, frame, mask_poles)  # whole windows, quadrant-major
        return o[:, :, self.s * t:(self.s + 1) * t]

    def change_frame(self, x, src, dst):
        if src == dst:
            return x
        field = to_field(self.layout, self._exchange(x), src)
        return to_tokens(self.layout, field, dst, self.rank)


@pytest.mark.parametrize("wpy,wpx,sp", [(2, 1, 1), (1, 2, 2), (2, 2, 4)])
def test_model_on_window_pieces_equals_serial(wpy, wpx, sp):
    cfg = ModelConfig(dim=16, depth=3, heads=4, window=[4, 4], pole_mask=True)
    H, W = 8, 16
    net = AerisNet(cfg, 2, 3, (H, W)).double()
    randomise(net)
    X = torch.randn(2, H, W, 3, dtype=torch.float64)
    t = torch.tensor([0.4, 1.1], dtype=torch.float64)
    serial = WindowLayout(H, W, 4, 4)
    with torch.no_grad():
        ref = to_field(serial, [net(to_tokens(serial, X), t, SerialContext(serial))])
    layout = WindowLayout(H, W, 4, 4, wpy, wpx, sp)
    assert layout.tokens_per_piece < layout.window_tokens or layout.n_local_windows < serial.n_local_windows
    world = _World(layout)
    outs, errors = [None] * layout.n_ranks, []

    def run(r):
        try:
            with torch.no_grad():
                outs[r] = net(to_tokens(layout, X, 0, r), t, ThreadedContext(world, r))
        except BaseException as e:  # surface thread failures in the test
            errors.append(e)
            world.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(layout.n_ranks)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    torch.testing.assert_close(to_field(layout, outs), ref, rtol=1e-10, atol=1e-10)


# ---- weight decay and parameter counts --------------------------------------------------------
def test_decay_parameter_names():
    net = AerisNet(ModelConfig(dim=16, depth=2, heads=2, window=[4, 4]), 2, 3, (8, 8))
    names = set(decay_parameter_names(net))
    expected = {f"blocks.{i}.{s}" for i in range(2) for s in (
        "attn.qkv.weight", "attn.proj.weight", "mlp.fc1_g.weight", "mlp.fc1_x.weight", "mlp.fc2.weight")}
    assert names == expected
    assert set(net.decay_parameter_names()) == expected
    params = dict(net.named_parameters())
    assert all(params[n].dim() == 2 for n in names)
    # every other parameter: embeddings, norms, biases, head, modulation
    rest = set(params) - names
    assert any("norm" in n for n in rest) and "input.weight" in rest and "out.linear.weight" in rest
    assert all(p.dim() == 1 or n.startswith(("input.", "out.")) or ".modulation." in n
               for n, p in params.items() if n in rest)
    wrapped = torch.nn.Sequential(net)  # prefixed names still found
    assert len(decay_parameter_names(wrapped)) == len(expected)


def _io_channels(cfg) -> tuple[int, int]:
    n_out = len(channel_names(cfg.data.surface, cfg.data.atmospheric, cfg.data.levels))
    # noisy residual + state + forcings at t and t+dt + static fields
    return n_out, 2 * n_out + 2 * len(cfg.data.forcings) + len(cfg.data.static)


@pytest.mark.parametrize("name,expected,rel", [
    ("tiny", None, None),
    ("aeris-1.3b-6h", 1.31e9, 0.005),
    ("aeris-1.3b-24h", 1.31e9, 0.005),
    ("aeris-40b-bench", 4.08e10, 0.005),
])
def test_parameter_count_of_configs(name, expected, rel):
    cfg = load_config(name)
    n_out, n_in = _io_channels(cfg)
    if name.startswith("aeris"):
        assert (n_out, n_in) in ((69, 142), (70, 144))
    with torch.device("meta"):
        net = AerisNet(cfg.model, n_out, n_in, (720, 1440) if expected else (64, 128))
    count = sum(p.numel() for p in net.parameters())
    assert count == parameter_count(cfg.model, n_in, n_out)
    if expected:
        assert abs(count / expected - 1) < rel, count


def test_per_block_parameter_budget_of_the_paper_shapes():
    """By-hand numbers: 1.3B block 4d^2 + 3*d*6144 + 7d^2 (+ small vectors) ~ 54.3M."""
    cfg = ModelConfig(dim=1536, depth=1, heads=12, mlp_hidden=6144, window=[30, 30])
    with torch.device("meta"):
        blk = AerisNet(cfg, 1, 1, (30, 30)).blocks[0]
    d = 1536
    assert sum(p.numel() for p in blk.parameters()) == 4 * d * d + 3 * d * 6144 + 7 * d * d + 2 * d + 7 * d
    with torch.device("meta"):
        c40 = ModelConfig(dim=6144, depth=1, heads=48, mlp_hidden=40960, window=[30, 30], adaln_hidden=False)
        blk = AerisNet(c40, 1, 1, (30, 30)).blocks[0]
    d = 6144
    assert sum(p.numel() for p in blk.parameters()) == 4 * d * d + 3 * d * 40960 + 6 * d * d + 2 * d + 6 * d


def test_forward_keeps_every_tensor_on_the_model_device():
    """A meta-device forward fails if any tensor (embeddings, RoPE angles, masks) is made on the CPU."""
    cfg = ModelConfig(dim=16, depth=2, heads=2, window=[4, 4])
    layout = WindowLayout(8, 16, 4, 4)
    net = AerisNet(cfg, 3, 5, (8, 16)).to("meta")
    out = net(torch.empty(2, layout.n_local_windows, layout.tokens_per_piece, 5, device="meta"),
              torch.empty(2, device="meta"), SerialContext(layout))
    assert out.device.type == "meta" and out.shape == (2, 8, 16, 3)

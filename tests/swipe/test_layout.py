"""Pure layout maths (swipe.layout) against an independent numpy roll-then-partition reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from swipe.layout import LayoutError, Route, WindowLayout, latitude_wrap_mask, quadrant_major_coords


# ---- independent reference ------------------------------------------------------------------
def reference_pieces(field: np.ndarray, ws_h: int, ws_w: int, wpy: int, wpx: int, sp: int,
                     frame: int) -> list[np.ndarray]:
    """Roll (frame 1), cut into windows, order quadrant-major, deal windows strided, cut pieces.

    Written with reshapes/transposes only (no use of swipe.layout), rank order (wy, wx, s).
    """
    H, W = field.shape
    if frame:
        field = np.roll(field, (-(ws_h // 2), -(ws_w // 2)), axis=(0, 1))
    nwy, nwx = H // ws_h, W // ws_w
    qh, qw = ws_h // 2, ws_w // 2
    # (nwy, 2, qh, nwx, 2, qw) -> (nwy, nwx, qy, qx, qh, qw): quadrant order TL, TR, BL, BR
    quads = field.reshape(nwy, 2, qh, nwx, 2, qw).transpose(0, 3, 1, 4, 2, 5)
    tokens = quads.reshape(nwy, nwx, ws_h * ws_w)
    tpp = ws_h * ws_w // sp
    out = []
    for wy, wx, s in itertools.product(range(wpy), range(wpx), range(sp)):
        local = tokens[wy::wpy, wx::wpx].reshape(-1, ws_h * ws_w)
        out.append(local[:, s * tpp:(s + 1) * tpp])
    return out


def apply_route(route: Route, pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Move every rank's flat storage along the route; checks each slot is written exactly once."""
    out = [np.full(p.size, -1, dtype=p.dtype) for p in pieces]
    hits = [np.zeros(p.size, dtype=int) for p in pieces]
    for m in route.messages:
        out[m.dst][m.dst_slots] = pieces[m.src].ravel()[m.src_slots]
        np.add.at(hits[m.dst], m.dst_slots, 1)
    for h in hits:
        assert (h == 1).all(), "a destination slot was written zero or several times"
    return [o.reshape(p.shape) for o, p in zip(out, pieces)]


# (H, W, ws_h, ws_w, wpy, wpx, sp): square and non-square window grids, sp in {1, 2, 4, 8, 12}
CASES = [
    (8, 8, 4, 4, 1, 1, 1),
    (16, 32, 4, 4, 2, 2, 1),
    (16, 32, 4, 8, 2, 4, 2),
    (24, 16, 4, 4, 3, 2, 4),
    (16, 48, 8, 4, 2, 3, 8),
    (24, 24, 6, 4, 2, 3, 12),
    (12, 24, 6, 6, 1, 2, 12),
    (32, 16, 8, 8, 4, 1, 4),
]


@pytest.mark.parametrize("case", CASES)
def test_index_map_equals_roll_then_partition(case):
    H, W, wh, ww, wpy, wpx, sp = case
    lay = WindowLayout(H, W, wh, ww, wpy, wpx, sp)
    ids = np.arange(H * W).reshape(H, W)
    for frame in (0, 1):
        ref = reference_pieces(ids, wh, ww, wpy, wpx, sp, frame)
        got = lay.index_maps(frame)
        assert len(got) == lay.n_ranks == wpy * wpx * sp
        for r, (g, e) in enumerate(zip(got, ref)):
            assert g.shape == (lay.n_local_windows, lay.tokens_per_piece)
            np.testing.assert_array_equal(g, e, err_msg=f"rank {r} frame {frame}")
        # every token held exactly once
        np.testing.assert_array_equal(np.sort(np.concatenate([g.ravel() for g in got])), np.arange(H * W))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("direction", [(0, 1), (1, 0), (0, 0), (1, 1)])
def test_routes_equal_roll_then_partition(case, direction):
    H, W, wh, ww, wpy, wpx, sp = case
    src, dst = direction
    lay = WindowLayout(H, W, wh, ww, wpy, wpx, sp)
    field = np.random.default_rng(0).standard_normal((H, W))
    moved = apply_route(lay.route(src, dst), reference_pieces(field, wh, ww, wpy, wpx, sp, src))
    for a, b in zip(moved, reference_pieces(field, wh, ww, wpy, wpx, sp, dst)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES)
def test_route_back_is_inverse(case):
    lay = WindowLayout(*case)
    fwd, back = lay.route(0, 1), lay.route(1, 0)
    key = lambda m: (m.src, m.dst)  # noqa: E731
    inv = sorted(fwd.inverse().messages, key=key)
    back_msgs = sorted(back.messages, key=key)
    assert [key(m) for m in inv] == [key(m) for m in back_msgs]
    for a, b in zip(inv, back_msgs):
        # same (src slot -> dst slot) pairs, possibly listed in another order
        pa = sorted(zip(a.src_slots.tolist(), a.dst_slots.tolist()))
        pb = sorted(zip(b.src_slots.tolist(), b.dst_slots.tolist()))
        assert pa == pb
    assert fwd.inverse().src_frame == 1 and fwd.inverse().dst_frame == 0


# ---- the original system's routing table (docs/layout.md, "Shift routes") -------------------------------
TABLE_CASES = [
    (24, 24, 6, 4, 2, 3, 12),   # quadrant 3x2 = 6 tokens = 3 pieces of 2
    (48, 72, 12, 12, 2, 3, 12),  # the original's sp = 12 with ws 12 (quadrant = 3 pieces)
    (24, 32, 4, 4, 3, 2, 4),    # sp = 4: one piece = one quadrant
    (16, 48, 8, 4, 2, 3, 8),
]
# entering the shifted frame: quadrant q goes to window rank (wy - dy, wx - dx) as quadrant 3 - q
QUADRANT_SHIFT = {0: (1, 1), 1: (1, 0), 2: (0, 1), 3: (0, 0)}  # TL, TR, BL, BR -> (dy, dx)


@pytest.mark.parametrize("case", TABLE_CASES)
def test_original_routing_table(case):
    H, W, wh, ww, wpy, wpx, sp = case
    lay = WindowLayout(H, W, wh, ww, wpy, wpx, sp)
    route = lay.route(0, 1)
    per_q = sp // 4  # pieces per quadrant
    nly, nlx, tpp = lay.n_local_windows_y, lay.n_local_windows_x, lay.tokens_per_piece
    assert len(route.messages) == lay.n_ranks  # one message per rank: no extra messages at all
    for r in range(lay.n_ranks):
        wy, wx, s = lay.rank_coords(r)
        (msg,) = route.sends(r)  # the whole piece goes to ONE rank
        q, c = divmod(s, per_q)
        dy, dx = QUADRANT_SHIFT[q]
        assert lay.rank_coords(msg.dst) == ((wy - dy) % wpy, (wx - dx) % wpx, (3 - q) * per_q + c)
        np.testing.assert_array_equal(np.sort(msg.src_slots), np.arange(lay.tokens_per_rank))
        # local window k keeps its index, except ranks receiving across the wrap
        # (sender on window row/column 0) see their local window grid rolled by one
        li, lj = np.divmod(np.arange(lay.n_local_windows), nlx)
        li2 = (li - 1) % nly if (dy and wy == 0) else li
        lj2 = (lj - 1) % nlx if (dx and wx == 0) else lj
        k2 = li2 * nlx + lj2
        expected = (k2[:, None] * tpp + np.arange(tpp)[None, :]).ravel()
        order = np.argsort(msg.src_slots)
        np.testing.assert_array_equal(msg.dst_slots[order], expected)
    # leaving the shifted frame: each rank again sends to exactly one rank
    assert all(len(route.sends(r)) == 1 for r in range(lay.n_ranks) for route in [lay.route(1, 0)])


@pytest.mark.parametrize("sp,fanout", [(1, 4), (2, 2), (4, 1), (8, 1)])
@pytest.mark.parametrize("direction", [(0, 1), (1, 0)])
def test_message_fanout(sp, fanout, direction):
    lay = WindowLayout(16, 24, 4, 4, 2, 3, sp)
    route = lay.route(*direction)
    for r in range(lay.n_ranks):
        sends, recvs = route.sends(r), route.recvs(r)
        assert len(sends) == fanout and len(recvs) == fanout
        assert sum(m.n_tokens for m in sends) == lay.tokens_per_rank
        assert sum(m.n_tokens for m in recvs) == lay.tokens_per_rank


def test_single_rank_route_is_one_self_message():
    lay = WindowLayout(8, 16, 4, 4)
    (m,) = lay.route(0, 1).messages
    assert m.src == m.dst == 0 and m.n_tokens == 8 * 16


# ---- scatter / assemble ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_scatter_assemble_round_trip(case):
    H, W, wh, ww, wpy, wpx, sp = case
    lay = WindowLayout(*case)
    field = np.random.default_rng(1).standard_normal((2, 3, H, W)).astype(np.float32)
    for frame in (0, 1):
        pieces = lay.scatter(field, frame)
        assert all(p.shape == (2, 3, lay.n_local_windows, lay.tokens_per_piece) for p in pieces)
        ref = reference_pieces(field[1, 2], wh, ww, wpy, wpx, sp, frame)
        for p, e in zip(pieces, ref):
            np.testing.assert_array_equal(p[1, 2], e)
        back = lay.assemble(pieces, frame)
        assert back.dtype == field.dtype
        np.testing.assert_array_equal(back, field)
    # assembling frame-1 pieces as frame 0 gives the rolled field
    rolled = lay.assemble(lay.scatter(field, 1), 0)
    np.testing.assert_array_equal(rolled, np.roll(field, (-(wh // 2), -(ww // 2)), axis=(-2, -1)))


def test_quadrant_major_coords():
    rc = quadrant_major_coords(4, 6)
    expect = [(r, c) for qr, qc in [(0, 0), (0, 3), (2, 0), (2, 3)] for r in range(qr, qr + 2)
              for c in range(qc, qc + 3)]
    np.testing.assert_array_equal(rc, np.array(expect))


def test_rank_numbering_sp_innermost():
    lay = WindowLayout(16, 24, 4, 4, 2, 3, 4)
    for r in range(lay.n_ranks):
        wy, wx, s = lay.rank_coords(r)
        assert r == (wy * 3 + wx) * 4 + s == lay.rank_index(wy, wx, s)


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args,match", [
    ((8, 8, 3, 4), "even"),
    ((10, 8, 4, 4), "not divisible by the window"),
    ((8, 16, 4, 4, 1, 3), "not divisible by the window-parallel grid"),
    ((8, 8, 4, 4, 1, 1, 3), "sp=3"),
    ((8, 8, 2, 2, 1, 1, 8), "cannot be cut into sp=8"),
    ((8, 8, 4, 4, 0), "positive"),
])
def test_layout_errors(args, match):
    with pytest.raises(LayoutError, match=match):
        WindowLayout(*args)


def test_rank_and_frame_errors():
    lay = WindowLayout(8, 8, 4, 4, 1, 1, 2)
    with pytest.raises(LayoutError, match="out of range"):
        lay.rank_coords(2)
    with pytest.raises(LayoutError, match="frame must be 0"):
        lay.index_map(2, 0)
    with pytest.raises(LayoutError, match="frame must be 0"):
        lay.route(0, 3)
    assert issubclass(LayoutError, ValueError)


# ---- pole mask ------------------------------------------------------------------------------
def reference_wrap_mask(ws_h: int, ws_w: int) -> np.ndarray:
    """Mask of a window that wraps pole to pole: top half rows never see bottom half rows."""
    top = quadrant_major_coords(ws_h, ws_w)[:, 0] < ws_h // 2
    return top[:, None] == top[None, :]


@pytest.mark.parametrize("case", [(16, 24, 4, 4, 2, 3, 1), (36, 16, 6, 4, 3, 2, 2), (16, 16, 4, 8, 1, 2, 4)])
def test_latitude_wrap_mask(case):
    H, W, wh, ww, wpy, wpx, sp = case
    lay = WindowLayout(*case)
    nly, nlx = lay.n_local_windows_y, lay.n_local_windows_x
    for wy, wx in itertools.product(range(wpy), range(wpx)):
        assert latitude_wrap_mask(lay, 0, wy, wx) is None
        m = latitude_wrap_mask(lay, 1, wy, wx)
        if wy != wpy - 1:  # this window rank holds no window of the last window row
            assert m is None
            continue
        assert m.shape == (lay.n_local_windows, wh * ww, wh * ww) and m.dtype == bool
        for k in range(lay.n_local_windows):
            if k // nlx == nly - 1:  # last window row: wraps from the bottom pole to the top one
                np.testing.assert_array_equal(m[k], reference_wrap_mask(wh, ww))
            else:
                assert m[k].all()


def test_latitude_wrap_mask_single_window_row():
    lay = WindowLayout(4, 8, 4, 4)
    m = latitude_wrap_mask(lay, 1, 0, 0)
    assert m is not None
    np.testing.assert_array_equal(m[0], reference_wrap_mask(4, 4))

"""SWiPe mesh: pure rank maths against brute-force enumeration, and real gloo groups."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist

from swipe.layout import LayoutError, WindowLayout
from swipe.mesh import DIMS, MeshError, MeshShape, SwipeMesh
from swipe.testing import run_distributed

SHAPES = [(1, 1, 1, 1, 1), (2, 3, 2, 1, 2), (1, 2, 2, 3, 4), (3, 1, 1, 2, 1), (2, 2, 2, 2, 2)]


def brute_coords(shape):
    """Rank -> coordinates by counting through nested loops, sp innermost."""
    return list(itertools.product(*(range(n) for n in shape)))


def brute_groups(shape, dims):
    """Group every rank with those that agree on all dims NOT in `dims`."""
    coords = brute_coords(shape)
    keep = [i for i, d in enumerate(DIMS) if d not in dims]
    out = {}
    for r, c in enumerate(coords):
        out.setdefault(tuple(c[i] for i in keep), []).append(r)
    return [out[k] for k in sorted(out)]


@pytest.mark.parametrize("shape", SHAPES)
def test_coords_and_rank(shape):
    m = MeshShape(*shape)
    assert m.world_size == len(brute_coords(shape))
    for r, c in enumerate(brute_coords(shape)):
        assert tuple(m.coords(r)) == c
        assert m.rank(*c) == r
    n_window = shape[2] * shape[3] * shape[4]
    for r, (d, p, y, x, s) in enumerate(brute_coords(shape)):
        assert m.window_rank(r) == (y * shape[3] + x) * shape[4] + s
        assert r == (d * shape[1] + p) * n_window + m.window_rank(r)


@pytest.mark.parametrize("shape", SHAPES)
def test_groups_match_brute_force(shape):
    m = MeshShape(*shape)
    assert m.sp_groups() == brute_groups(shape, {"sp"})
    assert m.window_groups() == brute_groups(shape, {"wy", "wx", "sp"})
    assert m.weight_groups() == brute_groups(shape, {"dp", "wy", "wx", "sp"})
    assert m.pp_groups() == brute_groups(shape, {"pp"})
    assert m.dp_groups() == brute_groups(shape, {"dp"})
    # each family partitions the world
    for fam in (m.sp_groups(), m.window_groups(), m.weight_groups(), m.pp_groups(), m.dp_groups()):
        assert sorted(r for g in fam for r in g) == list(range(m.world_size))
    for r in range(m.world_size):
        assert r in m.group_of(r, ("pp",))


def test_window_group_order_matches_layout():
    m = MeshShape(2, 2, 2, 3, 4)
    lay = WindowLayout(16, 24, 4, 4, 2, 3, 4)
    for g in m.window_groups():
        for r_win, r in enumerate(g):
            c = m.coords(r)
            assert lay.rank_index(c.wy, c.wx, c.sp) == r_win == m.window_rank(r)


def test_pipeline_neighbours():
    m = MeshShape(2, 3, 2, 1, 2)
    for r in range(m.world_size):
        c = m.coords(r)
        nxt, prv = m.next_stage_ranks(r), m.prev_stage_ranks(r)
        if c.pp == 2:
            assert nxt is None
        else:
            assert len(nxt) == m.n_window
            for r_win, q in enumerate(nxt):
                cq = m.coords(q)
                assert (cq.dp, cq.pp) == (c.dp, c.pp + 1) and m.window_rank(q) == r_win
        if c.pp == 0:
            assert prv is None
        else:
            assert [m.coords(q).pp for q in prv] == [c.pp - 1] * m.n_window
            assert m.window_rank(prv[m.window_rank(r)]) == m.window_rank(r)


def test_errors():
    with pytest.raises(MeshError, match="sp=0"):
        MeshShape(1, 1, 1, 1, 0)
    m = MeshShape(2, 1, 2, 2, 2)
    with pytest.raises(MeshError, match="world size 8 does not match .* = 16"):
        m.check_world(8)
    with pytest.raises(MeshError, match="out of range"):
        m.coords(16)
    with pytest.raises(MeshError, match="wx=2 out of range"):
        m.rank(0, 0, 0, 2, 0)
    with pytest.raises(MeshError, match="distinct names"):
        m.groups(("sp", "tp"))
    with pytest.raises(MeshError, match="heads=6 is not divisible by sp=4"):
        MeshShape(1, 1, 1, 1, 4).validate(8, 8, 4, 4, heads=6)
    with pytest.raises(LayoutError, match="window-parallel grid"):
        MeshShape(1, 1, 3, 1, 1).validate(8, 8, 4, 4)
    with pytest.raises(LayoutError, match="cannot be cut into sp=8"):
        MeshShape(1, 1, 1, 1, 8).validate(4, 4, 2, 2)
    lay = MeshShape(1, 1, 2, 2, 4).validate(16, 16, 4, 4, heads=8)
    assert (lay.wpy, lay.wpx, lay.sp, lay.H) == (2, 2, 4, 16)


# ---- real process groups --------------------------------------------------------------------
def _check_mesh(rank, world, shapes):
    out = []
    for shape in shapes:
        m = SwipeMesh.build(*shape)
        got = {}
        for name in ("sp_group", "dp_group", "pp_group", "window_group", "weight_group"):
            g = getattr(m, name)
            t = torch.tensor([float(rank)], dtype=torch.float64)
            dist.all_reduce(t, group=g)  # real traffic through the group
            got[name] = (dist.get_process_group_ranks(g), t.item())
        got["mesh_names"] = m.device_mesh.mesh_dim_names
        got["coords"] = tuple(m.coords)
        got["next"] = m.next_stage_ranks
        out.append(got)
    try:
        SwipeMesh.build(2, 1, 1, 1, 1)
    except MeshError as e:
        out.append(str(e))
    return out


@pytest.mark.multiproc
def test_swipe_mesh_groups_8_ranks():
    shapes = [(2, 2, 1, 2, 1), (1, 1, 2, 2, 2), (1, 2, 1, 1, 4)]
    results = run_distributed(_check_mesh, 8, args=(shapes,), timeout=120)
    for i, shape in enumerate(shapes):
        ms = MeshShape(*shape)
        for rank, res in enumerate(results):
            got = res[i]
            assert got["mesh_names"] == DIMS
            assert got["coords"] == tuple(ms.coords(rank))
            assert got["next"] == ms.next_stage_ranks(rank)
            for name, dims in [("sp_group", ("sp",)), ("dp_group", ("dp",)), ("pp_group", ("pp",)),
                               ("window_group", ("wy", "wx", "sp")),
                               ("weight_group", ("dp", "wy", "wx", "sp"))]:
                ranks, total = got[name]
                expect = ms.group_of(rank, dims)
                assert ranks == expect, (shape, rank, name)
                assert total == float(sum(expect))
    for res in results:
        assert "world size 8 does not match" in res[-1]

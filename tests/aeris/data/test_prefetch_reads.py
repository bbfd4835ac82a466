"""What a rank reads: only the arrays of the asked fields, and tiles sized to its pieces.

Tiny store: 9x16 source grid -> 8x16 model grid, window 4x4 (quadrants 2x2), 6 channels, one
forcing + two static fields. Under sp = 8 a piece is 2 tokens (one row of a quadrant): quadrant
tiles read twice the rank's tokens, the piece tile (1, 2) exactly them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from aeris.data.config import DataConfig
from aeris.data.dataset import SAMPLE_FIELDS, ForecastDataset
from aeris.data.prepared import PreparedStore, prepare
from aeris.data.store import DataError
from aeris.data.tiling import chunk_tile, piece_tile, read_amplification, tiles_of
from swipe.layout import WindowLayout
from tests.support.stores import make_dataset, small_data_cfg, write

WINDOW = (4, 4)
LEVELS = [500, 850]
GRID = (8, 16)
N_STATE, N_FORCING, N_STATIC = 6, 1, 2


_cfg = small_data_cfg


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same source prepared twice: quadrant tiles (the default) and the sp-8 piece tile."""
    tmp = Path(tmp_path_factory.mktemp("tiles"))
    src = write(make_dataset(n_lat=9, n_lon=16, n_time=10, levels=LEVELS), tmp / "era5.zarr")
    quad = _cfg(src)
    prepare(quad, WINDOW, progress=False)
    piece = _cfg(src, prepared=str(tmp / "piece.prepared.zarr"), tile=[1, 2])
    prepare(piece, WINDOW, progress=False)
    return quad, piece


# ---- tile maths -----------------------------------------------------------------------------------
def _exact_for_every_rank(window, sp, tile) -> bool:
    """Reference: every rank of a 2x2-window field with `sp` pieces reads only its own tokens."""
    grid = (2 * window[0], 2 * window[1])
    lay = WindowLayout(*grid, *window, sp=sp)
    return all(read_amplification(lay.index_map(0, r), grid, tile) == 1.0 for r in range(lay.n_ranks))


@pytest.mark.parametrize("window,sp,want", [
    ((30, 30), 1, (15, 15)), ((30, 30), 2, (15, 15)), ((30, 30), 4, (15, 15)), ((30, 30), 12, (5, 15)),
    ((30, 30), 36, (1, 5)), ((8, 8), 8, (2, 4)), ((8, 8), 16, (1, 4)), ((6, 6), 12, (1, 3)), ((4, 4), 8, (1, 2)),
])
def test_piece_tile_is_the_largest_exact_tile(window, sp, want):
    assert piece_tile(window, sp) == want
    assert _exact_for_every_rank(window, sp, want)
    # brute force over the global index maps: no tile of a quadrant with more tokens is exact
    qh, qw = window[0] // 2, window[1] // 2
    for th, tw in itertools.product(range(1, qh + 1), range(1, qw + 1)):
        if qh % th == 0 and qw % tw == 0 and th * tw > want[0] * want[1]:
            assert not _exact_for_every_rank(window, sp, (th, tw)), (th, tw)


def test_quadrant_tiles_read_k_times_the_piece():
    lay = WindowLayout(60, 60, 30, 30, sp=12)  # a 75-token piece in a 15x15 quadrant tile
    assert read_amplification(lay.index_map(0, 5), (60, 60), (15, 15)) == 3.0
    assert read_amplification(lay.index_map(0, 5), (60, 60), (5, 15)) == 1.0


def test_chunk_tile_config():
    assert chunk_tile(DataConfig(), (30, 30), 12) == (5, 15)
    assert chunk_tile(DataConfig(), (30, 30)) == (15, 15)
    assert chunk_tile(DataConfig(tile=[3, 5]), (30, 30), 12) == (3, 5)
    with pytest.raises(ValueError, match="data.tile"):
        DataConfig(tile=[3])


# ---- reads -----------------------------------------------------------------------------------------
def _spy(ds, monkeypatch) -> list[tuple[str, int]]:
    """(array, times) of every read of this dataset's store."""
    calls: list[tuple[str, int]] = []
    real = ds.store.read_tiles

    def read_tiles(name, time_index, *a):
        calls.append((name, 0 if time_index is None else len(np.atleast_1d(time_index))))
        return real(name, time_index, *a)

    monkeypatch.setattr(ds.store, "read_tiles", read_tiles)
    return calls


def test_only_the_arrays_of_the_asked_fields_are_read(stores, monkeypatch):
    quad, _ = stores
    full = ForecastDataset(quad, "train")
    ref = full[1]
    cases = {("cond", "forcing", "target"): [("state", 2), ("static", 0), ("forcing", 2)],  # static read once
             ("target",): [("state", 2)], ("cond",): [("state", 1)], ("forcing",): [("static", 0), ("forcing", 2)],
             (): []}
    for fields, want in cases.items():
        ds = ForecastDataset(quad, "train", fields=fields)
        calls = _spy(ds, monkeypatch)
        s = ds[1]
        assert sorted(calls) == sorted(want), fields
        assert set(s) == set(fields) | {"time", "index"}
        for k in fields:
            assert torch.equal(s[k], ref[k]), (fields, k)
        calls.clear()
        ds[2]
        assert sorted(calls) == sorted(w for w in want if w[0] != "static")  # static fields: once per dataset
    with pytest.raises(DataError, match="fields must be among"):
        ForecastDataset(quad, "train", fields=("cond", "labels"))
    assert SAMPLE_FIELDS == ("cond", "forcing", "target")


def test_a_target_only_read_still_refuses_bad_states(stores, monkeypatch):
    quad, _ = stores
    ds = ForecastDataset(quad, "train", fields=("target",))
    real = ds.store.read_tiles

    def corrupt(name, time_index, *a):
        out = real(name, time_index, *a)
        out[-1, 0, 0, 0] = np.nan  # t+dt, first channel
        return out

    monkeypatch.setattr(ds.store, "read_tiles", corrupt)
    with pytest.raises(DataError, match=r"bad sample 1 .* state 't2m' \(2m_temperature\) at 2020-08-01T12:00"):
        ds[1]


@pytest.mark.parametrize("sp", [4, 8])
def test_piece_tiles_read_exactly_the_tokens(stores, sp, monkeypatch):
    """Bytes read per sample = chunk bytes (tokens x amplification) + one index entry per tile
    (no unwanted entries read through here); the tokens are the same whichever the tiles."""
    monkeypatch.setattr("aeris.data.prepared.INDEX_GAP", 0)
    quad, piece = stores
    lay = WindowLayout(*GRID, *WINDOW, sp=sp)
    for r in range(lay.n_ranks):
        ids = lay.index_map(0, r)
        got = {}
        for cfg, tile in ((quad, (2, 2)), (piece, (1, 2))):
            ds = ForecastDataset(cfg, "train", index_map=ids)
            assert PreparedStore(ds.store.path).tile == tile
            ds[0]  # static fields read once
            ds.io.reset()
            got[tile] = ds[1]
            amp = ds.read_amplification()
            assert amp == read_amplification(ids, GRID, tile)
            needed = ids.size * 4 * (2 * N_STATE + 2 * N_FORCING)  # state and forcing at t and t+dt
            index = 2 * 2 * len(tiles_of(ids, GRID, tile)) * 16
            assert ds.io.bytes == needed * amp + index, (sp, r, tile)
        assert read_amplification(ids, GRID, (2, 2)) == (2.0 if sp == 8 else 1.0)
        assert read_amplification(ids, GRID, (1, 2)) == 1.0
        for k in SAMPLE_FIELDS:
            assert torch.equal(got[(2, 2)][k], got[(1, 2)][k]), (sp, r, k)


@pytest.mark.parametrize("gap,entries", [(0, 4), (5, 4), (6, 10), (256, 10)])
def test_index_entries_read(stores, monkeypatch, gap, entries):
    """Window (0, 0) is tiles 0, 1, 8, 9 of the 4x8 tile grid: their 4 index entries, or the 10
    from 0 to 9 when up to `gap` unwanted entries between two wanted ones are read through."""
    monkeypatch.setattr("aeris.data.prepared.INDEX_GAP", gap)
    quad, _ = stores
    lay = WindowLayout(*GRID, *WINDOW, wpy=2, wpx=4)
    ds = ForecastDataset(quad, "train", index_map=lay.index_map(0, 0))
    ds.store.io.reset()
    block = ds.store.read_tiles("state", [0], ds._tiles, ds._tile_rows, ds._tile_cols)
    assert ds.store.io.bytes == 4 * N_STATE * 2 * 2 * 4 + entries * 16  # 4 chunks of 6 x 2 x 2 float32
    whole = PreparedStore(ds.store.path).array("state")[0]
    np.testing.assert_array_equal(block[0], whole[:, :4, :4])

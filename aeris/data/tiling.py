"""Chunk tiles of the prepared store against the tokens a rank reads (pure index maths).

A rank reads whole chunk tiles (th, tw) of the prepared store: the tiles holding the tokens of
its index map (frame 0). The read amplification of an index map is

    tokens in the tiles read / tokens of the index map            (1 = exactly its tokens)

Inside a window the tokens are quadrant-major and cut into ``sp`` contiguous pieces
(swipe.layout). For sp in {1, 2, 4} a piece is made of whole quadrants, so quadrant tiles
(the default, ``window / 2``) read exactly a rank's tokens. For sp = 4k each quadrant of
qh x qw tokens holds k pieces of qh qw / k tokens in row-major order: bands of qh / k rows when
k divides qh (30x30 windows, sp 12: 5 x 15 bands of 75 tokens, a third of a 15 x 15 quadrant
tile), shorter runs otherwise. `piece_tile` is the largest tile inside a quadrant that never
straddles two pieces (docs/data.md, "Prepared training store").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aeris.data.config import DataConfig
from swipe.layout import WindowLayout, quadrant_major_coords

__all__ = ["piece_tile", "chunk_tile", "tiles_of", "read_amplification"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def piece_tile(window: Sequence[int], sp: int = 1) -> tuple[int, int]:
    """The largest tile (th, tw) with th | ws_h/2 and tw | ws_w/2 such that every tile of a
    window lies in one sequence piece of ``sp`` (ties: the wider tile, whose rows are longer
    contiguous runs). A window quadrant for sp in {1, 2, 4}."""
    ws_h, ws_w = int(window[0]), int(window[1])
    per_piece = WindowLayout(ws_h, ws_w, ws_h, ws_w, sp=int(sp)).tokens_per_piece  # validates sp
    rc = quadrant_major_coords(ws_h, ws_w)        # slot in the window -> (row, col)
    piece = np.arange(ws_h * ws_w) // per_piece    # slot -> sequence piece
    best = (0, 0, (1, 1))
    for th in _divisors(ws_h // 2):
        for tw in _divisors(ws_w // 2):
            tile = (rc[:, 0] // th) * (ws_w // tw) + rc[:, 1] // tw
            lo = np.full(tile.max() + 1, piece.max() + 1)
            hi = np.full(tile.max() + 1, -1)
            np.minimum.at(lo, tile, piece)
            np.maximum.at(hi, tile, piece)
            if np.array_equal(lo, hi) and (th * tw, tw) > best[:2]:
                best = (th * tw, tw, (th, tw))
    return best[2]


def chunk_tile(cfg: DataConfig, window: Sequence[int], sp: int = 1) -> tuple[int, int]:
    """The tile a prepared store is built with: ``data.tile`` when set, else `piece_tile` of the
    run's window and sequence pieces (``swipe.sp``; 1 = a window quadrant)."""
    if cfg.tile:
        return int(cfg.tile[0]), int(cfg.tile[1])
    return piece_tile(window, sp)


def tiles_of(index_map: np.ndarray, grid: Sequence[int], tile: Sequence[int]) -> np.ndarray:
    """The (tile row, tile col) pairs holding the tokens ``y * W + x`` of ``index_map``, sorted."""
    W = int(grid[1])
    ids = np.asarray(index_map, dtype=np.int64).ravel()
    return np.unique(np.stack([ids // W // int(tile[0]), ids % W // int(tile[1])], 1), axis=0)


def read_amplification(index_map: np.ndarray, grid: Sequence[int], tile: Sequence[int]) -> float:
    """Tokens in the tiles holding ``index_map`` over its (distinct) tokens; 1 = exact."""
    n = np.unique(np.asarray(index_map)).size
    return len(tiles_of(index_map, grid, tile)) * int(tile[0]) * int(tile[1]) / n if n else 1.0

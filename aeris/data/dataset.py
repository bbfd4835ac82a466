"""Training samples in TOKEN layout, read per rank from the prepared store.

Contract (the trainer and the rollout are written against it)
------------------------------------------------------------
``ds = ForecastDataset(cfg, split, index_map=None, frame=0, prepared=None)``

* A view: it opens the prepared store that exists (`aeris.data.prepared.prepare`, or
  ``aeris data prepare``, builds it: an explicit step) and checks that it matches ``cfg``;
  it never computes statistics or writes anything.

* Samples: every time t of the split's period (``cfg.<split>_period``, inclusive dates) such
  that t + dt (``cfg.dt_hours``) is in the same period and both are in the prepared store;
  sorted by t. ``len(ds)`` samples, ``ds.times[i]`` = t of sample i.
* ``index_map``: int array (n_lw, tpp) of global token ids ``y * W + x`` held by this rank
  (`swipe.layout.WindowLayout.index_map`). None = the whole field as one piece in the trivial
  one-rank layout ``WindowLayout(H, W, ws_h, ws_w).index_map(frame, 0)`` (window of the
  prepared store). Every tensor is ``global_field[..., index_map]`` moved channel-last.
* ``ds[i]`` is a dict:
    "cond"    float32 (n_lw, tpp, C_prog)  standardised X(t):  (X - mean) / std
    "forcing" float32 (n_lw, tpp, C_forc)  standardised [forcings at t (config order),
                                            forcings at t+dt (same order), static fields
                                            (config order)]; C_forc = 2 n_forcings + n_static
    "target"  float32 (n_lw, tpp, C_prog)  standardised residual
                                            (X(t+dt) - X(t) - diff_mean) / diff_std
    "time"    int64 scalar tensor          t in ns since 1970-01-01
    "index"   int64 scalar tensor          i
* Reconstruction: X(t+dt) = X(t) + ``ds.denormalize_residual(r)``;
  ``ds.advance(cond, r)`` gives the next standardised state directly.
* Helpers: ``channels`` (prognostic names), ``forcing_channels`` (names of the C_forc inputs,
  e.g. ``tisr@t``, ``tisr@t+dt``, ``zs``, ``lsm``), ``n_forcing``, ``grid`` (H, W), ``window``,
  ``latitudes`` (H,) degrees of the model-grid rows, ``token_latitudes`` (n_lw, tpp),
  ``normalize_state`` / ``denormalize_state`` / ``denormalize_residual`` (channel-last numpy
  or torch), ``state_at(times)`` (n, n_lw, tpp, C_prog) standardised states,
  ``forcing_at(times)`` (n, n_lw, tpp, C_forc) the forcing tokens of steps starting at each
  time (read from the prepared store; TOA radiation computed analytically past its end), ``to_field(tokens)`` (..., H, W) for an index
  map that covers the whole field.
* I/O: only the chunks holding this rank's tokens are read (``ds.io.bytes``/``ds.io.requests``
  count them). Picklable for DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from aeris.data.config import DataConfig
from aeris.data.forcings import toa_incident_solar_radiation
from aeris.data.normalize import Normalizer
from aeris.data.prepared import PreparedStore, expected_record, prepared_path
from aeris.data.stats import load_stats, stats_path, time_pairs
from aeris.data.store import DataError, period_bounds
from swipe.layout import WindowLayout

__all__ = ["ForecastDataset", "SPLITS"]

SPLITS = ("train", "val", "test")


class ForecastDataset(Dataset):
    """One rank's view of the (X(t), forcings, residual) samples of a split (module docstring)."""

    def __init__(self, cfg: DataConfig, split: str, index_map: np.ndarray | None = None, frame: int = 0,
                 *, prepared: str | None = None):
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}")
        self.cfg, self.split = cfg, split
        path = prepared or prepared_path(cfg)
        if not Path(path).exists():
            raise DataError(f"prepared store {path} not found: run `aeris data prepare` (the trainer "
                            f"prepares a missing store itself)")
        self.store = PreparedStore(path)
        spath = Path(stats_path(cfg))
        self.store.check(expected_record(cfg, load_stats(spath) if spath.exists() else None))
        H, W = self.grid = self.store.grid
        self.window = self.store.window
        if index_map is None:
            index_map = WindowLayout(H, W, *self.window).index_map(frame, 0)
        ids = np.asarray(index_map)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"index_map must be an int array (n_local_windows, tokens_per_piece), "
                            f"got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= H * W):
            raise DataError(f"index_map ids must lie in [0, {H * W}) for the {H}x{W} grid, "
                            f"got [{ids.min()}, {ids.max()}]")
        self.index_map = ids.astype(np.int64)
        y, x = self.index_map // W, self.index_map % W
        # read whole chunk tiles: those holding the rank's tokens, laid out in a block of the
        # tile rows x tile cols they span (rows/cols = the grid indices of those tiles)
        th, tw = self.store.tile
        self._tiles = np.unique(np.stack([y.ravel() // th, x.ravel() // tw], 1), axis=0)
        self._tile_rows, self._tile_cols = np.unique(self._tiles[:, 0]), np.unique(self._tiles[:, 1])
        self._rows = (self._tile_rows[:, None] * th + np.arange(th)).ravel()
        self._cols = (self._tile_cols[:, None] * tw + np.arange(tw)).ravel()
        self._pos = np.searchsorted(self._rows, y) * len(self._cols) + np.searchsorted(self._cols, x)

        self.channels = self.store.channels
        forc, stat = self.store.forcing_channels, self.store.static_channels
        self.forcing_channels = [f"{c}@t" for c in forc] + [f"{c}@t+dt" for c in forc] + stat
        self.n_forcing = len(self.forcing_channels)
        rec = self.store.record["stats"]
        self.normalizer = Normalizer.from_record(rec, self.channels, forc + stat)
        self.latitudes = self.store.latitudes.copy()
        self.longitudes = self.store.longitudes.copy()
        self.token_latitudes = self.latitudes[y]
        self.dt = np.timedelta64(int(cfg.dt_hours), "h")
        period = getattr(cfg, f"{split}_period")
        covered = self.store.record.get("periods_range")
        if covered and period:
            lo, hi = period_bounds(covered)
            start, end = period_bounds(period)
            if start < lo or end > hi:
                raise DataError(
                    f"split {split!r} period {list(period)} reaches outside the periods "
                    f"{list(covered)} the prepared store {self.store.path} was built for: rebuild it "
                    f"(`aeris data prepare --overwrite`) so that no sample is silently missing")
        self._i0, self._i1 = time_pairs(self.store.times, cfg.dt_hours, period)
        if self._i0.size == 0:
            raise DataError(f"split {split!r} ({period}) has no (t, t+{cfg.dt_hours}h) pair in the prepared "
                            f"store {self.store.path} ({self.store.times[0]} .. {self.store.times[-1]})")
        self.times = self.store.times[self._i0]
        self._static = None
        self.io = self.store.io

    # ---- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._i0.size)

    @property
    def n_local_windows(self) -> int:
        return self.index_map.shape[0]

    @property
    def tokens_per_piece(self) -> int:
        return self.index_map.shape[1]

    # ---- reading -----------------------------------------------------------------------------
    def _read(self, name: str, time_index) -> np.ndarray:
        """Block (n_times, C, rows, cols) (or (C, rows, cols) for static) of this rank's tiles."""
        if self.store.raw_layout(name):
            return self.store.read_tiles(name, time_index, self._tiles, self._tile_rows, self._tile_cols)
        return self.store.read(name, time_index, self._rows, self._cols)

    def _gather(self, block: np.ndarray) -> np.ndarray:
        """(..., C, nR, nC) block -> (..., n_lw, tpp, C) tokens of the index map."""
        flat = block.reshape(*block.shape[:-2], -1)[..., self._pos]  # (..., C, n_lw, tpp)
        return np.moveaxis(flat, -3, -1)

    def _static_tokens(self) -> np.ndarray:
        if self._static is None:
            if self.store.static_channels:
                self._static = self._gather(self._read("static", None))
            else:
                self._static = np.zeros((*self.index_map.shape, 0), dtype=np.float32)
        return self._static

    def _forcing_tokens(self, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        """(n, n_lw, tpp, C_forc) for steps (i0 -> i1)."""
        n = len(i0)
        parts = []
        if self.store.forcing_channels:
            f = self._gather(self._read("forcing", np.concatenate([i0, i1])))
            parts += [f[:n], f[n:]]
        static = self._static_tokens()
        parts.append(np.broadcast_to(static, (n, *static.shape)))
        return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples of split {self.split!r}")
        i %= len(self)
        t0, t1 = self._i0[i], self._i1[i]
        z = self._gather(self._read("state", [t0, t1]))  # (2, n_lw, tpp, C)
        z0, z1 = z[0], z[1]
        target = self.normalizer.residual_from_states(z0.astype(np.float64), z1.astype(np.float64))
        forcing = self._forcing_tokens(np.array([t0]), np.array([t1]))[0]
        return {
            "cond": torch.from_numpy(np.ascontiguousarray(z0, dtype=np.float32)),
            "forcing": torch.from_numpy(np.ascontiguousarray(forcing)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "time": torch.tensor(int(self.store.times[t0].astype(np.int64)), dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    # ---- rollout helpers ---------------------------------------------------------------------
    def state_at(self, times) -> torch.Tensor:
        """Standardised states at `times` (any times of the prepared store): (n, n_lw, tpp, C_prog)."""
        idx = self.store.time_index(times)
        z = self._gather(self._read("state", idx))
        return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))

    def forcing_at(self, times) -> torch.Tensor:
        """Forcing tokens of the steps t -> t+dt for each t in `times`: (n, n_lw, tpp, C_forc).

        Times in the prepared store are read from it. Beyond it (rollouts past the data) the
        only forcing, TOA incident solar radiation, is computed analytically
        (`aeris.data.forcings`); any other forcing there is a `DataError`.
        """
        t = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
        both = np.concatenate([t, t + self.dt])
        inside = np.isin(both, self.store.times)
        if inside.all() or self.store.forcing_channels != ["tisr"]:
            i = self.store.time_index(both)  # names the missing times
            return torch.from_numpy(np.ascontiguousarray(self._forcing_tokens(i[:len(t)], i[len(t):])))
        block = np.empty((len(both), 1, len(self._rows), len(self._cols)), dtype=np.float32)
        if inside.any():
            block[inside] = self._read("forcing", self.store.time_index(both[inside]))
        tisr = toa_incident_solar_radiation(both[~inside], self.latitudes[self._rows], self.longitudes[self._cols])
        norm = self.normalizer
        block[~inside, 0] = (tisr - norm.forcing_mean[0]) / norm.forcing_std[0]
        f = self._gather(block)
        static = self._static_tokens()
        out = np.concatenate([f[:len(t)], f[len(t):], np.broadcast_to(static, (len(t), *static.shape))], axis=-1)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def to_field(self, tokens):
        """Tokens (..., n_lw, tpp, C) of a whole-field index map -> field (..., C, H, W)."""
        H, W = self.grid
        ids = self.index_map.ravel()
        if ids.size != H * W or np.unique(ids).size != H * W:
            raise DataError("to_field needs an index map covering the whole field once "
                            "(use swipe.layout.WindowLayout.assemble for a rank's piece)")
        lead = tokens.shape[:-3]
        C = tokens.shape[-1]
        flat = tokens.reshape(*lead, ids.size, C)
        inv = np.argsort(ids)
        if isinstance(tokens, torch.Tensor):
            out = flat[..., torch.from_numpy(inv).to(tokens.device), :]
            return out.movedim(-1, -2).reshape(*lead, C, H, W)
        return np.moveaxis(flat[..., inv, :], -1, -2).reshape(*lead, C, H, W)

    # ---- normalisation -----------------------------------------------------------------------
    def normalize_state(self, x):
        return self.normalizer.normalize_state(x)

    def denormalize_state(self, z):
        return self.normalizer.denormalize_state(z)

    def denormalize_residual(self, r):
        return self.normalizer.denormalize_residual(r)

    def advance(self, z0, r):
        """Next standardised state from standardised state z0 and standardised residual r."""
        return self.normalizer.advance(z0, r)

"""Training samples in TOKEN layout, read per rank from the prepared store.

Contract (the trainer and the rollout are written against it)
------------------------------------------------------------
``ds = ForecastDataset(cfg, split, index_map=None, frame=0, prepared=None, fields=SAMPLE_FIELDS)``

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
* ``fields``: the tensors ``ds[i]`` holds, any of ``SAMPLE_FIELDS`` ("cond", "forcing", "target");
  only the arrays they need are read: "target" the states at t and t+dt, "cond" the state at t,
  "forcing" the forcings and static fields (a last pipeline stage reads only "target").
* ``ds[i]`` is a dict (of the asked fields, plus "time" and "index"):
    "cond"    float32 (n_lw, tpp, C_prog)  standardised X(t):  (X - mean) / std
    "forcing" float32 (n_lw, tpp, C_forc)  standardised [forcings at t (config order),
                                            forcings at t+dt (same order), static fields
                                            (config order)]; C_forc = 2 n_forcings + n_static
    "target"  float32 (n_lw, tpp, C_prog)  standardised residual
                                            (X(t+dt) - X(t) - diff_mean) / diff_std
    "time"    int64 scalar tensor          t in ns since 1970-01-01
    "index"   int64 scalar tensor          i (with cfg.on_bad_sample="skip": the sample read in
                                            its place, see "Bad data" below)
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
  count them; ``ds.read_amplification()`` = tokens of those chunks / the rank's tokens,
  aeris.data.tiling). Picklable for DataLoader workers; ``ds[i]`` may be called from several
  threads at once (the trainer's read-ahead).
* Bad data (docs/data.md, "Checking a store"): ``cfg.exclude_times`` (ISO times, or dates for a
  whole day) leave out every sample whose t or t+dt is one of them (``len(ds)`` shrinks). Every
  sample read is checked: NaN/inf in its tensors and, with ``cfg.sample_range_check``, state and
  forcing values outside the lexicon's plausible bounds. ``cfg.on_bad_sample="error"`` (default)
  raises a `DataError` naming split, index, time and channel; ``"skip"`` logs a warning and returns
  the next good sample (i+1, i+2, ..., wrapping), judged on the WHOLE fields of its two times
  (read once per time and process), so that every rank of any layout skips the same samples and
  a resumed run reads the same data. The rollout helpers ``state_at`` / ``forcing_at`` refuse
  NaN/inf.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from aeris.data.check import channel_bounds, exclude_mask
from aeris.data.config import DataConfig
from aeris.data.forcings import toa_incident_solar_radiation
from aeris.data.lexicon import LexiconError, parse_channel
from aeris.data.normalize import Normalizer
from aeris.data.prepared import PreparedStore, expected_record, prepared_path
from aeris.data.stats import load_stats, stats_path, time_pairs
from aeris.data.store import DataError, period_bounds
from aeris.data.tiling import tiles_of
from swipe.layout import WindowLayout

__all__ = ["ForecastDataset", "SPLITS", "SAMPLE_FIELDS"]

SPLITS = ("train", "val", "test")
SAMPLE_FIELDS = ("cond", "forcing", "target")
BAD_SAMPLE_ACTIONS = ("error", "skip")
RANGE_SLACK = 1e-3  # in std units: float32 standardisation moves a value by far less

log = logging.getLogger(__name__)


class ForecastDataset(Dataset):
    """One rank's view of the (X(t), forcings, residual) samples of a split (module docstring)."""

    def __init__(self, cfg: DataConfig, split: str, index_map: np.ndarray | None = None, frame: int = 0,
                 *, prepared: str | None = None, fields: Sequence[str] = SAMPLE_FIELDS):
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, got {split!r}")
        unknown = sorted(set(fields) - set(SAMPLE_FIELDS))
        if unknown:
            raise DataError(f"fields must be among {SAMPLE_FIELDS}, got {unknown}")
        self.fields = tuple(f for f in SAMPLE_FIELDS if f in fields)
        if cfg.on_bad_sample not in BAD_SAMPLE_ACTIONS:
            raise DataError(f"data.on_bad_sample must be error|skip, got {cfg.on_bad_sample!r}")
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
        self._tiles = tiles_of(self.index_map, self.grid, (th, tw))
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
        excluded = ""
        if cfg.exclude_times:
            out = exclude_mask(self.store.times, cfg.exclude_times)
            keep = ~(out[self._i0] | out[self._i1])
            excluded = f" after data.exclude_times left out {int((~keep).sum())} sample(s)"
            self._i0, self._i1 = self._i0[keep], self._i1[keep]
        if self._i0.size == 0:
            raise DataError(f"split {split!r} ({period}) has no (t, t+{cfg.dt_hours}h) pair in the prepared "
                            f"store {self.store.path} ({self.store.times[0]} .. {self.store.times[-1]}){excluded}")
        self.times = self.store.times[self._i0]
        self._static = None
        self.io = self.store.io
        # plausible bounds [physical units] of the state and forcing channels (docs/data.md, "Checking a store")
        self._state_bounds = np.array([channel_bounds(c) for c in self.channels], dtype=np.float64).reshape(-1, 2)
        forc_bounds = np.array([channel_bounds(c) for c in forc], dtype=np.float64).reshape(-1, 2)
        no_bounds = np.tile([-np.inf, np.inf], (len(stat), 1))
        self._forcing_bounds = np.concatenate([forc_bounds, forc_bounds, no_bounds]).reshape(-1, 2)
        nf = len(forc)
        norm = self.normalizer
        self._forcing_mean = np.concatenate([norm.forcing_mean[:nf], norm.forcing_mean[:nf], norm.forcing_mean[nf:]])
        self._forcing_std = np.concatenate([norm.forcing_std[:nf], norm.forcing_std[:nf], norm.forcing_std[nf:]])
        self._verdicts: dict[int, str | None] = {}  # store time index -> its whole-field problem ("skip")
        self._warned: set[int] = set()
        self._skip_lock = threading.Lock()  # reading threads judge and warn about a bad sample once

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_skip_lock"]
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._skip_lock = threading.Lock()

    # ---- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._i0.size)

    @property
    def n_local_windows(self) -> int:
        return self.index_map.shape[0]

    @property
    def tokens_per_piece(self) -> int:
        return self.index_map.shape[1]

    def read_amplification(self, name: str = "state") -> float:
        """Tokens of the chunks a read of array `name` fetches over this rank's tokens (1 = exact):
        the tiles holding them (uncompressed store), or the block of tile rows x tile columns
        they span (zarr's orthogonal selection, compressed store)."""
        n = np.unique(self.index_map).size
        if self.store.raw_layout(name):
            th, tw = self.store.tile
            return len(self._tiles) * th * tw / n
        return len(self._rows) * len(self._cols) / n

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
        if self.cfg.on_bad_sample == "skip":
            i = self._next_good(i)
        t0, t1 = self._i0[i], self._i1[i]
        fields = self.fields
        # only the arrays the asked fields need: the residual needs both states, cond the first
        times = [t0, t1] if "target" in fields else [t0] if "cond" in fields else []
        z = self._gather(self._read("state", times)) if times else None  # (len(times), n_lw, tpp, C)
        target = forcing = None
        if "target" in fields:
            target = self.normalizer.residual_from_states(z[0].astype(np.float64), z[1].astype(np.float64))
        if "forcing" in fields:
            forcing = self._forcing_tokens(np.array([t0]), np.array([t1]))[0]
        problem = self._token_problem(z, forcing, target, t0, t1)
        if problem:  # in "skip" mode only if the whole-field verdict missed it (it cannot: a subset)
            raise DataError(f"bad sample {i} of split {self.split!r} ({self._span(i)}): {problem}; set "
                            f"data.on_bad_sample=skip to skip such samples, or list the time in "
                            f"data.exclude_times (`aeris data check` finds them)")
        out = {}
        if "cond" in fields:
            out["cond"] = torch.from_numpy(np.ascontiguousarray(z[0], dtype=np.float32))
        if forcing is not None:
            out["forcing"] = torch.from_numpy(np.ascontiguousarray(forcing))
        if target is not None:
            out["target"] = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
        out["time"] = torch.tensor(int(self.store.times[t0].astype(np.int64)), dtype=torch.int64)
        out["index"] = torch.tensor(i, dtype=torch.int64)
        return out

    # ---- checks (docs/data.md, "Checking a store") --------------------------------------------
    def _iso(self, t: int) -> str:
        return np.datetime_as_string(self.store.times[t], unit="m")

    def _span(self, i: int) -> str:
        return f"t = {self._iso(self._i0[i])}, t+dt = {self._iso(self._i1[i])}"

    def _problem(self, x: np.ndarray, names: list[str], when, mean: np.ndarray, std: np.ndarray,
                 bounds: np.ndarray) -> str | None:
        """The first bad value of standardised x (T, C, N) described (``names[c]`` the channel,
        ``when(t, c)`` its time); None when every value is finite and, with
        ``sample_range_check``, inside the channel's plausible bounds (C, 2) [physical units]."""
        bad = ~np.isfinite(x).all(axis=-1)
        if bad.any():
            t, c = np.argwhere(bad)[0]
            n = int((~np.isfinite(x[t, c])).sum())
            return f"{names[c]}{when(t, c)}: {n} of {x.shape[-1]} values NaN/inf"
        if not self.cfg.sample_range_check or x.size == 0:
            return None
        lo = x.min(axis=-1).astype(np.float64) * std + mean  # (T, C) physical
        hi = x.max(axis=-1).astype(np.float64) * std + mean
        slack = RANGE_SLACK * std
        bad = (lo < bounds[:, 0] - slack) | (hi > bounds[:, 1] + slack)
        if bad.any():
            t, c = np.argwhere(bad)[0]
            return (f"{names[c]}{when(t, c)}: values {lo[t, c]:.6g} .. {hi[t, c]:.6g} outside its plausible "
                    f"bounds [{bounds[c, 0]:g}, {bounds[c, 1]:g}]")
        return None

    def _state_problem(self, z: np.ndarray, times: list[str]) -> str | None:
        """z (T, C_prog, N) standardised states at `times`."""
        names = [f"state {_describe(c)}" for c in self.channels]
        return self._problem(z, names, lambda t, c: f" at {times[t]}", self.normalizer.mean,
                             self.normalizer.std, self._state_bounds)

    def _token_problem(self, z: np.ndarray | None, forcing: np.ndarray | None, target: np.ndarray | None,
                       t0: int, t1: int) -> str | None:
        """The first bad value of the parts of this rank's tokens of one sample that were read
        (None = not read): states, then forcings, then the residual; None if good."""
        times = [self._iso(t0), self._iso(t1)]
        if z is not None:
            problem = self._state_problem(_channels_first(z), times[:len(z)])
            if problem:
                return problem
        if forcing is not None:
            names = [f"forcing {_describe(c)}" for c in self.forcing_channels]
            at = [f" at {times[1]}" if c.endswith("@t+dt") else f" at {times[0]}" if c.endswith("@t") else " (static)"
                  for c in self.forcing_channels]
            problem = self._problem(_channels_first(forcing)[None], names, lambda t, c: at[c], self._forcing_mean,
                                    self._forcing_std, self._forcing_bounds)
            if problem:
                return problem
        if target is not None:
            bad = ~np.isfinite(target).all(axis=(0, 1))
            if bad.any():
                c = int(np.argmax(bad))
                return f"target (residual) {_describe(self.channels[c])} from {times[0]} to {times[1]}: NaN/inf"
        return None

    def _read_whole(self, name: str, time_index) -> np.ndarray:
        """The whole field of array `name` (every tile): (n, C, H, W), or (C, H, W) for static."""
        H, W = self.grid
        if self.store.raw_layout(name):
            th, tw = self.store.tile
            ty, tx = np.arange(H // th), np.arange(W // tw)
            tiles = np.stack(np.meshgrid(ty, tx, indexing="ij"), -1).reshape(-1, 2)
            return self.store.read_tiles(name, time_index, tiles, ty, tx)
        return self.store.read(name, time_index, np.arange(H), np.arange(W))

    def _time_verdict(self, t: int) -> str | None:
        """The problem of the WHOLE state and forcing fields at store time index t (None: good),
        read once per process: the same verdict on every rank, whatever tokens it holds."""
        t = int(t)
        if t not in self._verdicts:
            z = self._read_whole("state", [t])
            problem = self._state_problem(z.reshape(*z.shape[:2], -1), [self._iso(t)])
            forc = self.store.forcing_channels
            if problem is None and forc:
                f = self._read_whole("forcing", [t])
                nf = len(forc)
                problem = self._problem(f.reshape(*f.shape[:2], -1), [f"forcing {_describe(c)}" for c in forc],
                                        lambda _t, _c: f" at {self._iso(t)}", self._forcing_mean[:nf],
                                        self._forcing_std[:nf], self._forcing_bounds[:nf])
            self._verdicts[t] = problem
        return self._verdicts[t]

    def _check_static(self) -> None:
        if -1 in self._verdicts:
            return
        problem = None
        stat = self.store.static_channels
        if stat:
            x = self._read_whole("static", None)
            bad = ~np.isfinite(x.reshape(len(stat), -1)).all(axis=-1)
            if bad.any():
                problem = f"static {_describe(stat[int(np.argmax(bad))])}: NaN/inf values"
        self._verdicts[-1] = problem
        if problem:
            raise DataError(f"{problem} in the prepared store {self.store.path}: every sample of split "
                            f"{self.split!r} has it (rebuild the store: `aeris data prepare --overwrite`)")

    def _next_good(self, i: int) -> int:
        """Sample i, or the first good one after it (wrapping), judged on whole fields; deterministic."""
        with self._skip_lock:
            return self._next_good_locked(i)

    def _next_good_locked(self, i: int) -> int:
        self._check_static()
        n = len(self)
        skipped = []
        for k in range(n):
            j = (i + k) % n
            problem = self._time_verdict(self._i0[j]) or self._time_verdict(self._i1[j])
            if problem is None:
                for b, why in skipped:
                    log.warning("split %r: bad sample %d (%s) skipped, sample %d read instead "
                                "(data.on_bad_sample=skip): %s", self.split, b, self._span(b), j, why)
                return j
            if j not in self._warned:
                self._warned.add(j)
                skipped.append((j, problem))
        raise DataError(f"split {self.split!r}: all {n} samples are bad (data.on_bad_sample=skip); sample {i} "
                        f"({self._span(i)}): {self._time_verdict(self._i0[i]) or self._time_verdict(self._i1[i])}")

    # ---- rollout helpers ---------------------------------------------------------------------
    def state_at(self, times) -> torch.Tensor:
        """Standardised states at `times` (any times of the prepared store): (n, n_lw, tpp, C_prog)."""
        idx = self.store.time_index(times)
        z = self._gather(self._read("state", idx))
        if not np.isfinite(z).all():
            t, c = np.argwhere(~np.isfinite(z).all(axis=(1, 2)))[0]
            raise DataError(f"state {_describe(self.channels[c])} at {self._iso(idx[t])} has NaN/inf values in "
                            f"the prepared store {self.store.path}")
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
            return self._finite_forcing(self._forcing_tokens(i[:len(t)], i[len(t):]), t)
        block = np.empty((len(both), 1, len(self._rows), len(self._cols)), dtype=np.float32)
        if inside.any():
            block[inside] = self._read("forcing", self.store.time_index(both[inside]))
        tisr = toa_incident_solar_radiation(both[~inside], self.latitudes[self._rows], self.longitudes[self._cols])
        norm = self.normalizer
        block[~inside, 0] = (tisr - norm.forcing_mean[0]) / norm.forcing_std[0]
        f = self._gather(block)
        static = self._static_tokens()
        out = np.concatenate([f[:len(t)], f[len(t):], np.broadcast_to(static, (len(t), *static.shape))], axis=-1)
        return self._finite_forcing(out, t)

    def _finite_forcing(self, out: np.ndarray, t: np.ndarray) -> torch.Tensor:
        """`out` (n, n_lw, tpp, C_forc) as a tensor; a `DataError` names a NaN/inf channel and step."""
        bad = ~np.isfinite(out).all(axis=(1, 2))
        if bad.any():
            k, c = np.argwhere(bad)[0]
            raise DataError(f"forcing {_describe(self.forcing_channels[c])} of the step from "
                            f"{np.datetime_as_string(t[k], unit='m')} has NaN/inf values in the prepared store "
                            f"{self.store.path}")
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


def _channels_first(tokens: np.ndarray) -> np.ndarray:
    """(..., n_lw, tpp, C) tokens -> (..., C, n_lw * tpp)."""
    *lead, n_lw, tpp, c = tokens.shape
    return np.moveaxis(tokens.reshape(*lead, n_lw * tpp, c), -1, -2)


def _describe(channel: str) -> str:
    """``'z500'`` -> ``"'z500' (geopotential at 500 hPa)"``; ``'tisr@t+dt'`` -> its variable too."""
    try:
        name, level = parse_channel(channel.split("@")[0])
    except LexiconError:
        return repr(channel)
    return f"{channel!r} ({name}{f' at {level} hPa' if level is not None else ''})"

"""Autoregressive ensemble rollout from a checkpoint into a WB2-style forecast store.

    X(t + dt) = X(t) + diff_std * r + diff_mean,   r ~ the diffusion sampler given X(t), forcings

One unit of work is (init time, batch of members): its members are sampled together, step
after step. Member m of init T0 at step k (0-based; step k produces lead (k+1) dt) draws its
noise from keys (seed, T0 in hours since 1970, m, k) (`aeris.forecast.ensemble.member_keys`),
so any member can be regenerated alone and any unit resumed.

Choices (documented contract)
-----------------------------
* Lead 0 IS written by default (``forecast.include_initial``): the initial condition, identical
  for every member. WB2 forecast stores usually start at the first lead; keeping lead 0 lets
  the tracker start tracks at the init time and costs one field per member. Set
  ``include_initial=false`` for the WB2 convention (leads dt .. steps*dt).
* The state carried from step to step is the PHYSICAL float32 field (what is written), not a
  standardised float; the step is computed in float64 and rounded to float32. A resumed run
  reads that field back from the store and continues bit-identically.
* Forcings of a step t -> t+dt come from the prepared store when both times are in it; past
  its end the TOA insolation is computed (`aeris.data.forcings`, 1 h accumulation ending at the
  valid time, as ERA5) with ``forcing_fallback="compute"``, or the rollout stops with an error
  naming the last available time. Other time-varying forcings cannot be computed.
* Output grid = the source grid: the dropped polar row is padded back with
  `aeris.data.store.pad_row` (``pad_mode`` copy or nan).
* Data parallel: units are dealt round-robin to ranks (torch.distributed, any backend);
  each rank writes its own regions; rank 0 creates the store. The result is the same store.
* Member batch of the network evaluations (``forecast.eval_batch``): inside a unit the sampler
  runs on consecutive groups of that many members. 0 = measured once per process at the start
  (`measure_eval_batch`: one evaluation at 1, 2, 4, ... members up to the unit, the lowest time
  per member wins, the same on every rank). Noise is keyed per member, so the output does not
  depend on it (docs/evaluation.md, "Member batch of the network evaluations").
* Writes: the writer rank's region writes and progress records run in one background thread,
  in order, overlapping the next step's network evaluations; every write is finished before
  `run_forecast` returns or raises, and a progress record always follows its data.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from aeris.checkpoint.weights import read_weights, resolve_checkpoint
from aeris.config import Config, from_dict, to_dict
from aeris.data.config import DataConfig
from aeris.data.dataset import ForecastDataset
from aeris.data.forcings import toa_incident_solar_radiation
from aeris.data.store import DataError, pad_row, drop_row
from aeris.diffusion.config import DiffusionConfig
from aeris.forecast.config import ForecastConfig
from aeris.forecast.ensemble import init_hours, member_keys, sample_residuals
from aeris.model.network import AerisNet
from aeris.stop import StopRequest, agreed
from aeris.forecast.store_writer import ForecastStore, StoreSpec
from swipe.context import SerialContext
from swipe.layout import WindowLayout

__all__ = ["Forecaster", "ForecastError", "ForecastStopped", "load_forecaster", "open_view", "resolve_inits",
           "member_batches", "rollout_batch", "run_forecast", "forecast_request",
           "DiffusionStepper", "RankRole", "default_role", "ForcingSource", "initial_state",
           "eval_batch_candidates", "measure_eval_batch", "choose_eval_batch"]

log = logging.getLogger(__name__)

# a stepper maps (cond (B, n_lw, tpp, C_cond), keys) -> standardised residuals (B, n_lw, tpp, C);
# one with a ``probe()`` method (the same stepper doing ONE network evaluation per call) lets
# the rollout measure its member batch
Stepper = Callable[[torch.Tensor, Sequence[Sequence[int]]], torch.Tensor]


class ForecastError(RuntimeError):
    """A forecast that cannot be run as asked (checkpoint, init times, forcings)."""


class ForecastStopped(RuntimeError):
    """A rollout stopped by a signal between units (what is written is complete)."""


# ---- the model side ----------------------------------------------------------------------------
class DiffusionStepper:
    """The diffusion sampler as a stepper: residual samples for one batch of member keys."""

    def __init__(self, model, ctx, n_out: int, dcfg):
        self.model, self.ctx, self.n_out, self.dcfg = model, ctx, n_out, dcfg

    def __call__(self, cond: torch.Tensor, keys) -> torch.Tensor:
        return sample_residuals(self.model, self.ctx, cond, keys, self.n_out, self.dcfg)

    def probe(self) -> DiffusionStepper:
        """This stepper with one sampler step: one network evaluation per call."""
        return DiffusionStepper(self.model, self.ctx, self.n_out, replace(self.dcfg, steps=1))


@dataclass
class Forecaster:
    """A loaded checkpoint ready to roll out: run config, data view, model, sampler settings."""

    cfg: Config                  # the run's configuration (from the checkpoint)
    ds: ForecastDataset          # whole-field view of the prepared store
    model: torch.nn.Module
    ctx: SerialContext
    dcfg: DiffusionConfig        # the sampler settings actually used
    checkpoint: str
    step: int
    use_ema: bool
    device: torch.device

    @property
    def channels(self) -> list[str]:
        return list(self.ds.channels)

    @property
    def dt(self) -> np.timedelta64:
        return np.timedelta64(int(self.ds.cfg.dt_hours), "h").astype("timedelta64[ns]")

    def stepper(self) -> Stepper:
        return DiffusionStepper(self.model, self.ctx, len(self.channels), self.dcfg)


def open_view(data_cfg: DataConfig, index_map: np.ndarray | None = None) -> ForecastDataset:
    """View of the prepared store (whole field, or a rank's `index_map`) through any split with
    samples: the rollout reads any time of the store, whatever the split."""
    errors = []
    for split in ("test", "val", "train"):
        try:
            return ForecastDataset(data_cfg, split, index_map=index_map)
        except DataError as e:
            errors.append(str(e))
            if "prepared store" in str(e) and "not found" in str(e):
                break
    raise ForecastError("cannot open the prepared store of the checkpoint's data config: " + " | ".join(errors))


def load_forecaster(checkpoint: str | Path, *, use_ema: bool = True, sampler_steps: int = 0,
                    churn: float = -1.0, device: str | torch.device = "cpu") -> Forecaster:
    """Model (EMA weights by default) + data view + sampler settings from a checkpoint (a file,
    a SWiPe checkpoint directory or a run directory: its newest checkpoint).

    The data section of the checkpoint's stored config names the prepared store and channels;
    the sampler is its diffusion section, with ``sampler_steps`` (> 0) and ``churn`` (>= 0)
    replacing its ``steps`` and ``churn``.
    """
    path = resolve_checkpoint(checkpoint)
    device = torch.device(device)
    state = read_weights(path)
    if not state.get("config"):
        raise ForecastError(f"checkpoint {path} has no stored config")
    cfg = from_dict(Config, json.loads(state["config"]))
    ds = open_view(cfg.data)
    if tuple(ds.window) != tuple(cfg.model.window):
        # the prepared store's tiles follow another window: read in the model's token order
        ds = open_view(cfg.data, index_map=WindowLayout(*ds.grid, *cfg.model.window).index_map(0, 0))
    meta = state.get("meta") or {}
    if meta and list(meta.get("channels", [])) != list(ds.channels):
        raise ForecastError(f"checkpoint {path} was trained on channels {meta.get('channels')}, the "
                            f"prepared store has {list(ds.channels)}")
    if meta and tuple(meta.get("grid", ds.grid)) != tuple(ds.grid):
        raise ForecastError(f"checkpoint {path} grid {meta.get('grid')} != prepared store grid {ds.grid}")
    model = AerisNet.for_data(cfg.model, len(ds.channels), ds.n_forcing, ds.grid)
    model.load_state_dict(state["model"])
    if use_ema:
        if state["ema"] is None:
            raise ForecastError(f"checkpoint {path} has no EMA weights (use use_ema=false / --no-ema)")
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(state["ema"][n].to(p.dtype))
    model.to(device).eval()
    H, W = ds.grid
    ctx = SerialContext(WindowLayout(H, W, *cfg.model.window))
    dcfg = cfg.diffusion if not sampler_steps else replace(cfg.diffusion, steps=int(sampler_steps))
    if churn >= 0:
        dcfg = replace(dcfg, churn=float(churn))
    return Forecaster(cfg, ds, model, ctx, dcfg, str(path.resolve()), int(state["step"]), use_ema, device)


# ---- times and members ---------------------------------------------------------------------------
def resolve_inits(fcfg: ForecastConfig) -> np.ndarray:
    """Initial times (datetime64[ns], sorted, unique) from ``inits`` or ``start``/``end``/``stride_hours``."""
    if fcfg.inits and (fcfg.start or fcfg.end):
        raise ForecastError("give forecast.inits OR forecast.start/end, not both")
    if fcfg.inits:
        t = [pd.Timestamp(s) for s in fcfg.inits]
    elif fcfg.start:
        end = pd.Timestamp(fcfg.end or fcfg.start)
        t = list(pd.date_range(pd.Timestamp(fcfg.start), end, freq=f"{int(fcfg.stride_hours)}h"))
        if not t:
            raise ForecastError(f"forecast.start {fcfg.start} is after forecast.end {fcfg.end}")
    else:
        raise ForecastError("no initial time: set forecast.inits or forecast.start (and end, stride_hours)")
    out = np.unique(np.array([np.datetime64(x.to_datetime64(), "ns") for x in t]))
    return out


def member_batches(members: Sequence[int], batch: int) -> list[list[int]]:
    """Consecutive batches of `batch` members (0 = all in one batch)."""
    members = [int(m) for m in members]
    b = len(members) if batch <= 0 else int(batch)
    return [members[i:i + b] for i in range(0, len(members), b)]


# ---- forcings and states in token layout --------------------------------------------------------
def _tokens(ds: ForecastDataset, field: np.ndarray) -> np.ndarray:
    """Field (..., C, H, W) -> tokens (..., n_lw, tpp, C) of the dataset's index map."""
    flat = field.reshape(*field.shape[:-2], -1)[..., ds.index_map]  # (..., C, n_lw, tpp)
    return np.moveaxis(flat, -3, -1)


class ForcingSource:
    """Forcing tokens of the steps t -> t+dt, from the prepared store or computed past its end."""

    def __init__(self, ds: ForecastDataset, fallback: str = "compute"):
        self.ds, self.fallback = ds, fallback
        times = ds.store.times
        self.last_time = times[-1]
        self._have = set(times.astype(np.int64).tolist())
        self.n_f = len(ds.store.forcing_channels)
        self._static = None

    def _in_store(self, t: np.datetime64) -> bool:
        return int(np.datetime64(t, "ns").astype(np.int64)) in self._have

    def __call__(self, t: np.datetime64) -> torch.Tensor:
        """(1, n_lw, tpp, C_forc) float32 for the step starting at t."""
        t = np.datetime64(t, "ns")
        t1 = t + self.ds.dt
        if self._in_store(t) and self._in_store(t1):
            return self.ds.forcing_at([t])
        return torch.from_numpy(self.computed(t))

    def computed(self, t: np.datetime64) -> np.ndarray:
        """Forcings of step t -> t+dt computed from the solar geometry (TOA insolation only)."""
        t = np.datetime64(t, "ns")
        names = self.ds.store.forcing_channels
        if self.fallback != "compute" or any(c != "tisr" for c in names):
            why = ("forcing_fallback='error'" if self.fallback != "compute" else
                   f"only TOA insolation can be computed, the model also needs {[c for c in names if c != 'tisr']}")
            raise ForecastError(
                f"the rollout needs forcings at {str(t)[:19]} and {str(t + self.ds.dt)[:19]} but the prepared "
                f"store ends at {str(self.last_time)[:19]} ({why})")
        nrm = self.ds.normalizer
        parts = []
        for when in (t, t + self.ds.dt):
            if names:
                x = toa_incident_solar_radiation([when], self.ds.latitudes, self.ds.longitudes, 1.0)  # (1, H, W)
                z = (x - nrm.forcing_mean[0]) / nrm.forcing_std[0]
                parts.append(_tokens(self.ds, z[:, None].astype(np.float32)))  # (1, n_lw, tpp, 1)
        parts.append(self.static_tokens()[None])
        return np.concatenate(parts, axis=-1).astype(np.float32)

    def static_tokens(self) -> np.ndarray:
        if self._static is None:
            # any step inside the store carries the static fields after the 2 n_f forcing channels
            full = self.ds.forcing_at([self.ds.times[0]])[0].numpy()
            self._static = full[..., 2 * self.n_f:]
        return self._static


# ---- the rollout core ----------------------------------------------------------------------------
@torch.no_grad()
def rollout_batch(stepper: Stepper, ds: ForecastDataset, forcing: ForcingSource, init: np.datetime64,
                  members: Sequence[int], steps: int, seed: int, *, x0: torch.Tensor | None = None,
                  start_step: int = 0, device: torch.device | str = "cpu",
                  eval_batch: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (k, X) for k = start_step+1 .. steps: the physical float32 tokens (B, n_lw, tpp, C)
    of lead k*dt for `members` of `init`.

    x0: the state at lead start_step (B or 1 leading); None = the initial condition (needs
    start_step = 0). eval_batch: members per stepper call (0 = all B at once).
    """
    init = np.datetime64(init, "ns")
    hours = init_hours(init)
    B = len(members)
    if x0 is None:
        if start_step != 0:
            raise ValueError("x0 is needed to start after step 0")
        x0 = initial_state(ds, init)
    x = x0.to(device=device, dtype=torch.float32)
    if x.shape[0] == 1 and B > 1:
        x = x.expand(B, *x.shape[1:]).clone()
    for k in range(start_step, steps):
        t = init + k * ds.dt
        f = forcing(t).to(device)
        cond = torch.cat([ds.normalize_state(x), f.expand(B, *f.shape[1:])], dim=-1)
        r = _in_groups(stepper, cond, member_keys(seed, hours, members, k), eval_batch)
        x = (x.double() + ds.denormalize_residual(r.double())).float()
        yield k + 1, x


def _in_groups(stepper: Stepper, cond: torch.Tensor, keys: list, size: int) -> torch.Tensor:
    """stepper over consecutive groups of ``size`` members (0 = all at once), concatenated."""
    if size <= 0 or size >= len(keys):
        return stepper(cond, keys)
    return torch.cat([stepper(cond[i:i + size], keys[i:i + size]) for i in range(0, len(keys), size)])


def initial_state(ds: ForecastDataset, init: np.datetime64) -> torch.Tensor:
    """Physical float32 tokens (1, n_lw, tpp, C) of the state at `init` (a DataError if absent)."""
    z = ds.state_at([np.datetime64(init, "ns")])
    return ds.denormalize_state(z.double()).float()


def from_output_field(ds: ForecastDataset, field: np.ndarray) -> torch.Tensor:
    """Written source-grid fields (for resuming) -> tokens: (B, C, n_lat, n_lon) -> (B, n_lw, tpp, C)."""
    model_field = drop_row(np.asarray(field, dtype=np.float32), ds.cfg.drop_lat_row)
    return torch.from_numpy(np.ascontiguousarray(_tokens(ds, model_field)))


# ---- member batch of the network evaluations ----------------------------------------------------
_MEASURED: dict[tuple, dict[int, float]] = {}  # per process: measurement key -> s per member


def eval_batch_candidates(n: int) -> list[int]:
    """Member batches worth timing for units of up to n members: 1, 2, 4, ... below n, and n."""
    out, b = [], 1
    while b < n:
        out.append(b)
        b *= 2
    return out + [max(1, n)]


def _synchronize(device: torch.device) -> None:
    if device.type in ("cuda", "xpu"):
        getattr(torch, device.type).synchronize(device)


def _max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over the ranks of the default group (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().tolist()


def measure_eval_batch(probe: Stepper, cond: torch.Tensor, keys: Sequence[Sequence[int]],
                       candidates: Sequence[int], *, device: torch.device | str = "cpu", repeats: int = 2,
                       clock: Callable[[], float] = time.perf_counter) -> dict[int, float]:
    """Seconds per member of one network evaluation at each candidate batch b: ``probe`` (one
    evaluation per call) on the first b members of ``cond`` (B >= max(candidates), n_lw, tpp,
    C_cond) and ``keys``: one warm-up call per candidate, then ``repeats`` rounds over all
    candidates (interleaved, so a change of load on a shared machine hits them alike); the
    least time of each, divided by b. Under torch.distributed every rank takes part and gets
    the maximum over the ranks (a collective: the probe may be one too)."""
    device = torch.device(device)

    def timed(b: int) -> float:
        _synchronize(device)
        t0 = clock()
        probe(cond[:b], list(keys[:b]))
        _synchronize(device)
        return clock() - t0

    for b in candidates:  # warm-up: allocations, caches
        timed(b)
    best = {b: float("inf") for b in candidates}
    for _ in range(repeats):
        for b in candidates:
            best[b] = min(best[b], timed(b))
    per_member = [best[b] / b for b in candidates]
    return dict(zip(candidates, _max_over_ranks(per_member, device)))


def choose_eval_batch(per_member: dict[int, float]) -> int:
    """The batch with the lowest time per member (the smaller one on a tie)."""
    return min(per_member, key=lambda b: (per_member[b], b))


def _eval_batch(fc: Forecaster, fcfg: ForecastConfig, stepper: Stepper, unit_size: int, init: np.datetime64,
                forcing: ForcingSource, members: list[int]) -> int:
    """Members per network evaluation: forecast.eval_batch, else measured (cached per process)."""
    if fcfg.eval_batch > 0:
        log.info("forecast: %d members per network evaluation (forecast.eval_batch)", fcfg.eval_batch)
        return int(fcfg.eval_batch)
    if unit_size <= 1:
        return 1
    probe = getattr(stepper, "probe", None)
    if probe is None:
        log.info("forecast: %d members per network evaluation (the whole unit; this stepper has no probe "
                 "to measure with)", unit_size)
        return unit_size
    candidates = eval_batch_candidates(unit_size)
    x = initial_state(fc.ds, init).to(fc.device)
    f = forcing(init).to(fc.device)
    cond = torch.cat([fc.ds.normalize_state(x), f], dim=-1).expand(unit_size, *x.shape[1:-1], -1)
    keys = member_keys(fcfg.seed, init_hours(init), members[:unit_size], 0)
    rank, world = _dist()
    key = (type(stepper).__name__, repr(fc.cfg.model), repr(replace(fc.dcfg, steps=1)), tuple(cond.shape),
           str(cond.dtype), str(fc.device), rank, world, tuple(candidates))
    if key not in _MEASURED:
        _MEASURED[key] = measure_eval_batch(probe(), cond, keys, candidates, device=fc.device)
    times = _MEASURED[key]
    best = choose_eval_batch(times)
    log.info("forecast: %d members per network evaluation, measured (s per member and evaluation: %s)",
             best, ", ".join(f"{b}: {t:.4g}" for b, t in times.items()))
    return best


class _Writer:
    """Runs a rollout's region writes in order in one background thread (``depth`` pending at
    most), so that they overlap the next evaluations; `drain` waits for them and re-raises
    the first failure."""

    def __init__(self, depth: int = 2):
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="forecast-write")
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[[], None]) -> None:
        self._pending.append(self._pool.submit(fn))
        while self._pending and (self._pending[0].done() or len(self._pending) > self.depth):
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)


# ---- the whole forecast --------------------------------------------------------------------------
def source_latitudes(ds: ForecastDataset) -> np.ndarray:
    """Latitudes of the source grid (the model grid's rows plus the dropped one, spacing continued)."""
    lat = ds.latitudes
    which = ds.cfg.drop_lat_row
    if which == "none":
        return lat.copy()
    step = lat[1] - lat[0] if lat.size > 1 else -1.0
    out = np.append(lat, lat[-1] + step) if which == "last" else np.insert(lat, 0, lat[0] - step)
    return np.where(np.abs(np.abs(out) - 90.0) < 1e-6, np.sign(out) * 90.0, out)  # exact poles


def forecast_request(fc: Forecaster, fcfg: ForecastConfig, inits: np.ndarray, members: list[int]) -> dict:
    """Everything that determines the output values (compared on resume)."""
    return {
        "checkpoint": fc.checkpoint, "checkpoint_step": fc.step, "use_ema": fc.use_ema,
        "inits": [str(t)[:19] for t in inits], "steps": int(fcfg.steps), "members": members,
        "seed": int(fcfg.seed), "sampler": to_dict(fc.dcfg), "batch_members": int(fcfg.batch_members),
        "include_initial": bool(fcfg.include_initial), "pad_mode": fcfg.pad_mode,
        "channels": fc.channels, "dt_hours": int(fc.ds.cfg.dt_hours),
        "forcing_fallback": fcfg.forcing_fallback,
    }


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass
class RankRole:
    """What this process does in a (parallel) forecast.

    replica / replicas: this rank's data-parallel replica and their number (units are dealt
    round-robin to replicas); writer: this rank writes its replica's regions and progress;
    gather(x): this rank's tokens (B, n_lw, tpp, C) -> the whole model-grid field (B, C, H, W)
    on the writer (None elsewhere; may be collective); barrier(): all ranks. local_gather:
    gather is local to this rank (no collective), so it may run in the writer's thread.
    """

    replica: int = 0
    replicas: int = 1
    writer: bool = True
    gather: Callable[[torch.Tensor], np.ndarray | None] | None = None
    barrier: Callable[[], None] = _barrier
    is_root: bool = True  # creates the store (global rank 0)
    local_gather: bool = False


def default_role(ds: ForecastDataset) -> RankRole:
    """One process, or plain data parallelism: every rank is one replica holding whole fields."""
    rank, world = _dist()
    return RankRole(rank, world, True, lambda x: ds.to_field(x.detach().cpu().numpy()), _barrier, rank == 0,
                    local_gather=True)


def run_forecast(fc: Forecaster, fcfg: ForecastConfig, *, stepper: Stepper | None = None,
                 callback: Callable[[dict], None] | None = None, role: RankRole | None = None) -> Path:
    """Roll out every (init, member batch) unit into ``fcfg.out``; returns the store path.

    SIGTERM, SIGUSR1 or SIGINT (aeris.stop) stop the rollout cleanly between units, on every
    rank at the same unit: the units written stay complete and a rerun continues; the
    function then raises `ForecastStopped`.

    Resumes a killed run of the same request; refuses a different one unless fcfg.overwrite.
    Under torch.distributed (without `role`), each rank is a data-parallel replica and units
    are dealt round-robin to the ranks; `aeris.forecast.parallel` passes the SWiPe role.
    `callback(event)` is called after each region is handed to the writer with {"init",
    "members", "step", "replica", "eval_batch"} (tests use it to stop a run, benchmarks to
    time steps; the regions handed over are written before run_forecast returns or raises).
    """
    ds = fc.ds
    role = role or default_role(ds)
    inits = resolve_inits(fcfg)
    for t in inits:
        try:
            init_hours(t)
        except ValueError as e:
            raise ForecastError(str(e)) from None
    members = sorted(set(fcfg.member_ids)) if fcfg.member_ids else list(range(fcfg.members))
    batches = member_batches(members, fcfg.batch_members)
    chunk = len(batches[0])
    leads = np.arange(0 if fcfg.include_initial else 1, fcfg.steps + 1) * fc.dt
    spec = StoreSpec(inits, leads, members, fc.channels, source_latitudes(ds), ds.longitudes, chunk,
                     attrs=_store_attrs(fc, fcfg))
    request = forecast_request(fc, fcfg, inits, members)
    out = Path(fcfg.out)
    if role.is_root:
        store, _ = ForecastStore.create_or_resume(out, spec, request, overwrite=fcfg.overwrite)
    role.barrier()
    if not role.is_root:
        store, _ = ForecastStore.create_or_resume(out, spec, request, overwrite=False)
    forcing = ForcingSource(ds, fcfg.forcing_fallback)
    stepper = stepper or fc.stepper()
    lead_offset = 0 if fcfg.include_initial else 1
    every = [(i, b) for i in range(len(inits)) for b in range(len(batches))]
    units = every[role.replica::role.replicas]
    # every rank reads the same progress records, so all agree on whether anything is left
    todo = any(store.completed_step(f"i{i:05d}_b{b:04d}") < fcfg.steps for i, b in every)
    eval_batch = _eval_batch(fc, fcfg, stepper, chunk, inits[0], forcing, members) if todo else 0
    writer = _Writer()

    def write(i, m0, lead_index, x, n, unit, step):
        """Region (init i, members m0.., lead) <- tokens x, then the progress record of `unit`."""
        def put(field):
            if field is None:
                return
            field = pad_row(field, ds.cfg.drop_lat_row, mode=fcfg.pad_mode)
            store.write(i, m0, lead_index, np.broadcast_to(field, (n, *field.shape[1:])))
            store.mark(unit, step)

        if role.local_gather:
            writer.submit(lambda: put(role.gather(x)))
        else:
            field = role.gather(x)  # collective under SWiPe: every rank calls it, in order
            if role.writer:
                writer.submit(lambda: put(field))

    total = sum(len(batches[b]) for _, b in units) * fcfg.steps
    tag = f" replica {role.replica}" if role.replicas > 1 else ""
    bar = tqdm(total=total, desc=f"forecast{tag}", unit="member-step",
               disable=not fcfg.progress or not role.writer, dynamic_ncols=True)
    try:
        with StopRequest() as stop:
            # rounds of one unit per replica: every rank takes part in every round's stop check
            for r in range(-(-len(every) // role.replicas)):
                why = agreed(stop.reason()) if r else None
                if why:
                    writer.drain()
                    bar.close()
                    role.barrier()
                    raise ForecastStopped(f"stopped by {why} after {r} of {len(units)} units of this replica; "
                                          f"run the same command to continue")
                if r >= len(units):
                    continue
                i, b = units[r]
                mem = batches[b]
                m0 = b * chunk
                unit = f"i{i:05d}_b{b:04d}"
                done = store.completed_step(unit)
                if done >= fcfg.steps:
                    bar.update(len(mem) * fcfg.steps)
                    continue
                x0 = None
                if done < 0 or (done == 0 and not fcfg.include_initial):
                    start = 0
                    if fcfg.include_initial:
                        x0 = initial_state(ds, inits[i])
                        write(i, m0, 0, x0, len(mem), unit, 0)
                else:
                    start = done
                    writer.drain()  # no read while the writer thread is inside the store
                    x0 = from_output_field(ds, store.read(i, m0, len(mem), done - lead_offset))
                    bar.update(len(mem) * start)
                for k, x in rollout_batch(stepper, ds, forcing, inits[i], mem, fcfg.steps, fcfg.seed,
                                          x0=x0, start_step=start, device=fc.device, eval_batch=eval_batch):
                    write(i, m0, k - lead_offset, x, len(mem), unit, k)
                    bar.update(len(mem))
                    if callback is not None:
                        callback({"init": inits[i], "members": mem, "step": k, "replica": role.replica,
                                  "eval_batch": min(eval_batch, len(mem)) if eval_batch > 0 else len(mem)})
    finally:
        writer.close()  # every region handed over is written, also when a step raised
    bar.close()
    role.barrier()
    return out


def _store_attrs(fc: Forecaster, fcfg: ForecastConfig) -> dict:
    return {
        "title": "AERIS ensemble forecast", "conventions": "WeatherBench2 forecast layout: time = "
        "initialisation time, prediction_timedelta = lead, number = member",
        "checkpoint": fc.checkpoint, "checkpoint_step": fc.step, "weights": "ema" if fc.use_ema else "raw",
        "seed": int(fcfg.seed), "sampler": to_dict(fc.dcfg),
        "noise_keys": "(seed, init hours since 1970, member, step) then global token id and channel (docs/training.md, 'Keyed noise')",
        "lead_zero": "initial condition" if fcfg.include_initial else "not included",
        "polar_row": f"{fc.ds.cfg.drop_lat_row} row padded back ({fcfg.pad_mode})",
        "config": to_dict(fc.cfg), "forecast_config": to_dict(fcfg),
        "synthetic": bool(fc.ds.store.record.get("synthetic", False)),
    }

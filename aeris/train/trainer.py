"""The one training loop: data order, schedule, EMA, validation, logging, checkpoints, resume.

    Trainer(cfg, resume=True, device="cpu").run()   # one process, or every rank of a mesh
    run_training(cfg, ...)                          # `aeris train`: launch, train, report

The loop is the same for every layout; what differs is the engine (aeris.train.engine), picked
from the mesh: `SerialEngine` when ``swipe.*`` are all 1, `SwipeEngine` (one pipeline stage of
a SWiPe mesh, aeris.train.swipe_engine) otherwise. A step's samples are
``samples_for_step(seed, n, samples_seen, B)`` with B = micro_batch x grad_accum x dp; replica d
takes the d-th contiguous block of B/dp in grad_accum micro-batches; noise and sigma are keyed
by (seed, step, position, dataset index) and every loss is divided by H*W*B, so any mesh gives
the serial run to rounding and a resumed run continues bit-exactly (docs/training.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.checkpoint.training import (CheckpointCorrupt, PendingSave, check_record, checkpoint_path, quarantine,
                                       list_checkpoints, load_checkpoint, read_record, remove_all_checkpoints,
                                       rotate_checkpoints, save_checkpoint)
from aeris.config import Config, dump_config, to_dict
from aeris.data.config import DataConfig
from aeris.data.dataset import ForecastDataset
from aeris.data.prepared import ensure_prepared
from aeris.data.tiling import chunk_tile, piece_tile
from aeris.diffusion.trigflow import loss_normaliser
from aeris.diffusion.weights import latitude_weight_field, variable_weights
from aeris.forecast.ensemble import init_hours, member_keys
from aeris.model.flops import exact_flops_per_sample, paper_flops_per_sample
from aeris.model.init import materialise
from aeris.model.network import AerisNet
from aeris.train.data_order import sample_keys, samples_for_step, split_for_replica
from aeris.train.ema import EMA, ema_decay
from aeris.train.engine import Engine, MicroBatch, SerialEngine
from aeris.stop import StopRequest, agreed
from aeris.train.guard import TooManySkips, UpdateGuard, fire, parse_fault
from aeris.train.metrics_log import MetricsLogger
from aeris.train.prefetch import StepLoader
from aeris.train.schedule import lr_at
from aeris.train.skill import (SKILL_TERMS, finish_scores, format_skill_report, partial_sums,
                               standardised_fields, validation_picks)
from aeris.train.swipe_engine import SwipeEngine
from swipe.launch import configure_threads, device_request, init_distributed, pick_device, shutdown
from swipe.comm import root_then_all
from swipe.mesh import MeshError, SwipeMesh

__all__ = ["Trainer", "DataSpec", "StepResult", "build_engine", "run_training", "autocast_dtype",
           "CPU_PEAK_FLOPS"]

log = logging.getLogger(__name__)

# a large matmul on the project's 2-core CI machines runs at ~175 GFLOP/s (fp32), ~400 (bf16)
# (docs/architecture.md, "Environment")
CPU_PEAK_FLOPS = {"fp32": 175e9, "bf16": 400e9}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The compute dtype (autocast) of ``train.precision``: bf16 when asked, or (auto) on a CUDA
    device that supports it and on Intel XPU; None (fp32) otherwise."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and ((device.type == "cuda" and torch.cuda.is_bf16_supported())
                                or device.type == "xpu"):
        return torch.bfloat16
    return None


@dataclass
class DataSpec:
    """What every rank needs to know of the data (read once, on the root rank): sample counts,
    the validation init hours (member keys), grid, channels, forcing inputs, latitudes."""

    n: int
    val_n: int
    val_hours: list[int]
    grid: tuple[int, int]
    channels: list[str]
    n_forcing: int
    latitudes: list[float]

    @classmethod
    def read(cls, cfg: DataConfig) -> DataSpec:
        train, val = ForecastDataset(cfg, "train"), ForecastDataset(cfg, "val")
        return cls(len(train), len(val), [init_hours(t) for t in val.times], tuple(train.grid),
                   list(train.channels), int(train.n_forcing), np.asarray(train.latitudes).tolist())

    @property
    def meta(self) -> dict:
        """The data record stored in checkpoints (and checked on resume)."""
        return {"channels": list(self.channels), "grid": list(self.grid), "n_forcing": self.n_forcing}


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    seconds: float
    skipped: str | None = None  # why the update was not applied
    data_wait_s: float = 0.0    # of `seconds`: waiting for this rank's micro-batches (0: read ahead in time)


def build_engine(cfg: Config, spec: DataSpec, device: torch.device) -> Engine:
    """The engine of this rank: serial for a one-rank mesh, SWiPe otherwise (the default process
    group must then hold the mesh's ranks). The network is declared on the meta device and only
    this rank's part of it is materialised on ``device``, every parameter initialised from a
    generator keyed by its global name and the run seed: the same weights in every layout."""
    tc, sw = cfg.train, cfg.swipe
    with torch.device("meta"):
        net = AerisNet.for_data(cfg.model, len(spec.channels), spec.n_forcing, spec.grid)
    w_lat = latitude_weight_field(spec.latitudes, spec.grid[1], cfg.diffusion.lat_weight_epsilon)
    w_var = variable_weights(spec.channels, cfg.diffusion.surface_weights, cfg.diffusion.level_weight_total)
    amp = autocast_dtype(tc.precision, device)
    if sw.world_size > 1:
        mesh = SwipeMesh.build(sw.dp, sw.pp, sw.wy, sw.wx, sw.sp, device_type=device.type)
        engine = SwipeEngine(net, mesh, cfg.diffusion, w_lat_field=w_lat, w_channel=w_var, amp=amp,
                             device=device, seed=tc.seed,
                             reduce_dtype=torch.bfloat16 if tc.reduce_dtype == "bf16" else None,
                             reshard_after_forward=tc.reshard_after_forward)
    else:
        net = materialise(net, device, tc.seed)
        engine = SerialEngine(net, cfg.diffusion, w_lat_field=w_lat, w_channel=w_var, device=device, amp=amp)
    engine.build_optimizer(lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    return engine


class Trainer:
    """One rank of a training run (every rank of a mesh builds one; the default process group
    must exist when ``swipe.*`` > 1). `run()` trains up to ``train.steps`` steps."""

    def __init__(self, cfg: Config, *, resume: bool = True, device: str | torch.device = "cpu"):
        self.cfg, tc = cfg, cfg.train
        self.device = torch.device(device)
        self.out_dir = Path(tc.out_dir)
        distributed = cfg.swipe.world_size > 1
        if distributed and not (dist.is_available() and dist.is_initialized()):
            raise MeshError(f"the mesh swipe.dp x pp x wy x wx x sp = {cfg.swipe.world_size} ranks needs a "
                            f"launcher (torchrun, mpiexec, srun): see `aeris train --help`")
        self._tag = "[swipe] " if distributed else ""
        # preparing the store is an explicit step, once, before any rank opens it
        # chunked by the pieces of this mesh when the store is built here (docs/data.md, "Prepared training store")
        tile = chunk_tile(cfg.data, cfg.model.window, cfg.swipe.sp)
        self.spec = root_then_all(lambda: (ensure_prepared(cfg.data, cfg.model.window, progress=tc.progress,
                                                           tile=tile), DataSpec.read(cfg.data))[1], distributed)
        self.engine = build_engine(cfg, self.spec, self.device)
        e = self.engine
        self.global_batch = tc.micro_batch * tc.grad_accum * e.replicas
        self.ema = EMA(e.model, ema_decay(self.global_batch, tc.ema_halflife_samples))
        # tokens in the MODEL's window order (the prepared store may be tiled for another window);
        # only the fields this stage uses are read
        self.train_ds = (ForecastDataset(cfg.data, "train", index_map=e.token_ids, fields=e.data_fields)
                         if e.reads_data else None)
        self.val_ds = (ForecastDataset(cfg.data, "val", index_map=e.token_ids, fields=e.data_fields)
                       if e.reads_data else None)
        # the steps' data: read in the step here; `run` reads ahead (data.prefetch_steps)
        self.loader = self._step_loader(0) if e.reads_data else None
        amp = self.train_ds.read_amplification() if e.is_root and e.reads_data else 1.0
        if amp > 1.0:  # a store tiled for other pieces: say how to read only the tokens
            th, tw = self.train_ds.store.tile
            log.info("%srank 0 reads %.2fx the bytes of its tokens from the %dx%d tiles of the prepared store; one "
                     "built with data.tile=%s reads exactly them (docs/data.md, \"Prepared training store\")",
                     self._tag, amp, th, tw, list(piece_tile(cfg.model.window, cfg.swipe.sp)))
        H, W = self.spec.grid
        with torch.device("meta"):  # shapes only
            whole = AerisNet.for_data(cfg.model, len(self.spec.channels), self.spec.n_forcing, self.spec.grid)
        self.flops_per_sample = exact_flops_per_sample(whole)
        self.paper_flops_per_sample = paper_flops_per_sample(cfg.model, H * W, whole.n_in)
        self.step = 0
        self.samples_seen = 0
        self._pending: PendingSave | None = None
        self._save_group = None
        self._rank = dist.get_rank() if distributed else 0
        self.guard = UpdateGuard(tc.max_consecutive_skips, tc.spike_factor, tc.spike_window)
        self.fault = parse_fault(os.environ.get("AERIS_FAULT", tc.fault))
        if resume:
            self._resume()
        self.logger = MetricsLogger(self.out_dir, resume_step=self.step if self.step else None,
                                    tensorboard=tc.tensorboard, wandb=tc.wandb, enabled=e.is_root)

    @property
    def model(self) -> torch.nn.Module:
        """This rank's parameters (the whole network, or its pipeline stage)."""
        return self.engine.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.engine.optimizer

    # ---- data -----------------------------------------------------------------------------------
    def _batch(self, ds: ForecastDataset, indices) -> dict[str, torch.Tensor]:
        samples = [ds[int(i)] for i in indices]
        return {k: torch.stack([s[k] for s in samples]).to(self.device) for k in ds.fields}

    def _positions(self, start: int) -> list[np.ndarray]:
        """Global positions of this rank's micro-batches of the step starting at position `start`."""
        tc, e = self.cfg.train, self.engine
        return split_for_replica(start + np.arange(self.global_batch), e.replicas, e.replica, tc.micro_batch,
                                 tc.grad_accum)

    def _indices(self, start: int) -> list[np.ndarray]:
        """Dataset indices of those micro-batches: a pure function of the seed, n and `start`."""
        idx = samples_for_step(self.cfg.train.seed, self.spec.n, start, self.global_batch)
        return [idx[p - start] for p in self._positions(start)]

    def _step_loader(self, depth: int, threads: int = 1) -> StepLoader:
        # nothing is read ahead past the run's last step
        end = self.samples_seen + (self.cfg.train.steps - self.step) * self.global_batch if depth else None
        return StepLoader(self.train_ds, self._indices, stride=self.global_batch, device=self.device, depth=depth,
                          threads=threads, end=end)

    @contextlib.contextmanager
    def _reading_ahead(self):
        """The loop reads ``data.prefetch_steps`` steps ahead on ``data.loader_threads`` threads;
        however it ends, the threads are joined and steps taken outside it read synchronously."""
        dc = self.cfg.data
        if self.loader is None or dc.prefetch_steps == 0:
            yield
            return
        sync, self.loader = self.loader, self._step_loader(dc.prefetch_steps, dc.loader_threads)
        try:
            yield
        finally:
            self.loader.close()
            self.loader = sync

    def _micro_batches(self) -> tuple[list[MicroBatch], float]:
        """This step's micro-batches and the seconds spent waiting for their data."""
        tc, start = self.cfg.train, self.samples_seen
        parts = self._positions(start)
        idx = samples_for_step(tc.seed, self.spec.n, start, self.global_batch)
        data = self.loader.get(self.step, start) if self.loader is not None else [None] * len(parts)
        wait = self.loader.wait_s if self.loader is not None else 0.0
        return [MicroBatch(sample_keys(tc.seed, self.step, p, idx[p - start]), d) for p, d in zip(parts, data)], wait

    # ---- one optimizer step ---------------------------------------------------------------------
    def train_step(self) -> StepResult:
        """One optimizer step; the update (and the EMA's) is skipped when the guard says so
        (non-finite values, a gradient-norm spike). The data position advances either way."""
        tc, e = self.cfg.train, self.engine
        H, W = self.spec.grid
        t0 = time.perf_counter()
        fire(self.fault, self.step, self._rank)
        lr = lr_at(self.step, lr=tc.lr, warmup=tc.warmup_steps, total=tc.steps, min_ratio=tc.min_lr_ratio)
        mbs, data_wait = self._micro_batches()
        loss, gnorm = e.gradients(mbs, loss_normaliser(H * W, self.global_batch), grad_clip=tc.grad_clip)
        if self.fault is not None and self.fault.kind == "nan" and self.fault.step == self.step:
            loss = float("nan")
        skipped = self.guard.check(loss, gnorm)
        if skipped is None:
            e.update(lr)
            self.ema.update(e.model)
        elif e.is_root:
            log.warning("%sstep %d: update skipped (%s: loss %s, gradient norm %s)", self._tag, self.step + 1,
                        skipped, loss, gnorm)
        self.step += 1
        self.samples_seen += self.global_batch
        self.guard.record(skipped, gnorm, self.step)
        return StepResult(loss, gnorm, lr, time.perf_counter() - t0, skipped, data_wait)

    # ---- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validation_loss(self, n_samples: int | None = None) -> float:
        """Mean loss over the first n validation samples with fixed keys (seed, -1, i), so the
        number is comparable across steps; a collective call, the same on every rank."""
        e = self.engine
        n = min(n_samples or self.cfg.train.val_samples, self.spec.val_n)
        if n == 0:
            return float("nan")
        H, W = self.spec.grid
        mbs = [MicroBatch([(self.cfg.train.seed, -1, i)], self._batch(self.val_ds, [i]) if e.reads_data else None)
               for i in range(e.replica, n, e.replicas)]
        e.model.eval()
        total = e.eval_loss(mbs, loss_normaliser(H * W, n))
        e.model.train()
        return total

    @torch.no_grad()
    def one_step_skill(self, n_inits: int, members: int, sampler_steps: int | None = None,
                       use_ema: bool = True, progress: bool = False) -> dict:
        """Ensemble one-step forecast vs persistence on held-out (validation) times.

        Scores are latitude-weighted RMSEs of standardised fields (each channel divided by its
        climatological std, so channels are comparable), averaged over channels, plus the fair
        CRPS and spread/skill ratio of the ensemble (the maths: aeris.train.skill). The inits
        ``validation_picks`` are dealt round-robin to the replicas; the members of an init are
        sampled together (under SWiPe: the pipeline's micro-batches); each scoring rank adds
        its tokens and one sum over all ranks gives the same dict on every rank.
        """
        e, spec = self.engine, self.spec
        dcfg = self.cfg.diffusion if sampler_steps is None else replace(self.cfg.diffusion, steps=sampler_steps)
        picks = validation_picks(spec.val_n, n_inits)
        was_training = e.model.training
        e.model.eval()
        stepper = e.sampler(dcfg, self.ema.shadow if use_ema else None)
        sums = torch.zeros(len(SKILL_TERMS), dtype=torch.float64)
        mine = picks[e.replica::e.replicas]
        for i in tqdm(mine, desc="ensemble validation", disable=not (progress and e.is_root), leave=False):
            keys = member_keys(self.cfg.train.seed, spec.val_hours[int(i)], range(members), 0)
            s = self.val_ds[int(i)] if e.reads_data else None
            if s is not None and "cond" in s:
                cond = torch.cat([s["cond"], s["forcing"]], -1).to(self.device)
            else:  # a later pipeline stage: the network input is built on the first stage only
                L = e.layout
                cond = torch.zeros(L.n_local_windows, L.tokens_per_piece, 0, device=self.device)
            r = stepper(cond, keys)
            if e.scores:
                fields = standardised_fields(self.val_ds, s["cond"].to(self.device), s["target"].to(self.device), r)
                sums += partial_sums(*fields, e.w_token)
        sums = e.all_sum(sums)  # every (init, token) was scored by exactly one rank
        if was_training:
            e.model.train()
        H, W = spec.grid
        return finish_scores(sums, len(picks), members, H * W * len(spec.channels))

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self) -> Path:
        """The checkpoint of this step (collective on a mesh); the newest ``keep_checkpoints`` stay.
        With ``train.async_checkpoint`` the shards are written in the background and the
        checkpoint is completed by `finish_saving` (before the next save, at the end)."""
        e, sw, tc = self.engine, self.cfg.swipe, self.cfg.train
        self.finish_saving()
        record = {"step": self.step, "samples_seen": self.samples_seen, "config": json.dumps(to_dict(self.cfg)),
                  "meta": self.spec.meta, "mesh": [sw.dp, sw.pp, sw.wy, sw.wx, sw.sp],
                  "guard": self.guard.state_dict()}
        if tc.async_checkpoint and e.distributed and self._save_group is None:
            self._save_group = dist.new_group(backend="gloo")  # the background writes' own group
        out = save_checkpoint(checkpoint_path(self.out_dir, self.step), model=e.model, optimizer=e.optimizer,
                              ema=self.ema, record=record, distributed=e.distributed,
                              asynchronous=tc.async_checkpoint, process_group=self._save_group)
        if isinstance(out, PendingSave):
            self._pending = out
            return out.path
        if e.is_root:
            rotate_checkpoints(self.out_dir, tc.keep_checkpoints)
        return out

    def finish_saving(self) -> None:
        """Complete a checkpoint still being written in the background (no-op otherwise)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.wait()
            if self.engine.is_root:
                rotate_checkpoints(self.out_dir, self.cfg.train.keep_checkpoints)

    def _resume(self) -> None:
        """From the newest good checkpoint: a corrupt or incomplete one is skipped with a
        warning (all ranks together), one of another model or data is an error."""
        e = self.engine
        found = e.broadcast([str(p) for p in list_checkpoints(self.out_dir)][::-1] if e.is_root else None)
        skipped: list[tuple[str, CheckpointCorrupt]] = []
        for path in found:
            try:
                self.load(path)
            except CheckpointCorrupt as err:
                skipped.append((path, err))
                continue
            if e.is_root:  # moved aside: rotation must not keep them in place of good ones
                for bad, err in skipped:
                    log.warning("%sskipped checkpoint %s (moved to %s): %s", self._tag, bad,
                                quarantine(bad).name, err)
            e.barrier()
            return
        if skipped:  # nothing readable: left as they are, for the user to look at
            raise skipped[0][1]

    def load(self, path) -> None:
        """Continue from checkpoint ``path``, written by any mesh or by one process."""
        e = self.engine
        rec = read_record(path)
        check_record(path, rec["meta"], self.spec.meta, to_dict(self.cfg), json.loads(rec["config"] or "{}"))
        load_checkpoint(path, model=e.model, optimizer=e.optimizer, ema=self.ema, distributed=e.distributed)
        # the half-life is in samples: a resume with another batch size or mesh needs this run's decay
        self.ema.decay = ema_decay(self.global_batch, self.cfg.train.ema_halflife_samples)
        self.step, self.samples_seen = int(rec["step"]), int(rec["samples_seen"])
        self.guard.load_state_dict(rec.get("guard", {}))
        if self.engine.is_root:
            log.info("%sresumed from %s at step %d", self._tag, path, self.step)

    def _start_run_files(self) -> None:
        """The run's config (atomically); a run starting from step 0 owns its out_dir: checkpoints
        of an earlier run there would outrank this run's in rotation and resume."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        text = dump_config(self.cfg)
        atomic_write(self.out_dir / "config.yaml", lambda tmp: tmp.write_text(text))
        if self.step == 0:
            stale = remove_all_checkpoints(self.out_dir)
            if stale:  # a user-facing warning: the user may have meant to resume
                warnings.warn(f"starting from scratch in {self.out_dir}: removing {len(stale)} checkpoint(s) "
                              f"of an earlier run ({stale[-1].name}, ...)", stacklevel=2)

    # ---- the loop -------------------------------------------------------------------------------
    def _record(self, res: StepResult) -> dict:
        world = self.cfg.swipe.world_size
        flops = self.flops_per_sample * self.global_batch / res.seconds
        peak = CPU_PEAK_FLOPS["bf16" if self.engine.amp == torch.bfloat16 else "fp32"]
        rec = {"step": self.step, "loss": res.loss, "grad_norm": res.grad_norm, "lr": res.lr,
               "samples": self.samples_seen, "seconds": res.seconds,
               "samples_per_s": self.global_batch / res.seconds, "tflops": flops / 1e12,
               "tflops_per_rank": flops / 1e12 / world,
               "mfu": flops / world / peak if self.device.type == "cpu" else None,
               "paper_tflops": self.paper_flops_per_sample * self.global_batch / res.seconds / 1e12,
               "data_wait_s": res.data_wait_s}
        rec.update(self.engine.comm_record())
        rec.update(self._time_split(res))
        return rec

    def _time_split(self, res: StepResult) -> dict:
        """Where the step's time went (docs/training.md, "Step time"): rank 0's split and every
        rank's (``rank_times``); compute = the rest of the step. A collective call."""
        t = self.engine.step_times()
        parts = [res.data_wait_s, t["noise_s"], t["comm_wait_s"], t["bubble_s"]]
        row = [res.seconds, *parts, max(0.0, res.seconds - sum(parts))]
        keys = ("seconds", "data_wait_s", "noise_s", "comm_wait_s", "bubble_s", "compute_s")
        table = self.engine.gather_rows(row)
        return {"noise_s": t["noise_s"], "comm_wait_s": t["comm_wait_s"], "bubble_s": t["bubble_s"],
                "compute_s": row[-1], "rank_times": [dict(zip(keys, r)) for r in table]}

    def _step_line(self, rec: dict) -> str:
        line = ("{tag}step {step} loss {loss:.5f} |g| {grad_norm:.4f} {samples_per_s:.2f} samples/s "
                "{tflops:.4f} TFLOP/s").format(tag=self._tag, **rec)
        if "bytes_p2p_all" in rec:
            line += ("; bytes/step rank 0: a2a {bytes_all_to_all_rank0} p2p {bytes_p2p_rank0} allreduce "
                     "{bytes_all_reduce_rank0}; all ranks: a2a {bytes_all_to_all_all} p2p {bytes_p2p_all} "
                     "allreduce {bytes_all_reduce_all}").format(**rec)
        if rec.get("calls_all_to_all_per_block_rank0") is not None:
            line += ("; calls/block/micro-batch rank 0: a2a {calls_all_to_all_per_block_rank0:g} "
                     "p2p {calls_p2p_per_block_rank0:g}").format(**rec)
        return line

    def run(self) -> dict:
        """Train from ``self.step`` to ``train.steps``; returns the last step's record."""
        tc, e = self.cfg.train, self.engine
        root_then_all(self._start_run_files, e.distributed)
        if e.is_root:
            about = e.describe()
            if about:
                log.info("%s\n%sglobal batch %d = dp %d x grad_accum %d x micro_batch %d", about, self._tag,
                         self.global_batch, e.replicas, tc.grad_accum, tc.micro_batch)
        e.barrier()
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (tc.progress and e.is_root) or self.step >= tc.steps)  # no bar without steps
        # the per-step line is the SWiPe run's console log; one process shows the progress bar
        level = logging.INFO if self._tag else logging.DEBUG
        last: dict = {}
        with StopRequest(tc.max_wall_minutes) as stop, self._reading_ahead():
            try:
                last = self._loop(stop, bar, level)
            except TooManySkips as err:
                # the skipped steps changed nothing: the current state is the last good one
                self.save()
                self.finish_saving()
                raise TooManySkips(f"{err}; stopped with a checkpoint of the last good state at step "
                                   f"{self.step} in {self.out_dir}") from None
        self.finish_saving()
        bar.close()
        self.logger.close()
        return last

    def _agreed_stop(self, stop: StopRequest) -> str | None:
        """Whether any rank was asked to stop (a signal that reached one rank stops all of them
        at the same step), and why; one small all-reduce per step under SWiPe."""
        return agreed(stop.reason(), self.engine.all_sum)

    def _loop(self, stop: StopRequest, bar, level) -> dict:
        tc, e = self.cfg.train, self.engine
        last: dict = {}
        while self.step < tc.steps:
            res = self.train_step()
            rec = self._record(res)
            if res.skipped:
                rec["skipped"] = res.skipped
            rec["skipped_total"] = self.guard.skipped
            end = self.step == tc.steps
            if tc.val_every and (self.step % tc.val_every == 0 or end):
                rec["val_loss"] = self.validation_loss()
            if tc.ens_val_every and (self.step % tc.ens_val_every == 0 or end):
                skill = self.one_step_skill(tc.ens_val_inits, tc.ens_val_members, tc.ens_val_sampler_steps)
                rec.update({f"ens_{k}": v for k, v in skill.items()})
            if e.is_root and ((tc.log_every and self.step % tc.log_every == 0) or "val_loss" in rec
                              or "ens_rmse_ens_mean" in rec or end):
                self.logger.log(rec)
                log.log(level, self._step_line(rec))
            bar.set_postfix(loss=f"{rec['loss']:.4f}", **({"val": f"{rec['val_loss']:.4f}"} if "val_loss" in rec else {}))
            bar.update(1)
            saved = (tc.ckpt_every and self.step % tc.ckpt_every == 0) or end
            if saved:
                self.save()
            last = rec
            why = None if end else self._agreed_stop(stop)
            if why:
                if not saved:
                    self.save()
                self.finish_saving()
                if e.is_root:
                    log.info("%sstopped by %s after step %d: checkpoint %s written; run the same command to "
                             "continue", self._tag, why, self.step, checkpoint_path(self.out_dir, self.step))
                last = {**rec, "stopped": why}
                break
        return last


def run_training(cfg: Config, *, resume: bool = True, device: str = "auto",
                 skill: tuple[int, int] | None = None) -> tuple[dict, str | None]:
    """`aeris train`: train in this process (a one-rank mesh) or as one rank of a SWiPe mesh
    started by a launcher, then (skill = (inits, members)) score the one-step ensemble.

    ``device``: ``auto`` (an accelerator when one is visible, else the CPU), a type (``cpu``,
    ``cuda``, ``xpu``: under a mesh each rank takes its node-local device of that type) or, in
    one process only, an indexed device (``cuda:1``). Returns (the last step's record, the skill
    report) on the root rank and ({}, None) elsewhere.
    """
    distributed = cfg.swipe.world_size > 1
    want = device_request(device, distributed)
    configure_threads(cfg.train.threads)  # threads per rank: the config's, else the launcher's
    info = init_distributed(cfg.swipe.backend, want) if distributed else None
    try:
        if info is None:
            dev = pick_device(0, want)
        else:
            if info.world_size != cfg.swipe.world_size:
                raise MeshError(f"launched {info.world_size} ranks but the mesh swipe.dp x pp x wy x wx x sp = "
                                f"{cfg.swipe.world_size}: start as many ranks as the mesh has")
            dev = info.device
        trainer = Trainer(cfg, resume=resume, device=dev)
        last = trainer.run()
        report = None
        if skill is not None and "stopped" not in last:  # a stopped job has no time to spare
            s = trainer.one_step_skill(skill[0], skill[1], progress=trainer.engine.is_root and cfg.train.progress)
            report = format_skill_report(s)
        return (last, report) if trainer.engine.is_root else ({}, None)
    finally:
        if info is not None and info.launcher != "existing":  # only a group we started
            shutdown()

"""`aeris train` on a SWiPe mesh: launch, mesh, per-rank data, ZeRO AdamW, EMA, checkpoints, logs.

    run_distributed(cfg, resume=True)   # under torchrun / mpiexec / srun, one call per rank

Same run as the serial Trainer (aeris.train.trainer) with the same global batch: the step's
samples ``samples_for_step(seed, n, samples_seen, B)`` with B = micro_batch x grad_accum x dp
are split over the dp replicas (replica d takes the d-th contiguous block of B/dp, cut into
grad_accum micro-batches of micro_batch), noise/sigma keyed by (seed, step, position, dataset index), and
the loss normalised by H*W*B; the serial Trainer with micro_batch x grad_accum = B reproduces
it to rounding. Only the first and last pipeline stage read data (their own tokens only).
Rank 0 logs the mesh, the tokens per rank, and per step the loss, samples/s, TFLOP/s and the
bytes moved by kind (CommCounter: rank 0's own and the sum over all ranks).
Every ``train.ens_val_every`` steps (and at the last) it runs the serial Trainer's ensemble
one-step validation on the pipeline (`SwipeTrainer.one_step_skill`: members = micro-batches,
each stage's EMA weights) and logs the same ens_* keys.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from aeris.config import dump_config, to_dict
from aeris.diffusion.weights import latitude_weight_field, variable_weights
from aeris.model.flops import exact_flops_per_sample, paper_flops_per_sample
from aeris.model.network import AerisNet
from aeris.train.data_order import sample_keys, samples_for_step
from aeris.train.dist_checkpoint import (dist_checkpoint_path, latest_any_checkpoint, load_into_stage,
                                         read_checkpoint, remove_all_checkpoints, rotate_dist_checkpoints,
                                         save_distributed)
from aeris.train.ema import EMA, ema_decay
from aeris.train.logging import MetricsLogger
from aeris.train.schedule import lr_at
from aeris.train.swipe_engine import MicroBatch, SwipeEngine
from swipe.comm import KINDS, CommCounter
from swipe.launch import init_distributed, shutdown
from swipe.mesh import SwipeMesh

__all__ = ["run_distributed", "SwipeTrainer", "split_for_replica"]

_NS_PER_HOUR = 3_600_000_000_000


def split_for_replica(idx: np.ndarray, dp: int, d: int, micro_batch: int, grad_accum: int) -> list[np.ndarray]:
    """Micro-batches of replica d: its contiguous block of the step's samples, in micro_batch pieces."""
    per = micro_batch * grad_accum
    if len(idx) != per * dp:
        raise ValueError(f"{len(idx)} samples cannot be split into dp={dp} x grad_accum={grad_accum} "
                         f"x micro_batch={micro_batch}")
    mine = idx[d * per:(d + 1) * per]
    return [mine[k * micro_batch:(k + 1) * micro_batch] for k in range(grad_accum)]


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in ("target", "cond", "forcing")}


class SwipeTrainer:
    """One rank of a SWiPe training run (the default process group must exist)."""

    def __init__(self, cfg, *, resume: bool = True, device: torch.device | str = "cpu"):
        from aeris.data.dataset import ForecastDataset
        from aeris.train.trainer import autocast_dtype

        self.cfg, tc, sw = cfg, cfg.train, cfg.swipe
        self.device = torch.device(device)
        self.rank = dist.get_rank()
        self.out_dir = Path(tc.out_dir)
        self.mesh = SwipeMesh.build(sw.dp, sw.pp, sw.wy, sw.wx, sw.sp, device_type=self.device.type)
        # the data description every stage needs (model shape, weights): read once, on rank 0
        info = [None]
        if self.rank == 0:
            ds0 = ForecastDataset(cfg.data, "train", window=cfg.model.window)  # prepares if needed
            val0 = ForecastDataset(cfg.data, "val", window=cfg.model.window)
            val_n = len(val0)
            # init hours of the validation samples: the ensemble validation's member keys, on every rank
            val_hours = (np.asarray(val0.times, "datetime64[ns]").astype(np.int64) // _NS_PER_HOUR).tolist()
            info = [{"n": len(ds0), "val_n": val_n, "val_hours": val_hours, "grid": tuple(ds0.grid), "channels": list(ds0.channels),
                     "n_forcing": int(ds0.n_forcing), "latitudes": np.asarray(ds0.latitudes).tolist()}]
        dist.broadcast_object_list(info, src=0)
        self.info = info[0]
        H, W = self.info["grid"]
        n_out = len(self.info["channels"])
        torch.manual_seed(tc.seed)  # the serial Trainer's init, so both runs start identical
        net = AerisNet(cfg.model, n_out=n_out, n_in=2 * n_out + self.info["n_forcing"], grid=(H, W)).to(self.device)
        self.flops_per_sample = exact_flops_per_sample(net)
        self.paper_flops_per_sample = paper_flops_per_sample(cfg.model, H * W, net.n_in)
        self.counter = CommCounter()
        w_lat = latitude_weight_field(self.info["latitudes"], W, cfg.diffusion.lat_weight_epsilon)
        w_var = torch.as_tensor(variable_weights(self.info["channels"], cfg.diffusion.surface_weights,
                                                 cfg.diffusion.level_weight_total))
        self.amp = autocast_dtype(tc.precision, self.device)
        self.engine = SwipeEngine(net, self.mesh, cfg.diffusion, w_lat_field=w_lat, w_channel=w_var,
                                  counter=self.counter, amp=self.amp)
        self.model = self.engine.model
        self.engine.build_optimizer(lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
        self.global_batch = tc.micro_batch * tc.grad_accum * sw.dp
        self.ema = EMA(self.model, ema_decay(self.global_batch, tc.ema_halflife_samples))
        plan = self.engine.plan
        self.reads_data = plan.is_first or plan.is_last
        ids = self.engine.ctx.token_ids(0)
        dist.barrier()  # rank 0 prepared the store above: now the other data ranks may open it
        self.train_ds = ForecastDataset(cfg.data, "train", index_map=ids) if self.reads_data else None
        self.val_ds = ForecastDataset(cfg.data, "val", index_map=ids) if self.reads_data else None
        self.step = 0
        self.samples_seen = 0
        if resume:
            self._resume()
        self.logger = MetricsLogger(self.out_dir, resume_step=self.step if self.step else None,
                                    tensorboard=tc.tensorboard, wandb=tc.wandb, enabled=self.rank == 0)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _resume(self) -> None:
        path = [latest_any_checkpoint(self.out_dir) if self.rank == 0 else None]
        dist.broadcast_object_list(path, src=0)
        if path[0] is None:
            return
        H, W = self.info["grid"]
        n_out = len(self.info["channels"])
        with torch.device("meta"):  # names and serial parameter order only
            full = AerisNet(self.cfg.model, n_out=n_out, n_in=2 * n_out + self.info["n_forcing"], grid=(H, W))
        ck = read_checkpoint(path[0], full)
        load_into_stage(ck, model=self.model, ema=self.ema, optimizer=self.engine.optimizer)
        # the half-life is in samples: a resume on another mesh / batch size needs this run's decay
        self.ema.decay = ema_decay(self.global_batch, self.cfg.train.ema_halflife_samples)
        self.step, self.samples_seen = int(ck["step"]), int(ck["samples_seen"])
        if self.rank == 0:
            print(f"[swipe] resumed from {path[0]} at step {self.step}", flush=True)

    def save(self) -> Path:
        path = save_distributed(
            dist_checkpoint_path(self.out_dir, self.step), model=self.model, ema=self.ema,
            optimizer=self.engine.optimizer, mesh=self.mesh, step=self.step, samples_seen=self.samples_seen,
            config=json.dumps(to_dict(self.cfg)),
            meta={"channels": self.info["channels"], "grid": list(self.info["grid"]),
                  "n_forcing": self.info["n_forcing"]})
        if self.rank == 0:
            rotate_dist_checkpoints(self.out_dir, self.cfg.train.keep_checkpoints)
        return path

    # ---- one step -------------------------------------------------------------------------------
    def _micro_batches(self) -> list[MicroBatch]:
        tc = self.cfg.train
        idx = samples_for_step(tc.seed, self.info["n"], self.samples_seen, self.global_batch)
        pos = self.samples_seen + np.arange(self.global_batch)
        order = split_for_replica(pos, self.mesh.shape.dp, self.mesh.coords.dp, tc.micro_batch, tc.grad_accum)
        out = []
        for spos in order:
            sel = idx[np.asarray(spos) - self.samples_seen]
            data = None
            if self.reads_data:
                data = {k: v.to(self.device) for k, v in _collate([self.train_ds[int(i)] for i in sel]).items()}
            out.append(MicroBatch(sample_keys(tc.seed, self.step, spos, sel), data))
        return out

    def train_step(self) -> dict:
        tc = self.cfg.train
        lr = lr_at(self.step, lr=tc.lr, warmup=tc.warmup_steps, total=tc.steps, min_ratio=tc.min_lr_ratio)
        mbs = self._micro_batches()
        H, W = self.info["grid"]
        self.counter.reset()
        t0 = time.perf_counter()
        loss, gnorm = self.engine.train_step(mbs, float(H * W * self.global_batch), lr=lr, grad_clip=tc.grad_clip)
        self.ema.update(self.model)
        dt = time.perf_counter() - t0
        self.step += 1
        self.samples_seen += self.global_batch
        # on the communication device: an nccl group serves only CUDA tensors
        mine = torch.tensor([self.counter.bytes[k] for k in KINDS], dtype=torch.float64, device=self.device)
        total = mine.clone()
        dist.all_reduce(total)
        mine, total = mine.cpu(), total.cpu()
        flops = self.flops_per_sample * self.global_batch / dt
        rec = {"step": self.step, "loss": loss, "grad_norm": gnorm, "lr": lr, "samples": self.samples_seen,
               "seconds": dt, "samples_per_s": self.global_batch / dt, "tflops": flops / 1e12,
               "tflops_per_rank": flops / 1e12 / dist.get_world_size(),
               "paper_tflops": self.paper_flops_per_sample * self.global_batch / dt / 1e12}
        rec.update({f"bytes_{k}_rank0": int(mine[i]) for i, k in enumerate(KINDS)})
        rec.update({f"bytes_{k}_all": int(total[i]) for i, k in enumerate(KINDS)})
        return rec

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean loss over the first val_samples validation samples, fixed keys (seed, -1, i)."""
        tc = self.cfg.train
        n = min(tc.val_samples, self.info["val_n"])
        if n == 0:
            return float("nan")
        H, W = self.info["grid"]
        dp, d = self.mesh.shape.dp, self.mesh.coords.dp
        mbs = []
        for i in range(d, n, dp):
            data = None
            if self.reads_data:
                data = {k: v.to(self.device) for k, v in _collate([self.val_ds[i]]).items()}
            mbs.append(MicroBatch([(tc.seed, -1, i)], data))
        self.model.eval()
        losses = self.engine.forward(mbs, normaliser=float(H * W * n)) if mbs else []
        self.model.train()
        return self.engine.global_sum(sum(float(l) for l in losses))

    @torch.no_grad()
    def one_step_skill(self, n_inits: int, members: int, sampler_steps: int | None = None,
                       use_ema: bool = True, progress: bool = False) -> dict:
        """The serial `Trainer.one_step_skill` on the mesh; a collective call, same dict on every rank.

        Same validation picks and member keys (seed, init hours, member, 0); the members of an
        init are the pipeline micro-batches of every sampler evaluation (PipelineStepper), each
        stage with its own EMA weights. Replica d takes the picks d, d + dp, ...; the pp = 0 ranks
        (which read data and hold the sampler state) score their tokens (aeris.train.skill), and
        one all-reduce over all ranks adds the pieces and the replicas.
        """
        from dataclasses import replace
        from aeris.forecast.ensemble import member_keys
        from aeris.forecast.parallel import PipelineStepper
        from aeris.train.skill import SKILL_TERMS, finish_scores, partial_sums, standardised_fields, validation_picks

        dcfg = self.cfg.diffusion if sampler_steps is None else replace(self.cfg.diffusion, steps=sampler_steps)
        picks = validation_picks(self.info["val_n"], n_inits)
        engine = self._ema_engine() if use_ema else self.engine
        was_training = engine.model.training
        engine.model.eval()
        n_out = len(self.info["channels"])
        stepper = PipelineStepper(engine, n_out, dcfg)
        L, c, shape = engine.layout, self.mesh.coords, self.mesh.shape
        scores = c.pp == 0
        sums = torch.zeros(len(SKILL_TERMS), dtype=torch.float64)
        mine = picks[c.dp::shape.dp]
        for i in tqdm(mine, desc="ensemble validation", disable=not progress, leave=False):
            keys = member_keys(self.cfg.train.seed, self.info["val_hours"][int(i)], range(members), 0)
            s = self.val_ds[int(i)] if self.reads_data else None
            if s is not None:
                cond = torch.cat([s["cond"], s["forcing"]], -1).to(self.device)
            else:  # a middle stage: the network input is built on stage 0 only
                cond = torch.zeros(L.n_local_windows, L.tokens_per_piece, 0, device=self.device)
            r = stepper(cond.unsqueeze(0).expand(members, *cond.shape), keys)
            if scores:
                fields = standardised_fields(self.val_ds, s["cond"].to(self.device), s["target"].to(self.device), r)
                sums += partial_sums(*fields, engine.w_token)
        sums = sums.to(self.device)
        dist.all_reduce(sums)  # every (init, token) was scored by exactly one rank
        if was_training:
            engine.model.train()
        H, W = self.info["grid"]
        return finish_scores(sums.cpu(), len(picks), members, H * W * n_out)

    def _ema_engine(self):
        """This stage's engine with a copy of the stage model holding the EMA weights (the
        executor, context and routes are shared: the pipeline inference needs no new groups)."""
        import copy
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.grad = None
        self.ema.copy_to(model)
        engine = copy.copy(self.engine)
        engine.model = model
        return engine

    # ---- the loop -------------------------------------------------------------------------------
    def describe(self) -> str:
        s, lay, eng = self.mesh.shape, self.engine.layout, self.engine
        plans = ", ".join(f"stage {p.index}: {'embed+' if p.is_first else ''}blocks "
                          f"{list(p.blocks) if len(p.blocks) else '-'}{'+head' if p.is_last else ''} "
                          f"(frames {p.start_frame}->{p.end_frame})" for p in eng.plans)
        return (f"[swipe] mesh dp={s.dp} pp={s.pp} wy={s.wy} wx={s.wx} sp={s.sp} = {s.world_size} ranks; "
                f"grid {lay.H}x{lay.W}, window {lay.ws_h}x{lay.ws_w}, {lay.n_windows_y}x{lay.n_windows_x} windows\n"
                f"[swipe] per rank: {lay.n_local_windows} windows x {lay.tokens_per_piece} tokens = "
                f"{lay.tokens_per_rank} tokens ({lay.tokens_per_rank / (lay.H * lay.W):.3%} of a sample)\n"
                f"[swipe] {plans}\n"
                f"[swipe] global batch {self.global_batch} = dp {s.dp} x grad_accum {self.cfg.train.grad_accum} "
                f"x micro_batch {self.cfg.train.micro_batch}")

    def run(self) -> dict:
        tc = self.cfg.train
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(dump_config(self.cfg))
            if self.step == 0:
                stale = remove_all_checkpoints(self.out_dir)
                if stale:
                    print(f"[swipe] starting from scratch: removed {len(stale)} checkpoint(s) of an "
                          f"earlier run in {self.out_dir}", flush=True)
            print(self.describe(), flush=True)
        dist.barrier()
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", disable=not (tc.progress and self.rank == 0),
                   dynamic_ncols=True)
        last: dict = {}
        while self.step < tc.steps:
            rec = self.train_step()
            if tc.val_every and (self.step % tc.val_every == 0 or self.step == tc.steps):
                rec["val_loss"] = self.validation_loss()
            if tc.ens_val_every and (self.step % tc.ens_val_every == 0 or self.step == tc.steps):
                skill = self.one_step_skill(tc.ens_val_inits, tc.ens_val_members, tc.ens_val_sampler_steps)
                rec.update({f"ens_{k}": v for k, v in skill.items()})
            if self.rank == 0 and ((tc.log_every and self.step % tc.log_every == 0) or "val_loss" in rec
                                   or "ens_rmse_ens_mean" in rec or self.step == tc.steps):
                self.logger.log(rec)
                print("[swipe] step {step} loss {loss:.5f} |g| {grad_norm:.4f} {samples_per_s:.2f} samples/s "
                      "{tflops:.4f} TFLOP/s; bytes/step rank 0: a2a {a} p2p {p} allreduce {r}; all ranks: "
                      "a2a {A} p2p {P} allreduce {R}".format(
                          a=rec["bytes_all_to_all_rank0"], p=rec["bytes_p2p_rank0"], r=rec["bytes_all_reduce_rank0"],
                          A=rec["bytes_all_to_all_all"], P=rec["bytes_p2p_all"], R=rec["bytes_all_reduce_all"],
                          **rec), flush=True)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            bar.update(1)
            if (tc.ckpt_every and self.step % tc.ckpt_every == 0) or self.step == tc.steps:
                self.save()
            last = rec
        bar.close()
        self.logger.close()
        return last


def run_distributed(cfg, resume: bool = True, device: str | None = None,
                    skill: tuple[int, int] | None = None) -> int:
    """Entry point of `aeris train` when swipe.world_size > 1: one call on every rank.
    skill = (inits, members): afterwards rank 0 prints the `aeris train --skill` report."""
    info = init_distributed(cfg.swipe.backend, device)
    try:
        if info.world_size != cfg.swipe.world_size:
            from swipe.mesh import MeshError
            raise MeshError(f"launched {info.world_size} ranks but the mesh swipe.dp x pp x wy x wx x sp = "
                            f"{cfg.swipe.world_size}: start as many ranks as the mesh has")
        torch.set_num_threads(max(1, torch.get_num_threads() // max(1, int(_local_world()))))
        trainer = SwipeTrainer(cfg, resume=resume, device=info.device)
        last = trainer.run()
        if info.rank == 0:
            print(json.dumps({k: v for k, v in last.items() if v is not None}), flush=True)
        if skill is not None:
            from aeris.train.skill import format_skill_report
            s = trainer.one_step_skill(skill[0], skill[1], progress=info.rank == 0 and cfg.train.progress)
            if info.rank == 0:
                print(format_skill_report(s), flush=True)
    finally:
        shutdown()
    return 0


def _local_world() -> int:
    import os
    for k in ("LOCAL_WORLD_SIZE", "PALS_LOCAL_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
              "SLURM_NTASKS_PER_NODE"):
        v = os.environ.get(k, "")
        if v.split("(")[0].isdigit():
            return int(v.split("(")[0])
    return 1

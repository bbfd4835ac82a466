"""Training configuration (docs/training.md, "Training configuration")."""

from __future__ import annotations

from dataclasses import dataclass

from aeris.confdoc import doc
from aeris.train.guard import parse_fault

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Optimiser, schedule, batch, EMA, logging and checkpoint settings of `aeris train`."""

    out_dir: str = doc("runs/tiny", "run directory: checkpoints, config.yaml, metrics")
    steps: int = doc(200, "optimizer steps")
    micro_batch: int = doc(1, "samples per micro-batch per data-parallel replica")
    grad_accum: int = doc(4, "micro-batches per optimizer step (GAS)")
    lr: float = doc(2e-4, "peak learning rate (after the linear warm-up)")
    betas: tuple[float, float] = doc((0.85, 0.90), "AdamW betas, two numbers in [0, 1)")
    eps: float = doc(1e-8, "AdamW epsilon")
    weight_decay: float = doc(0.1, "AdamW weight decay, applied to matrix weights only")
    warmup_steps: int = doc(20, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = doc(0.01, "the cosine decays to lr * min_lr_ratio")
    grad_clip: float = doc(20.0, "global gradient-norm clip; <= 0 disables")
    ema_halflife_samples: float = doc(100_000.0, "EMA half-life of the weights, in training samples "
                                                 "(<= 0 = no averaging)")
    precision: str = doc("auto", "compute dtype: auto (bf16 on CUDA and XPU, fp32 on CPU) | fp32 | bf16; "
                                 "weights, optimizer state and EMA stay fp32")
    reduce_dtype: str = doc("fp32", "dtype of the gradient reduce-scatter over a stage's weight group: fp32 | bf16")
    reshard_after_forward: bool = doc(False, "SWiPe: free each gathered block after its forward and gather it "
                                             "again for its backward, every micro-batch (least memory); false "
                                             "keeps the stage gathered through the step: one all-gather and one "
                                             "reduce-scatter per step")
    seed: int = doc(0, "seed of initialisation, sample order and diffusion noise")
    log_every: int = doc(10, "metrics every N steps (0 = only with validation and at the end)")
    val_every: int = doc(50, "validation loss every N steps (0 = never)")
    val_samples: int = doc(8, "validation samples per validation loss")
    ens_val_every: int = doc(0, "ensemble validation (CRPS, RMSE, SSR) every N steps (0 = never)")
    ens_val_members: int = doc(4, "ensemble validation: members per initial time")
    ens_val_inits: int = doc(2, "ensemble validation: initial times")
    ens_val_sampler_steps: int = doc(8, "ensemble validation: sampler steps")
    ckpt_every: int = doc(100, "checkpoint every N steps (and at the end; 0 = only at the end)")
    max_wall_minutes: float = doc(0.0, "stop after this wall time: finish the step, checkpoint, exit 0 "
                                       "(0 = no limit; SIGTERM, SIGUSR1 and SIGINT do the same)")
    max_consecutive_skips: int = doc(5, "more skipped updates in a row than this stop the run with a "
                                        "checkpoint of the last good state")
    spike_factor: float = doc(0.0, "skip an update whose gradient norm exceeds this times the median of the "
                                   "last spike_window applied ones (0 = off; non-finite values are always skipped)")
    spike_window: int = doc(50, "applied updates whose gradient norms the spike detector remembers")
    fault: str = doc("", "fault injection to rehearse failures: nan@STEP (that step's loss is NaN) or "
                         "signal@STEP:TERM[:RANK]; the environment variable AERIS_FAULT overrides it")
    async_checkpoint: bool = doc(False, "write checkpoints in the background (DCP async_save): training "
                                        "continues while the shards are written; each one is completed "
                                        "(record + rename) before the next and at the end")
    keep_checkpoints: int = doc(2, "newest checkpoints kept (0 = all)")
    tensorboard: bool = doc(False, "also log metrics to TensorBoard (if installed)")
    wandb: bool = doc(False, "also log metrics to Weights & Biases (if installed)")
    progress: bool = doc(True, "show a progress bar")
    threads: int = doc(0, "torch threads per rank; 0 = from the launcher (OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, "
                          "PBS NCPUS, else this process's cores / local ranks; docs/environment.md)")

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision must be auto|fp32|bf16, got {self.precision!r}")
        if self.reduce_dtype not in ("fp32", "bf16"):
            raise ValueError(f"train.reduce_dtype must be fp32|bf16, got {self.reduce_dtype!r}")
        for k in ("steps", "micro_batch", "grad_accum"):
            if getattr(self, k) < 1:
                raise ValueError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        if self.max_wall_minutes < 0 or self.spike_factor < 0 or self.max_consecutive_skips < 0:
            raise ValueError("train.max_wall_minutes, spike_factor and max_consecutive_skips must be >= 0")
        if self.spike_window < 1:
            raise ValueError(f"train.spike_window must be >= 1, got {self.spike_window}")
        parse_fault(self.fault)
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        for k in ("log_every", "val_every", "ens_val_every", "ckpt_every", "keep_checkpoints", "val_samples",
                  "threads"):
            if getattr(self, k) < 0:
                raise ValueError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.ens_val_every and (self.ens_val_members < 1 or self.ens_val_inits < 1):
            raise ValueError("train.ens_val_members and train.ens_val_inits must be >= 1 "
                             "when train.ens_val_every > 0")

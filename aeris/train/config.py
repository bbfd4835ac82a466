"""Training configuration (AERIS.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Optimiser, schedule, batch, EMA, logging and checkpoint settings of `aeris train`."""

    out_dir: str = "runs/tiny"
    steps: int = 200                 # optimizer steps
    micro_batch: int = 1             # samples per micro-batch per data-parallel replica
    grad_accum: int = 4              # micro-batches per optimizer step (GAS)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.85, 0.90)
    eps: float = 1e-8
    weight_decay: float = 0.1        # applied to matrix weights only
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01       # cosine decays to lr * min_lr_ratio
    grad_clip: float = 20.0          # global-norm clip; <= 0 disables
    ema_halflife_samples: float = 100_000.0
    precision: str = "auto"          # auto | fp32 | bf16 (autocast; fp32 master weights)
    seed: int = 0
    num_workers: int = 0             # DataLoader workers
    log_every: int = 10              # metrics every N steps (0 = only with validation and at the end)
    val_every: int = 50              # validation loss every N steps (0 = never)
    val_samples: int = 8
    ens_val_every: int = 0           # ensemble validation (CRPS, RMSE, SSR) every N steps (0 = never)
    ens_val_members: int = 4
    ens_val_inits: int = 2
    ens_val_sampler_steps: int = 8
    ckpt_every: int = 100            # checkpoint every N steps (and at the end; 0 = only at the end)
    keep_checkpoints: int = 2        # newest checkpoints kept (0 = all)
    tensorboard: bool = False
    wandb: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision must be auto|fp32|bf16, got {self.precision!r}")
        for k in ("steps", "micro_batch", "grad_accum"):
            if getattr(self, k) < 1:
                raise ValueError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        for k in ("log_every", "val_every", "ens_val_every", "ckpt_every", "keep_checkpoints", "val_samples"):
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

"""Training configuration (AERIS.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    log_every: int = 10
    val_every: int = 50              # validation loss every N steps (0 = never)
    val_samples: int = 8
    ens_val_every: int = 0           # ensemble validation (CRPS, RMSE, SSR) every N steps (0 = never)
    ens_val_members: int = 4
    ens_val_inits: int = 2
    ens_val_sampler_steps: int = 8
    ckpt_every: int = 100            # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2
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

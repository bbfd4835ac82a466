"""Configuration of `aeris forecast` and `aeris forecast-stability` (section ``forecast``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ForecastConfig"]


@dataclass
class ForecastConfig:
    """Which checkpoint, which initial times, how far, how many members, where to write."""

    # a checkpoint file, or a run directory (its latest checkpoint); "" = train.out_dir
    checkpoint: str = ""
    out: str = "forecasts/forecast.zarr"
    # initial times: an explicit list of ISO times, or start/end (inclusive) with a stride
    inits: list[str] = field(default_factory=list)
    start: str = ""
    end: str = ""
    stride_hours: int = 24
    steps: int = 4                    # model steps (lead = steps * data.dt_hours)
    members: int = 2                  # ensemble members 0 .. members-1
    member_ids: list[int] = field(default_factory=list)  # a subset of members to (re)generate
    sampler_steps: int = 0            # 0 = diffusion.steps of the checkpoint's config
    seed: int = 0
    use_ema: bool = True
    overwrite: bool = False
    batch_members: int = 0            # members sampled together (= members per zarr chunk); 0 = all
    include_initial: bool = True      # lead 0 = the initial condition (see rollout docstring)
    pad_mode: str = "copy"            # restored polar row: copy of its neighbour | nan
    # forcings past the prepared store's end: compute TOA insolation ("compute") or stop ("error")
    forcing_fallback: str = "compute"
    device: str = "cpu"
    progress: bool = True
    # long-rollout stability check (`aeris forecast-stability`)
    stability_days: float = 90.0
    stability_members: int = 2
    stability_out: str = "forecasts/stability"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"forecast.steps must be >= 1, got {self.steps}")
        if self.members < 1:
            raise ValueError(f"forecast.members must be >= 1, got {self.members}")
        if any(m < 0 for m in self.member_ids):
            raise ValueError(f"forecast.member_ids must be >= 0, got {self.member_ids}")
        if self.sampler_steps < 0 or self.batch_members < 0:
            raise ValueError("forecast.sampler_steps and forecast.batch_members must be >= 0")
        if self.stride_hours < 1:
            raise ValueError(f"forecast.stride_hours must be >= 1, got {self.stride_hours}")
        if self.pad_mode not in ("copy", "nan"):
            raise ValueError(f"forecast.pad_mode must be copy|nan, got {self.pad_mode!r}")
        if self.forcing_fallback not in ("compute", "error"):
            raise ValueError(f"forecast.forcing_fallback must be compute|error, got {self.forcing_fallback!r}")
        if self.stability_days <= 0 or self.stability_members < 1:
            raise ValueError("forecast.stability_days must be > 0 and stability_members >= 1")

"""Configuration of `aeris forecast` and `aeris forecast-stability` (section ``forecast``)."""

from __future__ import annotations

from dataclasses import dataclass

from aeris.confdoc import doc

__all__ = ["ForecastConfig"]


@dataclass
class ForecastConfig:
    """Which checkpoint, which initial times, how far, how many members, where to write."""

    checkpoint: str = doc("", "a checkpoint file, or a run directory (its latest checkpoint); '' = train.out_dir")
    out: str = doc("forecasts/forecast.zarr", "forecast store written (zarr, WB2 forecast layout)")
    inits: list[str] = doc([], "initial times as ISO strings; or leave empty and give start/end")
    start: str = doc("", "first initial time of a range (with end and stride_hours)")
    end: str = doc("", "last initial time of a range, inclusive ('' = start)")
    stride_hours: int = doc(24, "hours between the initial times of a range")
    steps: int = doc(4, "model steps (lead = steps * data.dt_hours)")
    members: int = doc(2, "ensemble members 0 .. members-1")
    member_ids: list[int] = doc([], "a subset of the members to (re)generate ([] = all)")
    sampler_steps: int = doc(0, "sampler steps; 0 = diffusion.steps of the checkpoint's config")
    churn: float = doc(-1.0, "sampler churn (EDM stochasticity, see diffusion.churn); < 0 = diffusion.churn "
                             "of the checkpoint's config")
    seed: int = doc(0, "seed of the ensemble noise")
    use_ema: bool = doc(True, "use the EMA weights of the checkpoint (false = the raw weights)")
    overwrite: bool = doc(False, "replace an existing store written for another request")
    batch_members: int = doc(0, "members rolled out together as one unit (= members per zarr chunk); 0 = all")
    eval_batch: int = doc(0, "members per network evaluation inside a unit; 0 = measured: the fastest per "
                             "member of 1, 2, 4, ... up to the unit; does not change the output "
                             "(docs/evaluation.md, \"Member batch of the network evaluations\")")
    include_initial: bool = doc(True, "write lead 0 = the initial condition (see the rollout docstring)")
    pad_mode: str = doc("copy", "copy | nan: the restored polar row is a copy of its neighbour, or NaN")
    forcing_fallback: str = doc("compute", "forcings past the prepared store's end: compute TOA insolation "
                                           "(compute) or stop (error)")
    device: str = doc("cpu", "auto | cpu | cuda | xpu (each rank its node-local device), or e.g. cuda:1 "
                             "in one process")
    progress: bool = doc(True, "show a progress bar")
    threads: int = doc(0, "torch threads per rank; 0 = from the launcher, as train.threads")
    stability_days: float = doc(90.0, "`aeris forecast-stability`: rollout length, days")
    stability_members: int = doc(2, "`aeris forecast-stability`: ensemble members")
    stability_out: str = doc("forecasts/stability", "`aeris forecast-stability`: report folder")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"forecast.steps must be >= 1, got {self.steps}")
        if self.members < 1:
            raise ValueError(f"forecast.members must be >= 1, got {self.members}")
        if any(m < 0 for m in self.member_ids):
            raise ValueError(f"forecast.member_ids must be >= 0, got {self.member_ids}")
        if min(self.sampler_steps, self.batch_members, self.eval_batch, self.threads) < 0:
            raise ValueError("forecast.sampler_steps, batch_members, eval_batch and threads must be >= 0")
        if self.stride_hours < 1:
            raise ValueError(f"forecast.stride_hours must be >= 1, got {self.stride_hours}")
        if self.pad_mode not in ("copy", "nan"):
            raise ValueError(f"forecast.pad_mode must be copy|nan, got {self.pad_mode!r}")
        if self.forcing_fallback not in ("compute", "error"):
            raise ValueError(f"forecast.forcing_fallback must be compute|error, got {self.forcing_fallback!r}")
        if self.stability_days <= 0 or self.stability_members < 1:
            raise ValueError("forecast.stability_days must be > 0 and stability_members >= 1")

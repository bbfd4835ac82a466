"""Configuration of the TrigFlow diffusion: training noise, loss weights, sampler (docs/training.md, "Objective: TrigFlow")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aeris.confdoc import doc

__all__ = ["DiffusionConfig"]


@dataclass
class DiffusionConfig:
    """sigma_d, training noise range, loss weights and the probability-flow ODE sampler."""

    sigma_data: float = doc(1.0, "sigma_d, the standard deviation of the (normalised) data")
    sigma_min: float = doc(0.2, "training noise: sigma ~ log-uniform[sigma_min, sigma_max]; lower end "
                                "(orig 0.2, benchmark 0.02)")
    sigma_max: float = doc(500.0, "upper end of the training noise range (orig 500; benchmark 200)")
    lat_weight_epsilon: float = doc(0.01, "latitude loss weights cos(lat) + epsilon, mean 1 over the model "
                                          "grid (orig 0.01)")
    surface_weights: dict[str, float] = doc({"t2m": 1.0, "u10": 0.1, "v10": 0.1, "msl": 0.1, "sst": 0.1},
                                            "loss weight of each surface channel, by short name "
                                            "(then all weights are scaled to mean 1)")
    level_weight_total: float = doc(1.0, "total loss weight of each pressure-level variable, shared over "
                                         "its levels in proportion to pressure")
    steps: int = doc(20, "sampler: Heun steps (Euler on the last), NFE = 2 * steps - 1")
    sample_sigma_min: float = doc(0.2, "sampler: smallest noise level of the schedule")
    sample_sigma_max: float = doc(500.0, "sampler: largest noise level, where sampling starts")
    rho: float = doc(10.0, "sampler: EDM schedule exponent rho")
    ode_space: str = doc("t", "t: Heun on dx_t/dt in TrigFlow time (more accurate with sigma_max 500, rho "
                              "10); sigma: on the EDM form dy/dsigma, y = x_t / cos t")
    churn: float = doc(0.0, "stochastic churn (EDM): gamma = min(churn / steps, sqrt(2) - 1); 0 = deterministic")
    churn_sigma_min: float = doc(0.0, "churn only for sigma >= this")
    churn_sigma_max: float = doc(math.inf, "churn only for sigma <= this")
    churn_noise: float = doc(1.0, "EDM S_noise: scale of the noise added by churn")

    def __post_init__(self) -> None:
        if self.sigma_data <= 0:
            raise ValueError(f"diffusion.sigma_data must be positive, got {self.sigma_data}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"diffusion needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 < self.sample_sigma_min < self.sample_sigma_max:
            raise ValueError("diffusion needs 0 < sample_sigma_min < sample_sigma_max, got "
                             f"{self.sample_sigma_min}, {self.sample_sigma_max}")
        if self.steps < 1:
            raise ValueError(f"diffusion.steps must be >= 1, got {self.steps}")
        if self.ode_space not in ("sigma", "t"):
            raise ValueError(f"diffusion.ode_space must be 'sigma' or 't', got {self.ode_space!r}")
        if self.rho <= 0 or self.churn < 0 or self.lat_weight_epsilon < 0:
            raise ValueError("diffusion.rho must be > 0, churn and lat_weight_epsilon >= 0")

"""Configuration of the TrigFlow diffusion: training noise, loss weights, sampler (AERIS.md section 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["DiffusionConfig"]


@dataclass
class DiffusionConfig:
    """sigma_d, training noise range, loss weights and the probability-flow ODE sampler."""

    sigma_data: float = 1.0
    # training: sigma ~ log-uniform[sigma_min, sigma_max] (orig 0.2..500; benchmark 0.02..200)
    sigma_min: float = 0.2
    sigma_max: float = 500.0
    # latitude weights cos(lat) + epsilon, mean 1 over the model grid (orig epsilon 0.01)
    lat_weight_epsilon: float = 0.01
    # surface-variable weights by channel name; every pressure-level variable has total weight
    # `level_weight_total` shared over its levels in proportion to pressure; then mean 1
    surface_weights: dict[str, float] = field(default_factory=lambda: {
        "t2m": 1.0, "u10": 0.1, "v10": 0.1, "msl": 0.1, "sst": 0.1})
    level_weight_total: float = 1.0
    # sampler: Heun steps (Euler on the last), NFE = 2 * steps - 1
    steps: int = 20
    sample_sigma_min: float = 0.2
    sample_sigma_max: float = 500.0
    rho: float = 10.0
    # Heun on dx_t/dt in TrigFlow time ("t") or on the EDM form dy/dsigma, y = x_t / cos t ("sigma");
    # "t" is the more accurate of the two with sigma_max 500, rho 10 (tests/test_diffusion.py)
    ode_space: str = "t"
    # optional stochastic churn (EDM): gamma = min(churn / steps, sqrt(2) - 1) for sigma in [tmin, tmax]
    churn: float = 0.0
    churn_sigma_min: float = 0.0
    churn_sigma_max: float = math.inf
    churn_noise: float = 1.0

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

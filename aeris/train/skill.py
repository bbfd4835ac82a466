"""Scores of the ensemble one-step validation, shared by the serial and the SWiPe trainer.

For validation inits i = 1..n, members x_1..x_M, truth y and persistence p = X(t), all in
standardised-state units ((X - mean) / std per channel), token latitude weights w_g and the
N = H*W*C points (g, c) of a field::

    RMSE_ens  = sqrt( sum_i sum_{g,c} w_g (mean_m x_m - y)^2 / (n N) )
    RMSE_m0   = the same with x_1,   RMSE_pers = the same with p
    CRPS_fair = sum_i sum_{g,c} w_g ( mean_m |x_m - y| - sum_{m,m'} |x_m - x_m'| / (2 M (M-1)) ) / (n N)
    SSR       = sqrt( sum_i sum_{g,c} w_g var_m(x) / (n N) ) / RMSE_ens      (unbiased variance)

Every score is a ratio of sums over (init, token, channel): a rank holding a piece of the
field computes the partial sums of its tokens (`partial_sums`), the sums of all pieces add up
over the window group (and over inits dealt to other replicas), `finish_scores` divides.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SKILL_TERMS", "validation_picks", "standardised_fields", "pair_abs_sum", "partial_sums",
           "finish_scores", "format_skill_report"]

# the order of the partial sums in `partial_sums`' vector
SKILL_TERMS = ("se_ens_mean", "se_member0", "se_persistence", "variance", "crps")


def validation_picks(n_val: int, n_inits: int) -> np.ndarray:
    """min(n_inits, n_val) validation sample indices spread evenly from the first to the last."""
    n = min(int(n_inits), int(n_val))
    if n <= 0:
        raise ValueError(f"no validation samples for the ensemble one-step skill "
                         f"(n_inits={n_inits}, validation samples={n_val})")
    return np.linspace(0, n_val - 1, n).round().astype(int)


def standardised_fields(norm, cond: torch.Tensor, target: torch.Tensor, residuals: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(forecast (M, ..., C), truth (..., C), persistence (..., C)) in standardised-state units.

    ``norm`` has normalize_state / denormalize_state / denormalize_residual (a ForecastDataset or
    its Normalizer); cond = standardised X(t), target = standardised residual of t -> t+dt,
    residuals = (M, ...) sampled residuals. Computed in float64: physical values (msl ~1e5 Pa)
    lose the small increments in float32.
    """
    if residuals.shape[1:] != target.shape or cond.shape != target.shape:
        raise ValueError(f"cond {tuple(cond.shape)}, target {tuple(target.shape)} and residuals "
                         f"{tuple(residuals.shape)} (members first) must describe the same tokens")
    pers = cond.to(torch.float64)
    x0 = norm.denormalize_state(pers)
    dev = pers.device
    truth = norm.normalize_state(x0 + norm.denormalize_residual(target.to(dev, torch.float64)))
    fc = norm.normalize_state(x0[None] + norm.denormalize_residual(residuals.to(dev, torch.float64)))
    return fc, truth, pers


def pair_abs_sum(x: torch.Tensor) -> torch.Tensor:
    """sum over ordered member pairs |x_m - x_m'| along dim 0, in O(M log M):
    with x_(1) <= ... <= x_(M) sorted, sum_{m,m'} |x_m - x_m'| = 2 sum_k (2k - M - 1) x_(k)."""
    M = x.shape[0]
    xs = x.sort(dim=0).values
    k = torch.arange(1, M + 1, dtype=x.dtype, device=x.device).view(M, *([1] * (x.dim() - 1)))
    return 2 * ((2 * k - M - 1) * xs).sum(0)


def partial_sums(forecast: torch.Tensor, truth: torch.Tensor, persistence: torch.Tensor,
                 w_token: torch.Tensor) -> torch.Tensor:
    """The SKILL_TERMS sums over the tokens and channels given: float64 (5,).

    forecast (M, n_lw, tpp, C), truth and persistence (n_lw, tpp, C), w_token (n_lw, tpp) the
    latitude weights of these tokens. variance and crps are 0 for M = 1.
    """
    if forecast.dim() != truth.dim() + 1 or forecast.shape[1:] != truth.shape or persistence.shape != truth.shape:
        raise ValueError(f"forecast {tuple(forecast.shape)} must be (M, *truth) and persistence "
                         f"{tuple(persistence.shape)} like truth {tuple(truth.shape)}")
    if tuple(w_token.shape) != tuple(truth.shape[:-1]):
        raise ValueError(f"w_token {tuple(w_token.shape)} must be the token shape {tuple(truth.shape[:-1])}")
    f, y, p = forecast.double(), truth.double(), persistence.double()
    w = w_token.to(y.device, torch.float64)[..., None]
    M = f.shape[0]
    mean = f.mean(0)
    out = torch.zeros(len(SKILL_TERMS), dtype=torch.float64, device=y.device)
    out[0] = (w * (mean - y) ** 2).sum()
    out[1] = (w * (f[0] - y) ** 2).sum()
    out[2] = (w * (p - y) ** 2).sum()
    if M > 1:
        out[3] = (w * f.var(0, unbiased=True)).sum()
        skill = (f - y[None]).abs().mean(0)
        out[4] = (w * (skill - pair_abs_sum(f) / (2 * M * (M - 1)))).sum()
    return out.cpu()


def finish_scores(sums, n_inits: int, members: int, n_points: int) -> dict:
    """Scores from the SKILL_TERMS sums over n_inits fields of n_points (H*W*C) points each."""
    if n_inits < 1 or n_points < 1 or members < 1:
        raise ValueError(f"need n_inits, members, n_points >= 1, got {n_inits}, {members}, {n_points}")
    s = dict(zip(SKILL_TERMS, (float(v) for v in sums)))
    nN = float(n_inits) * float(n_points)
    out = {"rmse_ens_mean": math.sqrt(s["se_ens_mean"] / nN), "rmse_member0": math.sqrt(s["se_member0"] / nN),
           "rmse_persistence": math.sqrt(s["se_persistence"] / nN), "n_inits": int(n_inits),
           "members": int(members)}
    if members > 1:
        out["crps_fair"] = s["crps"] / nN
        out["spread_skill"] = math.sqrt(s["variance"] / nN) / max(out["rmse_ens_mean"], 1e-12)
    return out


def format_skill_report(s: dict) -> str:
    """The `aeris train --skill` report of a `finish_scores` dict."""
    lines = [f"one-step forecast on {s['n_inits']} held-out times, {s['members']} members, EMA weights "
             f"(latitude-weighted RMSE of standardised fields, mean over channels):",
             f"  ensemble mean : {s['rmse_ens_mean']:.4f}",
             f"  member 0      : {s['rmse_member0']:.4f}",
             f"  persistence   : {s['rmse_persistence']:.4f}"]
    if "crps_fair" in s:
        lines.append(f"  fair CRPS {s['crps_fair']:.4f}, spread/skill {s['spread_skill']:.3f}")
    verdict = "beats" if s["rmse_ens_mean"] < s["rmse_persistence"] else "does NOT beat"
    lines.append(f"  -> the ensemble mean {verdict} persistence")
    return "\n".join(lines)

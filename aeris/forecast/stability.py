"""Long-rollout stability check: does the model stay finite, physical and undrifted for months?

Rolls `members` members from one initial time for ``ceil(days * 24 / dt_hours)`` steps (in
memory, nothing written but the report) and records per channel and lead k:

    mean_k = sum_ij w_i x_ij / sum_ij w_i,  w_i = cos(lat_i)    (area-weighted global mean,
                                                                  averaged over members)
    min_k, max_k over members and grid points; finite_k = every value finite.

Per channel: ``first_nonfinite_step`` (first k with a NaN/inf), ``first_out_of_bounds_step``
(first k with a value outside the lexicon's [valid_min, valid_max]), ``drift`` = mean at the
last finite lead - mean_0, ``max_abs_drift`` = max_k |mean_k - mean_0|, both also in units of
the channel's climatological std (``*_std``). Status: ``stable`` | ``out_of_bounds`` |
``non_finite``. Step k is the state at lead k * dt (k = 0 is the initial condition). The
rollout stops early once every value of the state is non-finite.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from aeris.atomic import atomic_write
from aeris.data.lexicon import lookup, parse_channel
from aeris.forecast.rollout import ForcingSource, Forecaster, initial_state, rollout_batch

__all__ = ["run_stability", "format_table", "write_report", "plot_global_means", "channel_bounds"]


def channel_bounds(channel: str) -> tuple[float, float]:
    """(valid_min, valid_max) of the channel's variable (+-inf where the lexicon has none)."""
    v = lookup(parse_channel(channel)[0])
    lo = -math.inf if v.valid_min is None else float(v.valid_min)
    hi = math.inf if v.valid_max is None else float(v.valid_max)
    return lo, hi


def _field_stats(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """x (B, n_lw, tpp, C) float, w (n_lw, tpp) -> per channel (mean, min, max, finite).

    mean is NaN where a value is non-finite; min/max are over the finite values (NaN if none).
    """
    ok = np.isfinite(x)
    finite = ok.all(axis=(0, 1, 2))
    xs = np.where(ok, x, 0.0)
    mean = (xs * w[None, :, :, None]).sum(axis=(1, 2)).mean(axis=0) / w.sum()
    mean = np.where(finite, mean, np.nan)
    any_ok = ok.any(axis=(0, 1, 2))
    lo = np.where(any_ok, np.where(ok, x, np.inf).min(axis=(0, 1, 2)), np.nan)
    hi = np.where(any_ok, np.where(ok, x, -np.inf).max(axis=(0, 1, 2)), np.nan)
    return mean, lo, hi, finite


def run_stability(fc: Forecaster, init, *, days: float = 90.0, members: int = 2, seed: int = 0,
                  stepper: Callable | None = None, forcing_fallback: str = "compute",
                  progress: bool = True) -> dict:
    """Roll `members` members of `init` for `days` and return the report (module docstring)."""
    ds = fc.ds
    dt_h = int(ds.cfg.dt_hours)
    n_steps = max(1, math.ceil(days * 24.0 / dt_h))
    init = np.datetime64(init, "ns")
    channels = fc.channels
    bounds = np.array([channel_bounds(c) for c in channels])  # (C, 2)
    w = np.cos(np.deg2rad(ds.token_latitudes)).clip(min=0.0)
    stepper = stepper or fc.stepper()
    forcing = ForcingSource(ds, forcing_fallback)

    x0 = initial_state(ds, init).numpy().astype(np.float64)
    rows = [_field_stats(np.repeat(x0, members, 0), w)]
    bar = tqdm(total=n_steps * members, desc="stability rollout", unit="member-step", disable=not progress,
               dynamic_ncols=True)
    for k, x in rollout_batch(stepper, ds, forcing, init, list(range(members)), n_steps, seed, device=fc.device):
        xn = x.cpu().numpy().astype(np.float64)
        rows.append(_field_stats(xn, w))
        bar.update(members)
        if not np.isfinite(xn).any():
            break
    bar.close()
    mean, lo, hi, finite = (np.stack(a) for a in zip(*rows))  # (K+1, C)
    K = mean.shape[0] - 1
    std = np.asarray(ds.normalizer.std, dtype=np.float64)
    report_channels = {}
    for c, ch in enumerate(channels):
        nonfinite = np.nonzero(~finite[:, c])[0]
        out_b = np.nonzero(finite[:, c] & ((lo[:, c] < bounds[c, 0]) | (hi[:, c] > bounds[c, 1])))[0]
        first_nf = int(nonfinite[0]) if nonfinite.size else None
        first_ob = int(out_b[0]) if out_b.size else None
        if first_nf is not None and (first_ob is None or first_nf < first_ob):
            first_ob = first_nf  # a NaN is out of bounds too
        ok = np.isfinite(mean[:, c])
        last = int(np.nonzero(ok)[0][-1]) if ok.any() else 0
        drift = float(mean[last, c] - mean[0, c])
        dev = np.abs(mean[ok, c] - mean[0, c])
        max_drift = float(dev.max()) if dev.size else float("nan")
        status = "non_finite" if first_nf is not None else ("out_of_bounds" if first_ob is not None else "stable")
        report_channels[ch] = {
            "status": status, "valid_min": _num(bounds[c, 0]), "valid_max": _num(bounds[c, 1]),
            "first_nonfinite_step": first_nf, "first_out_of_bounds_step": first_ob,
            "first_out_of_bounds_lead_hours": None if first_ob is None else first_ob * dt_h,
            "initial_mean": float(mean[0, c]), "final_mean": _num(mean[last, c]),
            "drift": drift, "drift_std": drift / std[c], "max_abs_drift": max_drift,
            "max_abs_drift_std": max_drift / std[c],
            "min": _num(np.nanmin(lo[:, c])) if np.isfinite(lo[:, c]).any() else None,
            "max": _num(np.nanmax(hi[:, c])) if np.isfinite(hi[:, c]).any() else None,
        }
    return {
        "init": str(init)[:19], "days": float(days), "dt_hours": dt_h, "steps_requested": n_steps,
        "steps_run": K, "members": int(members), "seed": int(seed), "checkpoint": fc.checkpoint,
        "stable": all(v["status"] == "stable" for v in report_channels.values()),
        "lead_hours": [k * dt_h for k in range(K + 1)],
        "channels": report_channels,
        "global_mean": {ch: [_num(v) for v in mean[:, c]] for c, ch in enumerate(channels)},
        "global_min": {ch: [_num(v) for v in lo[:, c]] for c, ch in enumerate(channels)},
        "global_max": {ch: [_num(v) for v in hi[:, c]] for c, ch in enumerate(channels)},
    }


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def format_table(report: dict) -> str:
    """A fixed-width text table, one row per channel."""
    dt = report["dt_hours"]
    head = (f"stability of {report['checkpoint']} from {report['init']}: {report['steps_run']} of "
            f"{report['steps_requested']} steps of {dt} h ({report['steps_run'] * dt / 24:.1f} days), "
            f"{report['members']} members -> {'STABLE' if report['stable'] else 'UNSTABLE'}")
    cols = f"{'channel':<8} {'status':<14} {'first bad step':>14} {'min':>12} {'max':>12} " \
           f"{'drift':>12} {'drift/std':>10} {'max|drift|/std':>14}"
    lines = [head, cols, "-" * len(cols)]
    for ch, r in report["channels"].items():
        bad = r["first_out_of_bounds_step"]
        lines.append(f"{ch:<8} {r['status']:<14} {'-' if bad is None else bad:>14} {_fmt(r['min']):>12} "
                     f"{_fmt(r['max']):>12} {_fmt(r['drift']):>12} {_fmt(r['drift_std']):>10} "
                     f"{_fmt(r['max_abs_drift_std']):>14}")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.4g}"



def write_report(report: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """stability.json, stability.txt (the table) and stability.png in `out_dir`, atomically."""
    out = Path(out_dir)
    paths = {
        "json": atomic_write(out / "stability.json",
                        lambda p: p.write_text(json.dumps(report, indent=1, allow_nan=False))),
        "table": atomic_write(out / "stability.txt", lambda p: p.write_text(format_table(report) + "\n")),
    }
    paths["png"] = atomic_write(out / "stability.png", lambda p: plot_global_means(report, p))
    return paths


def plot_global_means(report: dict, path: str | os.PathLike) -> None:
    """One panel per channel: area-weighted global mean (and min/max band) vs lead in days."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chans = list(report["channels"])
    ncol = min(4, len(chans))
    nrow = math.ceil(len(chans) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    days = np.asarray(report["lead_hours"], dtype=float) / 24.0
    for ax, ch in zip(axes.ravel(), chans):
        mean = np.array([np.nan if v is None else v for v in report["global_mean"][ch]])
        ax.plot(days, mean, color="C0", lw=1.2)
        r = report["channels"][ch]
        ax.set_title(f"{ch} ({r['status']})", fontsize=9, color="k" if r["status"] == "stable" else "C3")
        if r["first_out_of_bounds_step"] is not None:
            ax.axvline(r["first_out_of_bounds_step"] * report["dt_hours"] / 24.0, color="C3", ls="--", lw=0.8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("lead (days)", fontsize=7)
    for ax in axes.ravel()[len(chans):]:
        ax.set_visible(False)
    fig.suptitle(f"global means, init {report['init']}, {report['members']} members", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)

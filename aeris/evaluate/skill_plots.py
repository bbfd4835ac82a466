"""Skill figures: scores vs lead time per channel, and zonal power spectra (matplotlib, Agg).

Both take the datasets of `aeris.evaluate.skill` (`evaluate`, `evaluate_spectra`) and write a
PNG atomically; they return the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless compute nodes; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import xarray as xr  # noqa: E402

from aeris.atomic import atomic_write  # noqa: E402

__all__ = ["plot_skill", "plot_spectra"]

# one row per panel kind: (title, [(score, label, style)])
_ROWS = (
    ("RMSE", [("rmse_member0", "member 0", "-"), ("rmse_ensmean", "ensemble mean", "-"),
              ("spread", "spread", ":")]),
    ("CRPS", [("crps_fair", "fair", "-"), ("crps_ecdf", "ecdf", "--")]),
    ("spread/skill", [("ssr", "SSR", "-")]),
    ("ACC", [("acc", "ens. mean", "-")]),
)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path


def _has(scores: xr.Dataset, names: list[str]) -> bool:
    return any(n in scores and not bool(scores[n].isnull().all()) for n in names)


def plot_skill(scores: xr.Dataset, path: str | os.PathLike) -> Path:
    """Grid of panels: a column per channel, a row per score kind (RMSE with spread, CRPS,
    SSR with the calibrated line at 1, ACC when present), each vs lead time in hours."""
    rows = [r for r in _ROWS if _has(scores, [n for n, _, _ in r[1]])]
    if not rows:
        raise ValueError("plot_skill: the scores dataset has no finite score to plot")
    channels = [str(c) for c in scores["channel"].values]
    hours = scores["lead_hours"].values
    fig, axes = plt.subplots(len(rows), len(channels), figsize=(2.8 * len(channels) + 0.6, 2.3 * len(rows)),
                             squeeze=False, sharex=True, constrained_layout=True)
    for r, (title, series) in enumerate(rows):
        for c, ch in enumerate(channels):
            ax = axes[r, c]
            for name, label, style in series:
                if name in scores:
                    ax.plot(hours, scores[name].values[c], style, marker=".", label=label)
            if title == "spread/skill":
                ax.axhline(1.0, color="k", lw=0.8, alpha=0.5)
            ax.ticklabel_format(axis="y", useOffset=False)
            if r == 0:
                ax.set_title(f"{ch} [{scores['units'].values[c]}]", fontsize=9)
            if c == 0:
                ax.set_ylabel(title)
                ax.legend(fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("lead [h]")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"Skill vs lead ({scores.attrs.get('n_members', '?')} members, "
                 f"{scores.attrs.get('n_inits', '?')} inits)", fontsize=10)
    return _save(fig, path)


def plot_spectra(spectra: xr.Dataset, path: str | os.PathLike) -> Path:
    """One log-log panel per channel: mean zonal power vs wavenumber, the truth (black) and
    the forecast member (solid) and the truth at the same valid times (dashed), one colour per
    lead. Wavenumber 0 (the zonal mean) is left out."""
    channels = [str(c) for c in spectra["channel"].values]
    k = spectra["zonal_wavenumber"].values
    sel = k > 0
    ncol = min(3, len(channels))
    nrow = int(np.ceil(len(channels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False,
                             constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, spectra.sizes["prediction_timedelta"]))
    for i, ch in enumerate(channels):
        ax = axes.flat[i]
        for j, h in enumerate(spectra["lead_hours"].values):
            p = spectra["forecast_power"].sel(channel=ch).values[j]
            t = spectra["truth_power"].sel(channel=ch).values[j]
            ax.loglog(k[sel], p[sel], color=colours[j], lw=1.2, label=f"forecast {h:g} h")
            ax.loglog(k[sel], t[sel], color=colours[j], lw=0.9, ls="--",
                      label="truth (dashed)" if j == 0 else None)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(ch, fontsize=9)
        ax.set_xlabel("zonal wavenumber")
        ax.grid(alpha=0.3, which="both")
        if i == 0:
            ax.set_ylabel("power [units^2]")
            ax.legend(fontsize=7)
    for ax in axes.flat[len(channels):]:
        ax.set_visible(False)
    return _save(fig, path)

"""Skill figures: scores vs lead time per channel with the baselines, the headline (means
over channels of standardised scores), and zonal power spectra (matplotlib, Agg).

They take the datasets of `aeris.evaluate.skill` (`evaluate`, `headline_scores`,
`evaluate_spectra`) and write a PNG atomically; they return the path.
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

__all__ = ["plot_skill", "plot_headline", "plot_spectra"]

_PERS = dict(color="0.45", ls="--", marker="")
_CLIM = dict(color="k", ls=":", marker="")
# one row per panel kind: (title, [(score, label, style)]); style: a line style or a dict of kwargs
_ROWS = (
    ("RMSE", [("rmse_member0", "member 0", "-"), ("rmse_ensmean", "ensemble mean", "-"),
              ("spread", "spread", ":"), ("rmse_persistence", "persistence", _PERS),
              ("rmse_climatology", "climatology", _CLIM)]),
    ("CRPS", [("crps_fair", "fair", "-"), ("crps_ecdf", "ecdf", "--"),
              ("crps_persistence", "persistence (MAE)", _PERS),
              ("crps_climatology", "climatology (MAE)", _CLIM)]),
    ("spread/skill", [("ssr", "SSR", "-")]),
    ("ACC", [("acc", "ens. mean", "-"), ("acc_persistence", "persistence", _PERS)]),
)


def _line(ax, x, y, style, label) -> None:
    kw = dict(style) if isinstance(style, dict) else {"ls": style}
    kw.setdefault("marker", ".")
    ax.plot(x, y, label=label, **kw)


def _save(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
    return path


def _has(scores: xr.Dataset, names: list[str]) -> bool:
    return any(n in scores and not bool(scores[n].isnull().all()) for n in names)


def plot_skill(scores: xr.Dataset, path: str | os.PathLike) -> Path:
    """Grid of panels: a column per channel, a row per score kind (RMSE with spread, CRPS,
    SSR with the calibrated line at 1, ACC when present), each vs lead time in hours, with
    persistence (grey dashed) and climatology (black dotted) where scored."""
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
                if name in scores and not bool(scores[name].isnull().all()):
                    _line(ax, hours, scores[name].values[c], style, label)
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


def plot_headline(head: xr.Dataset, path: str | os.PathLike, *, title: str | None = None,
                  ssr_band: tuple[float, float] | None = None, small: bool = False) -> Path:
    """Two panels vs lead: the standardised ensemble-mean RMSE with persistence and
    climatology (and the fair CRPS beside their MAE), and the mean spread/skill with the
    line at 1 and, if given, a target band `ssr_band`. `small`: a compact figure (README)."""
    hours = head["lead_hours"].values
    size, dpi = ((7.2, 3.3), 90) if small else ((10, 4.2), 110)
    fig, (a, b) = plt.subplots(1, 2, figsize=size, constrained_layout=True)
    for name, label, style in (("rmse_ensmean", "model RMSE (ens. mean)", {"color": "tab:blue", "lw": 2}),
                               ("rmse_persistence", "persistence RMSE", _PERS),
                               ("rmse_climatology", "climatology RMSE", _CLIM),
                               ("crps_fair", "model CRPS", {"color": "tab:orange"}),
                               ("crps_persistence", "persistence MAE", {**_PERS, "color": "tab:orange", "alpha": 0.6}),
                               ("crps_climatology", "climatology MAE", {**_CLIM, "color": "tab:orange", "alpha": 0.6})):
        if name in head and not bool(head[name].isnull().all()):
            _line(a, hours, head[name].values, style, label)
    a.set_xlabel("lead [h]")
    a.set_ylabel("standardised units")
    a.set_title("error vs lead (mean over channels)", fontsize=9)
    a.legend(fontsize=6.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    if "ssr" in head:
        _line(b, hours, head["ssr"].values, {"color": "tab:green", "lw": 2}, "spread/skill")
    b.axhline(1.0, color="k", lw=0.8, alpha=0.5)
    if ssr_band is not None:
        b.axhspan(*ssr_band, color="tab:green", alpha=0.1, lw=0, label=f"target {ssr_band[0]:g}-{ssr_band[1]:g}")
    b.set_xlabel("lead [h]")
    b.set_title("spread/skill (mean over channels)", fontsize=9)
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    n = head.attrs.get("n_inits", "?")
    fig.suptitle(title or f"Skill vs lead ({head.attrs.get('n_members', '?')} members, {n} inits)", fontsize=10)
    return _save(fig, path, dpi=dpi)


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

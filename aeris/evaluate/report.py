"""The demo's report: one page (report.html, self-contained) and the same as report.md, plus
summary.json (docs/evaluation.md, "Demo report").

Inputs are the outputs of a demo run, found by `RunLayout`: the scores and spectra of
`aeris evaluate` (``<run>/scores/``), the tracks of `aeris track` (``<run>/tracks/``), the
training run (``metrics.jsonl`` and ``checkpoints/step_*/run.json``, the config the model was
trained with), the normalisation statistics of that config and the demo's stage record
(``<run>/demo_stages.json``: commands and seconds). `build_report` draws the figures into
``<run>/report_files/``, computes the summary (`aeris.evaluate.summary`) and writes
report.md (images as files beside it), report.html (images embedded as base64 PNG) and
summary.json, each atomically. `readme_figures` writes the two small README figures.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from aeris.atomic import atomic_write  # noqa: E402
from aeris.config import Config, ConfigError, from_dict  # noqa: E402
from aeris.data.stats import stats_path  # noqa: E402
from aeris.data.store import open_store  # noqa: E402
from aeris.evaluate import summary as S  # noqa: E402
from aeris.evaluate import track_plots as tp  # noqa: E402
from aeris.evaluate.cases import LAURA_SID, LAURA_TRACK_INIT  # noqa: E402
from aeris.evaluate.skill import channel_std, headline_scores  # noqa: E402
from aeris.evaluate.skill_plots import plot_headline, plot_skill, plot_spectra  # noqa: E402
from aeris.train.metrics_log import read_metrics  # noqa: E402

__all__ = ["REPORT_SECTIONS", "STAGES_FILE", "RunLayout", "build_report", "readme_figures", "load_stages",
           "write_stages"]

REPORT_SECTIONS = ("Summary and targets", "What ran", "Training", "Skill vs lead", "Spread/skill", "CRPS",
                   "Zonal spectra", "Hurricane Laura", "Storm season: POD/FAR", "Throughput and timing")
STAGES_FILE = "demo_stages.json"


# ---- inputs --------------------------------------------------------------------------------------
@dataclass
class RunLayout:
    """Where a demo run's outputs are: `run` (forecasts, scores/, tracks/, the report) and
    `train` (the training run: metrics.jsonl, checkpoints/; default the same folder)."""

    run: Path
    train: Path | None = None
    storm: str = LAURA_SID
    track_init: str = LAURA_TRACK_INIT
    laura_store: str = "laura_forecast.zarr"
    extra_stores: tuple[str, ...] = field(default_factory=lambda: ("val_forecast.zarr",))

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.train = Path(self.train) if self.train is not None else self.run

    @property
    def scores(self) -> Path:
        return self.run / "scores"

    @property
    def tracks(self) -> Path:
        return self.run / "tracks"

    @property
    def storm_dir(self) -> Path:
        return self.tracks / self.storm / Path(self.laura_store).name.split(".")[0]

    @property
    def files(self) -> Path:
        return self.run / "report_files"


def write_stages(path: str | os.PathLike, stages: Sequence[Mapping], **extra) -> Path:
    """The demo's stage record: [{key, title, command, seconds}], plus `extra` (atomic)."""
    text = json.dumps({"stages": list(stages), **extra}, indent=1)
    return atomic_write(Path(path), lambda p: p.write_text(text))


def load_stages(path: str | os.PathLike) -> dict:
    """The stage record written by `write_stages` ({"stages": []} when there is none)."""
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {"stages": []}


def _run_record(train: Path) -> dict | None:
    """run.json of the newest checkpoint (the config and mesh the model was trained with)."""
    found = sorted(train.glob("checkpoints/step_*/run.json"), key=lambda p: p.parent.name)
    return json.loads(found[-1].read_text()) if found else None


def _known(cls: type, data: dict) -> dict:
    """`data` without the keys dataclass `cls` (and its nested sections) does not have."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    return {k: _known(hints[k], v) if is_dataclass(hints[k]) and isinstance(v, dict) else v
            for k, v in data.items() if k in names}


def _config_of(record: dict | None) -> tuple[Config | None, str]:
    """The training config of a checkpoint record, and a note when it had to be adapted: a
    checkpoint of an older version may carry keys this version dropped (they are left out)."""
    if record is None:
        return None, ""
    raw = json.loads(record["config"])
    try:
        return from_dict(Config, raw), ""
    except ConfigError as e:
        try:
            return from_dict(Config, _known(Config, raw)), f"config keys unknown to this version left out ({e})"
        except ConfigError as e2:
            return None, f"the checkpoint's config cannot be read: {e2}"


def _read_csv(path: Path, times: Sequence[str] = ()) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    df = pd.read_csv(path)
    for c in times:
        if c in df:
            df[c] = pd.to_datetime(df[c])
    return df


@dataclass
class _Inputs:
    scores: xr.Dataset
    spectra: xr.Dataset | None
    headline: xr.Dataset | None
    headline_note: str
    cfg: Config | None
    config_note: str
    record: dict | None
    metrics: list[dict]
    matched: pd.DataFrame
    members: pd.DataFrame
    ensemble: pd.DataFrame
    best: pd.DataFrame
    by_lead: pd.DataFrame
    detection: dict[str, dict]
    inits: list[pd.Timestamp]
    n_members: int


def _inputs(lay: RunLayout) -> _Inputs:
    scores_nc = lay.scores / "scores.nc"
    if not scores_nc.exists():
        raise FileNotFoundError(f"{scores_nc} not found: run `aeris evaluate --out {lay.scores} ...` first")
    with xr.open_dataset(scores_nc) as f:
        scores = f.load()
    spectra = None
    if (lay.scores / "spectra.nc").exists():
        with xr.open_dataset(lay.scores / "spectra.nc") as f:
            spectra = f.load()
    record = _run_record(lay.train)
    cfg, config_note = _config_of(record)
    headline, note = None, ""
    if cfg is not None:
        sp = stats_path(cfg.data)
        if Path(sp).exists():
            headline = headline_scores(scores, channel_std(sp, [str(c) for c in scores["channel"].values]))
            note = f"standardised by the normalisation statistics {sp}"
        else:
            note = f"no statistics file {sp}: no standardised headline"
    else:
        note = config_note or f"no checkpoint in {lay.train}: the training config (and its statistics) are unknown"
    metrics = read_metrics(lay.train / "metrics.jsonl") if (lay.train / "metrics.jsonl").exists() else []
    sd = lay.storm_dir
    matched = _read_csv(sd / "matched_tracks.csv", ("init", "time"))
    members = _read_csv(sd / "member_errors.csv", ("init", "time"))
    ensemble = _read_csv(sd / "ensemble_errors.csv", ("init", "time"))
    best = _read_csv(sd / "best_track.csv", ("time",))
    by_lead = _read_csv(sd / "errors_by_lead.csv")
    detection = {p.stem.removeprefix("detection_"): json.loads(p.read_text())
                 for p in sorted(lay.tracks.glob("detection_*.json"))}
    store = lay.run / lay.laura_store
    if store.exists():
        ds = open_store(store)
        inits = list(pd.DatetimeIndex(ds["time"].values))
        n_members = int(ds.sizes.get("number", 1))
        ds.close()
    else:
        inits, n_members = [], int(scores.attrs.get("n_members", 0))
    return _Inputs(scores, spectra, headline, note, cfg, config_note, record, metrics, matched, members,
                   ensemble, best, by_lead, detection, inits, n_members)


# ---- the document: blocks rendered to markdown and to html ----------------------------------------
class _Doc:
    """A list of blocks: ("h2", title), ("p", text), ("table", header, rows), ("img", file,
    caption), ("row", [(file, caption)]) figures side by side, ("pre", text)."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def h2(self, t: str) -> None:
        self.blocks.append(("h2", t))

    def p(self, t: str) -> None:
        self.blocks.append(("p", t))

    def table(self, header: Sequence[str], rows: Sequence[Sequence]) -> None:
        self.blocks.append(("table", list(header), [[str(c) for c in r] for r in rows]))

    def img(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", Path(path), caption))

    def row(self, images: Sequence[tuple[Path, str]]) -> None:
        if images:
            self.blocks.append(("row", [(Path(f), c) for f, c in images]))

    def pre(self, t: str) -> None:
        self.blocks.append(("pre", t))

    def markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h2":
                out += [f"## {b[1]}", ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "table":
                out += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in b[2]] + [""]
            elif b[0] == "img":
                out += [f"![{b[2]}]({os.path.relpath(b[1], base)})", "", f"*{b[2]}*", ""]
            elif b[0] == "row":
                out += [" ".join(f"![{c}]({os.path.relpath(f, base)})" for f, c in b[1]), "",
                        "*" + "; ".join(c for _, c in b[1]) + "*", ""]
            elif b[0] == "pre":
                out += ["```", b[1], "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        toc = [b[1] for b in self.blocks if b[0] == "h2"]
        body.append("<nav>" + " · ".join(f'<a href="#s{i}">{e(t)}</a>' for i, t in enumerate(toc)) + "</nav>")
        k = 0
        for b in self.blocks:
            if b[0] == "h2":
                body.append(f'<h2 id="s{k}">{e(b[1])}</h2>')
                k += 1
            elif b[0] == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td{_cls(c)}>{_inline(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                body.append(_figure(b[1], b[2]))
            elif b[0] == "row":
                body.append('<div class="row">' + "".join(_figure(f, c) for f, c in b[1]) + "</div>")
            elif b[0] == "pre":
                body.append(f"<pre>{e(b[1])}</pre>")
        return _PAGE.format(title=e(self.title), body="\n".join(body))


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _inline(t: str) -> str:
    """`code` spans of the markdown text as <code>; everything else escaped."""
    parts = str(t).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _cls(c: str) -> str:
    return ' class="pass"' if c == "PASS" else ' class="miss"' if c == "MISS" else ""


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 1.5em auto;
       padding: 0 1em; color: #1d2330; background: #fff; line-height: 1.45; }}
h1 {{ font-size: 1.6em; border-bottom: 2px solid #1f5fa8; padding-bottom: .2em; }}
h2 {{ font-size: 1.25em; margin-top: 1.6em; color: #1f5fa8; border-bottom: 1px solid #d5dbe5; }}
nav {{ font-size: .85em; background: #f3f6fa; padding: .5em .8em; border-radius: 4px; }}
nav a {{ color: #1f5fa8; text-decoration: none; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: .88em; }}
th, td {{ border: 1px solid #d5dbe5; padding: .25em .6em; text-align: left; vertical-align: top; }}
th {{ background: #eef2f8; }}
td.pass {{ background: #dff3e4; color: #176b30; font-weight: 600; }}
td.miss {{ background: #fbe3e1; color: #a3261b; font-weight: 600; }}
figure {{ margin: .8em 0; }}
.row {{ display: flex; flex-wrap: wrap; gap: .6em; }}
.row figure {{ flex: 1 1 45%; min-width: 480px; }}
figure img {{ max-width: 100%; border: 1px solid #e3e7ee; }}
figcaption {{ font-size: .85em; color: #5a6372; }}
pre, code {{ background: #f5f7fa; font-size: .85em; }}
pre {{ padding: .6em; overflow-x: auto; white-space: pre-wrap; }}
</style></head>
<body>
{body}
</body></html>
"""


# ---- figures ------------------------------------------------------------------------------------
def _save(fig, path: Path, dpi: int = 100) -> Path:
    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png", bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _training_figure(metrics: list[dict], path: Path) -> Path | None:
    rows = [r for r in metrics if "loss" in r and "step" in r]
    if not rows:
        return None
    ens = [r for r in metrics if "ens_rmse_ens_mean" in r]
    fig, axes = plt.subplots(1, 2 if ens else 1, figsize=(11 if ens else 6, 3.6), squeeze=False)
    a = axes[0, 0]
    a.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="training loss", lw=1.2)
    val = [r for r in metrics if "val_loss" in r]
    if val:
        a.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss")
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("diffusion loss")
    a.legend(fontsize=8)
    a.grid(alpha=0.3, which="both")
    if ens:
        b = axes[0, 1]
        st = [r["step"] for r in ens]
        b.plot(st, [r["ens_rmse_ens_mean"] for r in ens], "o-", label="ensemble mean")
        b.plot(st, [r["ens_rmse_member0"] for r in ens], "s--", label="member 0")
        b.plot(st, [r["ens_rmse_persistence"] for r in ens], "k:", label="persistence")
        b.set_xlabel("step")
        b.set_ylabel("one-step RMSE (standardised)")
        b.set_title("ensemble validation on held-out times", fontsize=9)
        b.legend(fontsize=8)
        b.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _per_channel_figure(scores: xr.Dataset, head: xr.Dataset | None, score: str, path: Path, *,
                        std: Mapping[str, float] | None, ylabel: str, band: tuple | None = None,
                        baselines: Sequence[tuple[str, str, dict]] = ()) -> Path | None:
    if score not in scores or bool(scores[score].isnull().all()):
        return None
    hours = scores["lead_hours"].values
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for c in scores["channel"].values:
        v = scores[score].sel(channel=c).values / (std[str(c)] if std else 1.0)
        ax.plot(hours, v, lw=0.9, alpha=0.8, label=str(c))
    if head is not None and score in head:
        ax.plot(hours, head[score].values, color="k", lw=2.4, label="mean over channels")
        for name, label, kw in baselines:
            if name in head:
                ax.plot(hours, head[name].values, label=label, **kw)
    if band is not None:
        ax.axhspan(*band, color="tab:green", alpha=0.1, lw=0, label=f"target {band[0]:g}-{band[1]:g}")
        ax.axhline(1.0, color="k", lw=0.6, alpha=0.5)
    ax.set_xlabel("lead [h]")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return _save(fig, path)


def _std_from(head: xr.Dataset | None, scores: xr.Dataset, cfg: Config | None) -> dict[str, float] | None:
    if head is None or cfg is None:
        return None
    return channel_std(stats_path(cfg.data), [str(c) for c in scores["channel"].values])


# ---- the report ---------------------------------------------------------------------------------
def _fmt(v, spec: str = ".4f") -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _periods_of(inits: Sequence[str], cfg: Config) -> str:
    """Which data period each init lies in ("3 in the test period, 1 in the validation period")."""
    d = cfg.data
    where = {"test": d.test_period, "validation": d.val_period, "TRAINING": d.train_period}
    count: dict[str, int] = {}
    for t in pd.DatetimeIndex(inits):
        name = next((k for k, (a, b) in where.items() if pd.Timestamp(a) <= t <= _end(b)), "no")
        count[name] = count.get(name, 0) + 1
    return ", ".join(f"{n} in the {k} period" for k, n in count.items())


def _end(b: str) -> pd.Timestamp:
    t = pd.Timestamp(b)
    return t + pd.Timedelta("1D") - pd.Timedelta("1ns") if len(str(b)) <= 10 else t  # a date: the whole day


def _value(v) -> str:
    """A summary value for a table: floats to 4 digits, a lead -> value dict on one line."""
    if isinstance(v, dict):
        return ", ".join(f"{k} h: {_fmt(x, '.3f')}" for k, x in v.items()) or "—"
    if isinstance(v, float):
        return _fmt(v, ".4g")
    return "—" if v is None else str(v)


def _median(rows: list[dict], key: str) -> float | None:
    v = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(np.median(v)) if v else None


def build_report(layout: RunLayout, *, stages: Sequence[Mapping] | None = None, started: float | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Figures, summary.json, report.md and report.html of the demo run at `layout`.

    stages: the demo's [{key, title, command, seconds}] (default: ``demo_stages.json``);
    started: the demo's start (``time.time()``): the demo time then runs up to the moment the
    summary is written, this report included; without it the recorded total is used.
    Returns {"summary": dict, "paths": {name: Path}}."""
    t0 = time.time()
    lay = layout
    rec = load_stages(lay.run / STAGES_FILE)
    stages = list(stages) if stages is not None else list(rec.get("stages", []))
    inp = _inputs(lay)
    files = lay.files
    files.mkdir(parents=True, exist_ok=True)
    std = _std_from(inp.headline, inp.scores, inp.cfg)
    figs: dict[str, Path | None] = {}
    figs["training"] = _training_figure(inp.metrics, files / "training.png")
    if inp.headline is not None:
        figs["headline"] = plot_headline(inp.headline, files / "headline.png", ssr_band=S.SSR_BAND)
    figs["skill"] = plot_skill(inp.scores, files / "skill_by_channel.png")
    figs["ssr"] = _per_channel_figure(inp.scores, inp.headline, "ssr", files / "spread_skill.png", std=None,
                                      ylabel="spread / skill", band=S.SSR_BAND)
    pers, clim = dict(color="0.4", ls="--", lw=1.6), dict(color="k", ls=":", lw=1.6)
    figs["crps"] = _per_channel_figure(
        inp.scores, inp.headline, "crps_fair", files / "crps.png", std=std,
        ylabel="fair CRPS" + (" (standardised)" if std else ""),
        baselines=(("crps_persistence", "persistence MAE (mean)", pers),
                   ("crps_climatology", "climatology MAE (mean)", clim)))
    if inp.spectra is not None:
        figs["spectra"] = plot_spectra(inp.spectra, files / "spectra.png")
    inits = inp.inits
    if len(inp.best) and inits:
        fig = tp.plot_track_map(inp.matched, inp.best, inp.ensemble, inits=inits,
                                title=f"{lay.storm}: member tracks, ensemble mean and best track")
        figs["track_map"] = _save(fig, files / "laura_tracks.png", dpi=90)
        for init in inits:
            fig = tp.plot_intensity(inp.matched, inp.best[(inp.best["time"] >= init - pd.Timedelta("2D"))
                                                         & (inp.best["time"] <= init + pd.Timedelta("6D"))],
                                    inp.ensemble, init=init, title=f"intensity, init {init:%Y-%m-%d %HZ}")
            fig.set_size_inches(7.5, 3.4)
            figs[f"intensity_{init:%m%d%H}"] = _save(fig, files / f"laura_intensity_{init:%Y%m%d%H}.png", dpi=80)
    laura = None
    if inp.inits and pd.Timestamp(lay.track_init) in inp.inits:
        laura = S.laura_tracking(inp.matched, inp.members, lay.track_init, inp.n_members)

    report_s = time.time() - t0
    seconds = {s["key"]: float(s["seconds"]) for s in stages}
    if started is not None:
        seconds["report"] = report_s
        total = time.time() - started
    else:  # a report rebuilt later: the demo's recorded total, if any
        total = rec.get("demo_seconds")
    summary = S.demo_summary(inp.headline, laura, seconds, total, extra={
        "held_out_inits": [s.strip() for s in str(inp.scores.attrs.get("init_times", "")).split(",") if s.strip()],
        "members": int(inp.scores.attrs.get("n_members", 0)),
        "headline_channels": [c.strip() for c in str(inp.headline.attrs.get("channels", "")).split(",")]
        if inp.headline is not None else [],
        "headline_note": inp.headline_note,
        "spread_skill_correction": bool(int(inp.scores.attrs.get("ssr_finite_ensemble_correction", 0))),
        "climatology": {k: inp.scores.attrs[k] for k in ("climatology", "climatology_kind", "climatology_years",
                                                          "climatology_note") if k in inp.scores.attrs},
        "laura": laura,
        "one_step_validation": next(({k.removeprefix("ens_"): v for k, v in r.items() if k.startswith("ens_")}
                                     | {"step": r["step"]} for r in reversed(inp.metrics)
                                     if "ens_rmse_ens_mean" in r), None),
    })
    doc = _document(lay, inp, summary, stages, figs)
    paths = {"summary": S.write_summary(summary, lay.run / "summary.json")}
    md, page = doc.markdown(lay.run), doc.html()
    paths["markdown"] = atomic_write(lay.run / "report.md", lambda p: p.write_text(md))
    paths["html"] = atomic_write(lay.run / "report.html", lambda p: p.write_text(page))
    log(f"report: {paths['html']} (and {paths['markdown'].name}, summary.json)")
    return {"summary": summary, "paths": paths}


def _document(lay: RunLayout, inp: _Inputs, summary: dict, stages: Sequence[Mapping], figs: dict) -> _Doc:
    a = inp.scores.attrs
    doc = _Doc("AERIS demo report")
    base = lay.run

    def fig(name: str, caption: str) -> None:
        if figs.get(name) is not None:
            doc.img(figs[name], caption)

    # 1 summary
    doc.h2(REPORT_SECTIONS[0])
    where = _periods_of(summary["held_out_inits"], inp.cfg) if inp.cfg is not None else ""
    held = ("the model never trains on them" if "TRAINING" not in where else
            "SOME LIE IN THE TRAINING PERIOD: those scores are not held-out")
    doc.p(f"Scored on the inits {a.get('init_times', '?')} ({a.get('n_members', '?')} members each"
          f"{'; ' + where if where else ''}): {held}. Headline numbers are the latitude-weighted RMSE of the ensemble mean in "
          f"standardised units (each channel divided by its climatological std), averaged over "
          f"{', '.join(summary['headline_channels']) or 'the headline channels'} ({inp.headline_note}).")
    doc.table(["target", "result", "details"],
              [[t["name"], "PASS" if t["pass"] else "MISS", t["text"]] for t in summary["targets"].values()])
    doc.table(["summary.json key", "value"], [[f"`{k}`", _value(summary[k])] for k in S.SUMMARY_KEYS])
    # 2 what ran
    doc.h2(REPORT_SECTIONS[1])
    if stages:
        doc.pre("\n".join(f"$ {s['command']}" for s in stages))
    if inp.record is not None and inp.cfg is not None:
        c, mesh = inp.cfg, inp.record.get("mesh", [])
        world = int(np.prod(mesh)) if mesh else 1
        meta = inp.record.get("meta", {})
        doc.table(["", "this run"], [
            ["mesh", " x ".join(f"{n}{v}" for n, v in zip(("dp", "pp", "wy", "wx", "sp"), mesh)) + f" ({world} rank{'s' if world > 1 else ''})"],
            ["model", f"dim {c.model.dim}, depth {c.model.depth}, heads {c.model.heads}, MLP {c.model.mlp_hidden}, "
                      f"window {c.model.window[0]}x{c.model.window[1]}"],
            ["training", f"{inp.record.get('step', '?')} steps, {inp.record.get('samples_seen', '?')} samples, "
                         f"lr {c.train.lr:g}, warm-up {c.train.warmup_steps}, batch {c.train.micro_batch} x "
                         f"accum {c.train.grad_accum}"],
            ["sampler", f"{c.diffusion.steps} steps"],
            ["data", f"`{c.data.path}`, model grid {meta.get('grid', '?')}, {len(meta.get('channels', []))} "
                     f"channels, {c.data.dt_hours} h step"],
            ["periods", f"train {' .. '.join(c.data.train_period)}, validation {' .. '.join(c.data.val_period)}, "
                        f"test {' .. '.join(c.data.test_period)}"],
            ["climatology", f"{a.get('climatology_kind', '?')} from {a.get('climatology', '?')}"
                            + (f" ({a['climatology_note']})" if a.get("climatology_note") else "")],
        ])
        if inp.config_note:
            doc.p(f"Note: {inp.config_note}.")
        src = Path(c.data.path)
        if src.exists():
            attrs = open_store(src).attrs
            doc.p(f"Truth store: {attrs.get('title', src.name)}; synthetic: {attrs.get('synthetic', 'no')}; "
                  f"{attrs.get('source', '')}. Storms: {attrs.get('storms_source', '-')}.")
    else:
        doc.p(inp.headline_note)
    # 3 training
    doc.h2(REPORT_SECTIONS[2])
    if figs.get("training") is not None:
        fig("training", "training loss vs step (from metrics.jsonl) and the one-step ensemble validation")
        last = summary.get("one_step_validation")
        if last:
            doc.p(f"One-step validation at step {last['step']}: ensemble-mean RMSE {_fmt(last.get('rmse_ens_mean'))}, "
                  f"member 0 {_fmt(last.get('rmse_member0'))}, persistence {_fmt(last.get('rmse_persistence'))}, "
                  f"spread/skill {_fmt(last.get('spread_skill'), '.3f')}.")
    else:
        doc.p(f"No training metrics in {lay.train / 'metrics.jsonl'}.")
    # 4 skill vs lead
    doc.h2(REPORT_SECTIONS[3])
    if inp.headline is not None:
        fig("headline", "standardised error vs lead, mean over the headline channels: the model beside "
                        "persistence and climatology; spread/skill")
        h = inp.headline
        rows = []
        for j, hr in enumerate(h["lead_hours"].values):
            if hr % 24 == 0 and hr > 0:
                r, p, cl = (float(h[k].values[j]) for k in ("rmse_ensmean", "rmse_persistence", "rmse_climatology"))
                rows.append([f"{hr:g} h", _fmt(r), _fmt(p), _fmt(cl), _fmt(r / p if p else np.nan, ".3f"),
                             _fmt(r / cl if cl else np.nan, ".3f")])
        doc.table(["lead", "ens. mean", "persistence", "climatology", "/ persistence", "/ climatology"], rows)
    else:
        doc.p(inp.headline_note)
    fig("skill", "per channel, physical units: RMSE (member 0, ensemble mean, spread, persistence, climatology), "
                 "CRPS (with the baselines' MAE), spread/skill and ACC")
    # 5 spread/skill
    doc.h2(REPORT_SECTIONS[4])
    fig("ssr", "spread/skill per channel and the mean over channels" +
        (" (x sqrt((M+1)/M): a calibrated ensemble scores 1)" if summary["spread_skill_correction"] else ""))
    if summary["spread_skill"]:
        doc.table(["lead"] + list(summary["spread_skill"]), [["spread/skill"] + [_fmt(v, ".3f") for v in
                                                                               summary["spread_skill"].values()]])
    doc.p("At lead 0 the members are the initial condition: no spread and no error, so the ratio is "
          "undefined (NaN, not 0).")
    # 6 CRPS
    doc.h2(REPORT_SECTIONS[5])
    fig("crps", "fair CRPS per channel, its mean and the MAE of persistence and climatology (the CRPS of a "
                "deterministic forecast)")
    if inp.headline is not None:
        h = inp.headline
        rows = [[f"{hr:g} h", _fmt(float(h["crps_fair"].values[j])), _fmt(float(h["crps_persistence"].values[j])),
                 _fmt(float(h["crps_climatology"].values[j]))]
                for j, hr in enumerate(h["lead_hours"].values) if hr % 24 == 0 and hr > 0]
        doc.table(["lead", "CRPS", "MAE persistence", "MAE climatology"], rows)
    # 7 spectra
    doc.h2(REPORT_SECTIONS[6])
    if figs.get("spectra") is not None:
        fig("spectra", "mean zonal power spectra of member 0 (solid) and of the truth at the same valid times "
                       "(dashed): a forecast that blurs loses power at high wavenumbers")
    else:
        doc.p(f"No spectra in {lay.scores}.")
    # 8 Laura
    doc.h2(REPORT_SECTIONS[7])
    fig("track_map", "Laura: member tracks, ensemble-mean track and the best track, one panel per init")
    doc.row([(figs[k], f"init {k[10:12]}-{k[12:14]} {k[14:16]}Z") for k in sorted(figs)
             if k.startswith("intensity_") and figs[k] is not None])
    if any(k.startswith("intensity_") for k in figs):
        doc.p("Intensity per init: minimum MSLP and maximum 10 m wind of the members (blue), the ensemble "
              "mean (red) and the best track (black).")
    laura = summary.get("laura")
    if laura is not None:
        doc.p(f"From {laura['init'][:13]}Z, {laura['members_tracked']} of {laura['members']} members track Laura for "
              f">= {laura['hours']:g} h (first node within {S.TRACK_START_H:g} h of the init).")
        doc.table(["member", "first lead", "last lead", "tracked", f"mean error 0-{laura['hours']:g} h"],
                  [[m, f"{v['first_lead_h']:g} h", f"{v['last_lead_h']:g} h", "yes" if v["tracked"] else "no",
                    _fmt(v["mean_error_km"], ".0f") + (" km" if v["mean_error_km"] is not None else "")]
                   for m, v in laura["per_member"].items()] or [["-", "-", "-", "no member matched", "-"]])
    if len(inp.by_lead):
        sel = inp.by_lead[inp.by_lead["lead_h"] % 24 == 0]
        doc.p("Track errors by lead, means over the inits and the members that track the storm:")
        doc.table(["lead", "members", "mean position error", "ens.-mean error", "spread", "fraction tracking"],
                  [[f"{r.lead_h:g} h", int(r.n) if np.isfinite(r.n) else 0, _fmt(r.pos_err_km, ".0f"),
                    _fmt(r.ensmean_pos_err_km, ".0f"), _fmt(r.spread_km, ".0f"), _fmt(r.frac_tracking, ".2f")]
                   for r in sel.itertuples()])
    elif not len(inp.matched):
        doc.p("No forecast track was matched to the storm.")
    # 9 POD/FAR
    doc.h2(REPORT_SECTIONS[8])
    if inp.detection:
        doc.table(["store", "POD", "FAR", "observed", "detected", "hits", "false alarms"],
                  [[k, _fmt(v.get("pod"), ".2f"), _fmt(v.get("far"), ".2f"), v.get("n_observed"),
                    v.get("n_detected"), v.get("n_hits"), v.get("n_false_alarms")] for k, v in inp.detection.items()])
        doc.p("Storms detected in the truth store over its whole period against the IBTrACS storms of the "
              "period that reach 34 kt (published stitching; docs/evaluation.md has both presets).")
    else:
        doc.p(f"No detection scores in {lay.tracks} (run `aeris track --truth ... --best-track ...`).")
    # 10 throughput
    doc.h2(REPORT_SECTIONS[9])
    rows = [r for r in inp.metrics if "samples_per_s" in r][1:]  # the first logged step includes warm-up
    if rows:
        doc.table(["", "median over logged steps"], [
            ["samples / s", _fmt(_median(rows, "samples_per_s"), ".3g")],
            ["seconds / step", _fmt(_median(rows, "seconds"), ".3g")],
            ["TFLOP/s (all ranks)", _fmt(_median(rows, "tflops"), ".3g")],
            ["MFU", _fmt(_median(rows, "mfu"), ".3g")],
            ["all-to-all bytes / step (all ranks)", _fmt(_median(rows, "bytes_all_to_all_all"), ".3g")],
            ["point-to-point bytes / step (all ranks)", _fmt(_median(rows, "bytes_p2p_all"), ".3g")]])
    if stages:
        doc.table(["stage", "seconds"], [[s["title"], f"{float(s['seconds']):.0f}"] for s in stages]
                  + ([["report", f"{summary['stage_seconds']['report']:.0f}"]] if "report" in summary["stage_seconds"]
                     else []) + [["whole demo", _fmt(summary["demo_seconds"], ".0f")]])
    doc.p(f"Report written {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC from {base}.")
    return doc


def readme_figures(layout: RunLayout, out: str | os.PathLike) -> list[Path]:
    """The two small README figures of a run: ``demo_skill.png`` (the headline vs lead) and
    ``demo_laura.png`` (the Laura tracks per init), compact PNGs."""
    inp = _inputs(layout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if inp.headline is None:
        raise FileNotFoundError(f"no headline scores: {inp.headline_note}")
    written = [plot_headline(inp.headline, out / "demo_skill.png", ssr_band=S.SSR_BAND, small=True,
                             title=f"Demo skill on held-out inits ({inp.scores.attrs.get('n_members', '?')} members)")]
    if not len(inp.best) or not inp.inits:
        raise FileNotFoundError(f"no Laura tracks in {layout.storm_dir}")
    fig = tp.plot_track_map(inp.matched, inp.best, inp.ensemble, inits=inp.inits,
                            title="Hurricane Laura: demo ensemble tracks vs best track")
    fig.set_size_inches(11, 3.6)
    written.append(_save(fig, out / "demo_laura.png", dpi=72))
    return written

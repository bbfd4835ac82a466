"""`aeris demo`: the main job on the embedded synthetic data, as the sequence of documented commands.

Each step is printed as the exact `aeris ...` command it runs (so the demo doubles as a
tutorial) and executed in a subprocess; steps whose outputs exist are reused. The stages and
their times go to ``<out>/demo_stages.json``; the last step, `aeris report`, runs in this
process (so that the demo's time includes it) and writes report.html, report.md and
summary.json with the targets, PASS or MISS (docs/evaluation.md, "Demo targets"). A miss is
printed, never a failure.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from aeris.cli.common import add_config_args, load_from_args
from aeris.evaluate.cases import LAURA_INITS, LAURA_SID


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole chain on the embedded synthetic data (what `make demo` runs)",
        description="synthetic reanalysis -> statistics -> prepared store -> train the tiny model "
                    "under a small SWiPe mesh -> one-step skill vs persistence -> ensemble forecasts "
                    "of Hurricane Laura and from the validation period -> skill scores beside persistence "
                    "and climatology -> cyclone tracks vs the best track -> report.html, report.md and "
                    "summary.json with the targets (PASS / MISS).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, default="demo")
    p.add_argument("--members", type=int, default=4, help="ensemble members of the Laura forecasts")
    p.add_argument("--skill-members", type=int, default=4,
                   help="members of the one-step skill check (a small ensemble's mean pays ~sqrt(1+1/M))")
    p.add_argument("--lead-days", type=float, default=5.0, help="forecast length")
    p.add_argument("--val-inits", type=int, default=1,
                   help="00Z inits from the validation period forecast and scored with Laura's (held-out "
                        "times beside the test period; 0 = Laura's inits only)")
    p.add_argument("--out", default="runs/demo", help="where forecasts, scores and figures go")
    p.add_argument("--serial", action="store_true", help="train in this process instead of a SWiPe mesh")
    p.set_defaults(func=run)


def _aeris(*args: str) -> list[str]:
    return [sys.executable, "-m", "aeris.cli", *args]


class _Stages:
    """Runs the demo's steps and records each one (key, title, command, seconds) in
    ``<out>/demo_stages.json`` as it finishes."""

    def __init__(self, out: Path):
        from aeris.evaluate.report import STAGES_FILE, write_stages
        self.path, self.write = out / STAGES_FILE, write_stages
        self.stages: list[dict] = []

    def step(self, key: str, title: str, cmd: list[str], shown: str) -> None:
        print(f"\n=== {title}\n$ {shown}", flush=True)
        t0 = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            raise SystemExit(f"demo step failed ({title}): exit code {rc}")
        self.record(key, title, shown, time.time() - t0)
        print(f"--- {title}: done in {self.stages[-1]['seconds']:.0f} s", flush=True)

    def record(self, key: str, title: str, shown: str, seconds: float, **extra) -> None:
        self.stages.append({"key": key, "title": title, "command": shown, "seconds": round(seconds, 1)})
        self.write(self.path, self.stages, **extra)


def validation_inits(period: list[str], n: int) -> list[str]:
    """`n` 00Z inits spread evenly over the validation `period` (first to last 00Z day)."""
    import numpy as np
    import pandas as pd
    if n <= 0:
        return []
    days = pd.date_range(pd.Timestamp(period[0]).normalize(), pd.Timestamp(period[1]), freq="D")
    if days.empty:
        raise SystemExit(f"the validation period {period} has no 00Z time for --val-inits")
    pick = np.unique(np.linspace(0, len(days) - 1, min(n, len(days))).round().astype(int))
    return [f"{days[i]:%Y-%m-%dT%H:%M}" for i in pick]


def run(args: argparse.Namespace) -> int:
    from aeris.data.stats import stats_path
    from aeris.evaluate.report import RunLayout, build_report
    from aeris.evaluate.summary import target_lines

    started = time.time()
    cfg = load_from_args(args)
    conf = ["--config", args.config, *args.overrides]
    cs = " ".join(shlex.quote(c) for c in conf)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps_h = int(round(args.lead_days * 24 / cfg.data.dt_hours))
    stages = _Stages(out)
    _step = stages.step

    if Path(cfg.synth.out).exists():
        print(f"\n=== synthetic reanalysis: {cfg.synth.out} exists (delete it to regenerate)")
        stages.record("synth", "synthetic reanalysis (exists, reused)", f"aeris data synth {cs}", 0.0)
    else:
        _step("synth", "synthetic reanalysis", _aeris("data", "synth", *conf), f"aeris data synth {cs}")
    _step("stats", "normalisation statistics", _aeris("data", "stats", *conf), f"aeris data stats {cs}")
    _step("prepare", "prepared training store", _aeris("data", "prepare", *conf), f"aeris data prepare {cs}")

    world = cfg.swipe.world_size
    if world > 1 and not args.serial:
        mesh = f"dp{cfg.swipe.dp} x pp{cfg.swipe.pp} x wy{cfg.swipe.wy} x wx{cfg.swipe.wx} x sp{cfg.swipe.sp}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "aeris.cli", "train", *conf]
        _step("train", f"train the tiny model under SWiPe ({mesh}, {world} gloo ranks)", cmd,
              f"torchrun --standalone --nproc-per-node={world} -m aeris.cli train {cs}")
        train_conf = conf + ["swipe.dp=1", "swipe.pp=1", "swipe.wy=1", "swipe.wx=1", "swipe.sp=1"]
    else:
        train_conf = conf + ["swipe.dp=1", "swipe.pp=1", "swipe.wy=1", "swipe.wx=1", "swipe.sp=1"]
        _step("train", "train the tiny model (one process)", _aeris("train", *train_conf),
              f"aeris train {' '.join(shlex.quote(c) for c in train_conf)}")
    tcs = " ".join(shlex.quote(c) for c in train_conf)
    _step("skill", "one-step ensemble skill vs persistence (held-out times)",
          _aeris("train", *train_conf, "--skill", "--skill-members", str(args.skill_members)),
          f"aeris train {tcs} --skill --skill-members {args.skill_members}")

    fc = out / "laura_forecast.zarr"
    fargs = ["--checkpoint", cfg.train.out_dir, "--out", str(fc), "--init", *LAURA_INITS,
             "--steps", str(steps_h), "--members", str(args.members)]
    _step("forecast_laura", "ensemble forecasts of Hurricane Laura (test period)",
          _aeris("forecast", *train_conf, *fargs), f"aeris forecast {tcs} {' '.join(fargs)}")
    stores = [str(fc)]
    vinits = validation_inits(cfg.data.val_period, args.val_inits)
    if vinits:
        vfc = out / "val_forecast.zarr"
        vargs = ["--checkpoint", cfg.train.out_dir, "--out", str(vfc), "--init", *vinits,
                 "--steps", str(steps_h), "--members", str(args.members)]
        _step("forecast_validation", "ensemble forecasts from the validation period (held out)",
              _aeris("forecast", *train_conf, *vargs), f"aeris forecast {tcs} {' '.join(vargs)}")
        stores.append(str(vfc))
    # the climatology of the baselines comes from the training period: never from the scored times
    eargs = ["--forecast", *stores, "--truth", cfg.data.path, "--out", str(out / "scores"),
             "--climatology-period", *cfg.data.train_period, "--ssr-correction", "--stats", stats_path(cfg.data)]
    _step("evaluate", "skill scores of the held-out forecasts, beside persistence and climatology",
          _aeris("evaluate", *eargs), f"aeris evaluate {' '.join(eargs)}")
    targs = ["--forecast", str(fc), "--truth", cfg.data.path, "--storm", LAURA_SID,
             "--out", str(out / "tracks")]
    _step("track", "cyclone tracks vs the best track", _aeris("track", *targs), f"aeris track {' '.join(targs)}")

    shown = f"aeris report --run {out}" + (f" --train-dir {cfg.train.out_dir}"
                                           if Path(cfg.train.out_dir).resolve() != out.resolve() else "")
    print(f"\n=== report and targets\n$ {shown}", flush=True)
    t0 = time.time()
    res = build_report(RunLayout(out, train=cfg.train.out_dir), stages=stages.stages, started=started)
    summary = res["summary"]
    stages.record("report", "report and summary", shown, time.time() - t0, demo_seconds=summary["demo_seconds"])
    print(f"\nDemo finished in {summary['demo_seconds'] / 60:.1f} min. Targets on held-out times "
          f"({summary['targets_met']} of {summary['targets_total']} met):")
    for line in target_lines(summary):
        print(f"  {line}")
    print(f"\nReport: {res['paths']['html']} (and {res['paths']['markdown'].name}; summary: "
          f"{res['paths']['summary']}). Outputs under {out}/ (scores/, tracks/, *_forecast.zarr) and "
          f"{cfg.train.out_dir}/ (checkpoints, metrics.jsonl).")
    return 0

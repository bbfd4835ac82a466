"""`aeris demo`: the main job on the embedded synthetic data, as the sequence of documented commands.

Each step is printed as the exact `aeris ...` command it runs (so the demo doubles as a
tutorial) and executed in a subprocess; steps whose outputs exist are reused.
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

LAURA_INITS = ["2020-08-21T00:00", "2020-08-23T00:00", "2020-08-25T00:00"]
LAURA_SID = "2020233N14313"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole chain on the embedded synthetic data (what `make demo` runs)",
        description="synthetic reanalysis -> statistics -> prepared store -> train the tiny model "
                    "under a small SWiPe mesh -> one-step skill vs persistence -> ensemble forecasts "
                    "of Hurricane Laura -> skill scores -> cyclone tracks vs the best track.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, default="demo")
    p.add_argument("--members", type=int, default=4, help="ensemble members of the Laura forecasts")
    p.add_argument("--skill-members", type=int, default=8,
                   help="members of the one-step skill check (a small ensemble's mean pays ~sqrt(1+1/M))")
    p.add_argument("--lead-days", type=float, default=5.0, help="forecast length")
    p.add_argument("--out", default="runs/demo", help="where forecasts, scores and figures go")
    p.add_argument("--serial", action="store_true", help="train in this process instead of a SWiPe mesh")
    p.set_defaults(func=run)


def _aeris(*args: str) -> list[str]:
    return [sys.executable, "-m", "aeris.cli", *args]


def _step(title: str, cmd: list[str], shown: str) -> None:
    print(f"\n=== {title}\n$ {shown}", flush=True)
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        raise SystemExit(f"demo step failed ({title}): exit code {rc}")
    print(f"--- {title}: done in {time.time() - t0:.0f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    conf = ["--config", args.config, *args.overrides]
    cs = " ".join(shlex.quote(c) for c in conf)
    out = Path(args.out)
    steps_h = int(round(args.lead_days * 24 / cfg.data.dt_hours))

    if Path(cfg.synth.out).exists():
        print(f"\n=== synthetic reanalysis: {cfg.synth.out} exists (delete it to regenerate)")
    else:
        _step("synthetic reanalysis", _aeris("data", "synth", *conf), f"aeris data synth {cs}")
    _step("normalisation statistics", _aeris("data", "stats", *conf), f"aeris data stats {cs}")
    _step("prepared training store", _aeris("data", "prepare", *conf), f"aeris data prepare {cs}")

    world = cfg.swipe.world_size
    if world > 1 and not args.serial:
        mesh = f"dp{cfg.swipe.dp} x pp{cfg.swipe.pp} x wy{cfg.swipe.wy} x wx{cfg.swipe.wx} x sp{cfg.swipe.sp}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "aeris.cli", "train", *conf]
        _step(f"train the tiny model under SWiPe ({mesh}, {world} gloo ranks)", cmd,
              f"torchrun --standalone --nproc-per-node={world} -m aeris.cli train {cs}")
        train_conf = conf + ["swipe.dp=1", "swipe.pp=1", "swipe.wy=1", "swipe.wx=1", "swipe.sp=1"]
    else:
        train_conf = conf + ["swipe.dp=1", "swipe.pp=1", "swipe.wy=1", "swipe.wx=1", "swipe.sp=1"]
        _step("train the tiny model (one process)", _aeris("train", *train_conf),
              f"aeris train {' '.join(shlex.quote(c) for c in train_conf)}")
    tcs = " ".join(shlex.quote(c) for c in train_conf)
    _step("one-step ensemble skill vs persistence (held-out times)",
          _aeris("train", *train_conf, "--skill", "--skill-members", str(args.skill_members)),
          f"aeris train {tcs} --skill --skill-members {args.skill_members}")

    fc = out / "laura_forecast.zarr"
    fargs = ["--checkpoint", cfg.train.out_dir, "--out", str(fc), "--init", *LAURA_INITS,
             "--steps", str(steps_h), "--members", str(args.members)]
    _step("ensemble forecasts of Hurricane Laura", _aeris("forecast", *train_conf, *fargs),
          f"aeris forecast {tcs} {' '.join(fargs)}")
    eargs = ["--forecast", str(fc), "--truth", cfg.data.path, "--out", str(out / "scores"),
             "--climatology-period", *cfg.data.train_period]
    _step("skill scores", _aeris("evaluate", *eargs), f"aeris evaluate {' '.join(eargs)}")
    targs = ["--forecast", str(fc), "--truth", cfg.data.path, "--storm", LAURA_SID,
             "--out", str(out / "tracks")]
    _step("cyclone tracks vs the best track", _aeris("track", *targs), f"aeris track {' '.join(targs)}")
    print(f"\nDemo finished. Outputs under {out}/ (scores/, tracks/, laura_forecast.zarr) and "
          f"{cfg.train.out_dir}/ (checkpoints, metrics.jsonl).")
    return 0

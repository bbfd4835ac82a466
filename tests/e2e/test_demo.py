"""`aeris demo` end to end at reduced size: every stage runs, the report and summary.json are
written with every section and key, the targets are printed (PASS or MISS) and a miss does not
fail the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aeris.evaluate.report import REPORT_SECTIONS
from aeris.evaluate.summary import SUMMARY_KEYS


@pytest.mark.slow
def test_demo_at_reduced_size_writes_the_report_and_summary(tmp_path):
    data, run = tmp_path / "synth.zarr", tmp_path / "run"
    overrides = [f"synth.out={data}", f"data.path={data}", "synth.n_lat=33", "synth.n_lon=64",
                 "synth.start=2020-07-27", "synth.end=2020-08-28T18:00",
                 "data.train_period=[2020-07-27,2020-07-31T18:00]",
                 "data.val_period=[2020-08-01,2020-08-04T18:00]", "data.test_period=[2020-08-09,2020-08-28T18:00]",
                 "model.dim=16", "model.depth=2", "model.heads=2", "model.mlp_hidden=32", f"train.out_dir={run}",
                 "train.steps=2", "train.grad_accum=1", "train.log_every=1", "train.val_every=0",
                 "train.ens_val_every=0", "train.ckpt_every=2", "diffusion.steps=2"]
    cmd = [sys.executable, "-m", "aeris.cli", "demo", "--serial", "--members", "2", "--skill-members", "2",
           "--lead-days", "1", "--val-inits", "1", "--out", str(run), *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for title in ("=== synthetic reanalysis", "=== ensemble forecasts of Hurricane Laura",
                  "=== ensemble forecasts from the validation period", "=== report and targets",
                  f"$ aeris report --run {run}"):
        assert title in out, title
    summary = json.loads((run / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert set(summary["stage_seconds"]) == {"synth", "stats", "prepare", "train", "skill", "forecast_laura",
                                             "forecast_validation", "evaluate", "track", "report"}
    assert summary["demo_seconds"] >= sum(summary["stage_seconds"].values()) - 1.0
    assert len(summary["held_out_inits"]) == 4 and summary["held_out_inits"][0].startswith("2020-08-01")
    assert summary["rmse_24h"] is not None and summary["persistence_24h"] > 0 and summary["climatology_24h"] > 0
    assert list(summary["spread_skill"]) == ["24"]
    assert not summary["targets"]["spread_skill"]["pass"]  # 1-day forecasts do not reach 120 h: a miss
    printed = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("PASS", "MISS"))]
    assert len(printed) == summary["targets_total"] and any(ln.startswith("MISS") for ln in printed)
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    assert all(f"\n## {s}\n" in md for s in REPORT_SECTIONS)
    assert page.count("data:image/png;base64,") >= 8 and f"Report: {run / 'report.html'}" in out
    stages = json.loads((run / "demo_stages.json").read_text())
    assert stages["stages"][-1]["key"] == "report" and stages["demo_seconds"] == summary["demo_seconds"]

"""The demo report end to end at reduced size: a tiny truth store, Laura-dated forecasts scored by
the real `aeris evaluate` pipeline, tracks verified by the real verification, a training log and
checkpoint record -> report.html, report.md and summary.json with every section and key; the
numbers checked against independent computations. A slow test renders the page in headless
Chromium and checks the screenshot is not blank."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aeris.config import load_config, to_dict
from aeris.data.stats import save_stats
from aeris.evaluate.cases import LAURA_INITS, LAURA_SID
from aeris.evaluate.contours import EARTH_RADIUS_KM
from aeris.evaluate.report import REPORT_SECTIONS, RunLayout, build_report, readme_figures, write_stages
from aeris.evaluate.skill import HEADLINE_CHANNELS, run_evaluation
from aeris.evaluate.summary import SUMMARY_KEYS, target_lines
from aeris.evaluate.track_pipeline import verify_and_plot_storm
from tests.support.stores import make_dataset, write

INITS = pd.DatetimeIndex(LAURA_INITS)
LEADS = pd.to_timedelta(np.arange(0, 73, 24), unit="h")  # 0 .. 72 h
CHANNELS = ["t2m", "msl", "z500"]                         # scored: few, to keep the test small
OFFSETS = (0.4, -0.2, 0.1, -0.5)                          # member m = truth + OFFSETS[m] * std
STD = {"t2m": 10.0, "u10": 5.0, "v10": 5.0, "msl": 1000.0, "z500": 3000.0, "z850": 3000.0,
       "t500": 10.0, "t850": 10.0}
KM_PER_DEG = np.radians(1.0) * EARTH_RADIUS_KM
SHIFT_KM = (50.0, 120.0, 80.0, 30.0)                      # members' track offsets north of the best track


def _best() -> pd.DataFrame:
    t = pd.date_range("2020-08-20", "2020-08-28T18", freq="6h")
    k = np.arange(t.size)
    return pd.DataFrame({"sid": LAURA_SID, "name": "LAURA", "time": t, "lat": 14.0 + 0.6 * k,
                         "lon": (312.0 - 1.2 * k) % 360, "wind_kt": 40.0 + 2.0 * k, "msl_hpa": 1005.0 - 1.5 * k,
                         "basin": "NA"})


def _tracks(best: pd.DataFrame) -> pd.DataFrame:
    """Members of the 08-25 init follow the storm for 72 h shifted north by SHIFT_KM; the other
    inits' members lose it after 24 h (so they track < 48 h)."""
    rows = []
    for init in INITS:
        hours = 72 if init == INITS[-1] else 24
        b = best[(best.time >= init) & (best.time <= init + pd.Timedelta(hours=hours))]
        for m, km in enumerate(SHIFT_KM):
            rows.append(pd.DataFrame({"track_id": len(rows), "init": init, "member": m, "time": b.time.values,
                                      "lead_h": (b.time - init) / pd.Timedelta("1h"),
                                      "lat": b.lat + km / KM_PER_DEG, "lon": b.lon.values,
                                      "msl": 100.0 * b.msl_hpa + 500.0, "wind": 20.0}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    truth = make_dataset(n_lat=9, n_lon=16, n_time=48, start="2020-08-20", levels=(500, 850))
    write(truth, tmp / "truth.zarr")
    names = sorted(STD)
    save_stats(xr.Dataset({k: ("channel", np.array([STD[c] for c in names])) for k in ("mean", "std", "diff_mean",
                                                                                     "diff_std")}
                          | {"kind": ("channel", np.array(["surface"] * len(names)))}, coords={"channel": names}),
               tmp / "truth.zarr.stats.nc")
    run = tmp / "run"
    fc = []
    for lead in LEADS:
        fc.append(truth.drop_vars(["geopotential_at_surface", "land_sea_mask", "toa_incident_solar_radiation"])
                  .sel(time=INITS + lead).assign_coords(time=INITS))
    fc = xr.concat(fc, dim=pd.Index(LEADS, name="prediction_timedelta"))
    scale = {"2m_temperature": 10.0, "10m_u_component_of_wind": 5.0, "10m_v_component_of_wind": 5.0,
             "mean_sea_level_pressure": 1000.0, "geopotential": 3000.0, "temperature": 10.0}
    members = []
    for off in OFFSETS:
        grow = xr.DataArray(np.minimum(LEADS / pd.Timedelta("24h"), 1.0), dims=["prediction_timedelta"],
                            coords={"prediction_timedelta": LEADS})
        members.append(fc.map(lambda v: v + off * scale[v.name] * grow))
    fc = xr.concat(members, dim=pd.Index(np.arange(len(OFFSETS)), name="number"))
    fc.transpose("time", "prediction_timedelta", "number", ...).to_zarr(run / "laura_forecast.zarr")
    run_evaluation(run / "laura_forecast.zarr", tmp / "truth.zarr", run / "scores", CHANNELS,
                   climatology_period=("2020-08-20", "2020-08-21"), ssr_correction=True, plots=False,
                   progress=False, log=lambda s: None)
    best = _best()
    verify_and_plot_storm(_tracks(best), best, run / "tracks" / LAURA_SID / "laura_forecast", n_members=4,
                          plots=False)
    (run / "tracks" / "detection_era5_synth.json").write_text(json.dumps(
        {"pod": 0.75, "far": 0.0, "n_observed": 4, "n_detected": 3, "n_hits": 3, "n_false_alarms": 0}))
    cfg = load_config("demo", [f"data.path={tmp / 'truth.zarr'}", f"train.out_dir={run}"])
    ck = run / "checkpoints" / "step_00000002"
    ck.mkdir(parents=True)
    old = to_dict(cfg)
    old["model"]["retired_option"] = 1  # a checkpoint of an older version: a key this one dropped
    (ck / "run.json").write_text(json.dumps({"step": 2, "samples_seen": 4, "config": json.dumps(old),
                                             "mesh": [1, 2, 1, 1, 2], "meta": {"grid": [8, 16],
                                                                               "channels": ["t2m"] * 8}}))
    recs = [{"step": s, "loss": 10.0 / s, "samples_per_s": 2.0 + s, "seconds": 0.5, "tflops": 0.01, "mfu": 0.02}
            for s in (1, 2, 3)]
    recs[-1].update(val_loss=2.5, ens_rmse_ens_mean=0.3, ens_rmse_member0=0.4, ens_rmse_persistence=0.35,
                    ens_spread_skill=0.9)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_stages(run / "demo_stages.json", [{"key": "train", "title": "train", "command": "aeris train --config demo",
                                             "seconds": 12.0}], demo_seconds=100.0)
    out = build_report(RunLayout(run), log=lambda s: None)
    return {"run": run, "out": out, "truth": truth}


def test_report_and_summary_have_every_section_and_key(tiny_run):
    run, out = tiny_run["run"], tiny_run["out"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary) and summary == json.loads(json.dumps(out["summary"]))
    assert summary["stage_seconds"] == {"train": 12.0} and summary["demo_seconds"] == 100.0
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for section in REPORT_SECTIONS:
        assert f"\n## {section}\n" in md, section
        assert f">{section}</h2>" in page.replace("&#x27;", "'"), section
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(images) >= 9 and all((run / p).is_file() and (run / p).stat().st_size > 5000 for p in images)
    assert page.count("data:image/png;base64,") == len(images)  # every figure embedded, nothing linked
    assert 'src="report_files' not in page
    for name in ("laura_tracks.png", "headline.png", "training.png", "spread_skill.png", "crps.png"):
        assert (run / "report_files" / name).exists(), name
    assert "aeris train --config demo" in md and "dp1 x pp2 x wy1 x wx1 x sp2 (4 ranks)" in md
    assert "| era5_synth | 0.75 | 0.00 | 4 | 3 | 3 | 0 |" in md
    assert "config keys unknown to this version left out" in md and "retired_option" in md


def test_summary_numbers_match_independent_computations(tiny_run):
    s, truth = tiny_run["out"]["summary"], tiny_run["truth"]
    scored = [c for c in HEADLINE_CHANNELS if c in CHANNELS]
    assert s["headline_channels"] == scored
    # member m = truth + OFFSETS[m] x scale, the scale being the std of the statistics: at 24 h and
    # beyond the standardised ensemble-mean error is |mean offset| on every channel
    assert s["rmse_24h"] == pytest.approx(abs(np.mean(OFFSETS)), rel=1e-5)
    assert s["rmse_72h"] == pytest.approx(abs(np.mean(OFFSETS)), rel=1e-5)
    # persistence at 24 h, by hand: mean over channels of the lat-weighted RMSE / std
    lat = truth.latitude.values[1:-1]
    w = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    fields = {"t2m": truth["2m_temperature"], "u10": truth["10m_u_component_of_wind"],
              "v10": truth["10m_v_component_of_wind"], "msl": truth["mean_sea_level_pressure"],
              "z500": truth["geopotential"].sel(level=500), "t850": truth["temperature"].sel(level=850)}
    per = []
    for c in scored:
        x = fields[c].values.astype(np.float64)[:, 1:-1]
        t = pd.DatetimeIndex(truth.time.values)
        mse = [((x[t.get_loc(i + pd.Timedelta("24h"))] - x[t.get_loc(i)]) ** 2 * w[:, None]).mean() for i in INITS]
        per.append(np.sqrt(np.mean(mse)) / STD[c])
    assert s["persistence_24h"] == pytest.approx(np.mean(per), rel=1e-5)
    # spread/skill (x sqrt(5/4)): std(OFFSETS, ddof=1) / |mean(OFFSETS)| x sqrt(5/4) at every lead >= 24 h
    want = np.std(OFFSETS, ddof=1) / abs(np.mean(OFFSETS)) * np.sqrt(5 / 4)
    assert list(s["spread_skill"]) == [f"{h}" for h in range(24, 73, 24)]
    assert all(v == pytest.approx(want, rel=1e-5) for v in s["spread_skill"].values())
    assert not s["targets"]["spread_skill"]["pass"]  # out of the band, and the leads stop at 72 h
    # Laura: all 4 members of 08-25 track it for 72 h; their mean error over 0-48 h is the mean shift
    assert s["laura_members_tracked_48h"] == 4
    assert s["laura_mean_error_km_48h"] == pytest.approx(np.mean(SHIFT_KM), rel=1e-3)
    assert s["targets"]["laura_tracks"]["pass"] and s["targets"]["demo_seconds"]["pass"]
    lines = target_lines(s)
    assert len(lines) == 5 and sum(ln.startswith("MISS") for ln in lines) == 5 - s["targets_met"]


def test_readme_figures_are_small(tiny_run, tmp_path):
    paths = readme_figures(RunLayout(tiny_run["run"]), tmp_path / "img")
    assert [p.name for p in paths] == ["demo_skill.png", "demo_laura.png"]
    assert sum(p.stat().st_size for p in paths) < 400_000


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    from PIL import Image
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", (tiny_run["run"] / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2400, 1200)
    assert img.std() > 20 and (img < 128).mean() > 0.01  # text, tables and figures, not a blank page
    top = img[:300]
    assert (top < 128).mean() > 0.005  # the title and the section links are drawn at the top

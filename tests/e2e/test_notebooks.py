"""The track notebooks execute top to bottom (nbclient) on small stores made here, and show
their figures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from tests.support.tracks import forecast_store, truth_store

from aeris.evaluate.besttrack import load_ibtracs, select_storms
from tests.support import REPO

NOTEBOOKS = REPO / "notebooks"
LAURA = "2020233N14313"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    laura = select_storms(load_ibtracs(), sid=LAURA)
    laura = laura[(laura.time >= "2020-08-20") & (laura.time <= "2020-08-28")].reset_index(drop=True)
    pos = laura.set_index("time")[["lat", "lon"]]
    truth = truth_store(laura.time, lambda k: [dict(lat=laura.lat[k], lon=laura.lon[k], vmax=25.0)])
    inits = pd.to_datetime(["2020-08-21", "2020-08-23", "2020-08-25"])

    def storms(i, m, k):
        p = pos.loc[inits[i] + pd.Timedelta(hours=6 * k)]
        return [dict(lat=p.lat + 1.5 * m * k / 8, lon=p.lon - 1.0 * m * k / 8, vmax=20.0)]

    fc = forecast_store(inits, 9, 2, storms).drop_vars("geopotential_at_surface")
    truth.to_zarr(tmp / "truth.zarr")
    # the implanted-storm table a synthetic store carries (aeris.data.synthetic.storm_truth_path)
    laura[["sid", "name", "time", "lat", "lon", "msl_hpa", "wind_kt", "basin"]].to_csv(
        tmp / "truth.storms.csv", index=False)
    fc.to_zarr(tmp / "fc.zarr")
    return tmp


def run_notebook(name: str, env: dict, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebooks_are_clean_and_generated():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    assert sorted(make.NOTEBOOKS) == ["hurricane_laura.ipynb", "storm_season.ipynb"]
    for name, cells in make.NOTEBOOKS.items():
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name
        assert "AERIS_TRUTH_STORE" in nb.cells[1].source
        # the committed notebook is what make_notebooks.py writes (edit that, then regenerate)
        built = make.build(cells, name)
        assert [(c.id, c.cell_type, c.source) for c in nb.cells] == \
            [(c.id, c.cell_type, c.source) for c in built.cells], name


def test_hurricane_laura_notebook_runs(stores, tmp_path):
    out = tmp_path / "laura"
    nb = run_notebook("hurricane_laura.ipynb", {"AERIS_TRUTH_STORE": str(stores / "truth.zarr"),
                                                "AERIS_FORECAST_STORE": str(stores / "fc.zarr"),
                                                "AERIS_OUT": str(out)}, tmp_path)
    assert images(nb) == 4
    for f in ("track_map.png", "intensity.png", "errors_by_lead.png", "strike_probability.png"):
        assert (out / f).stat().st_size > 10_000
    by = pd.read_csv(out / "by_lead.csv")
    assert len(by) == 9 and np.all(by.frac_tracking == 1.0)
    assert by.pos_err_km.iloc[0] < 170        # member 0 follows the best track (2-degree grid)
    ens = pd.read_csv(out / "ensemble_errors.csv", parse_dates=["init"])
    assert sorted(ens.init.unique()) == list(pd.to_datetime(["2020-08-21", "2020-08-23", "2020-08-25"]))


def test_storm_season_notebook_runs(stores, tmp_path):
    out = tmp_path / "season"
    nb = run_notebook("storm_season.ipynb", {"AERIS_TRUTH_STORE": str(stores / "truth.zarr"),
                                             "AERIS_OUT": str(out), "AERIS_BASINS": "NA"}, tmp_path)
    assert images(nb) == 1 and (out / "season_tracks.png").stat().st_size > 10_000
    scores = pd.read_csv(out / "pod_far.csv", index_col=0)
    # only Laura is in the store: detected, no false alarm; other NA storms of the period are missed
    assert scores.loc["relaxed", "n_detected"] == 1 and scores.loc["relaxed", "far"] == 0.0
    pairs = pd.read_csv(out / "pairs_relaxed.csv")
    assert pairs.sid.tolist() == [LAURA]
    # the implanted storms (the store's truth table): Laura lasts >= 24 h at >= 34 kt, found
    implanted = pd.read_csv(out / "pod_far_implanted.csv", index_col=0)
    assert implanted.loc["relaxed", "n_observed"] == 1 and implanted.loc["relaxed", "pod"] == 1.0
    assert implanted.loc["relaxed", "far"] == 0.0

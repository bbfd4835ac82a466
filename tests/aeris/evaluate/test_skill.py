"""evaluate(): known forecasts with known scores, valid-time alignment, grid handling, errors, outputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aeris.evaluate import metrics as M
from aeris.evaluate.skill import (EvaluationError, climatology_for, common_grid, default_channels, evaluate,
                                  evaluate_spectra, headline_scores, open_forecasts, scores_to_json,
                                  scores_to_markdown, write_scores)

LAT = np.linspace(90, -90, 9)  # pole-inclusive, descending
LON = np.arange(16) * 22.5
LEVELS = [500, 850]
TIMES = pd.date_range("2020-08-01", "2020-08-06T18", freq="6h")
LEADS = pd.to_timedelta([0, 6, 12, 24], unit="h")
INITS = TIMES[[0, 2, 5]]


def make_truth(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    nt = TIMES.size
    return xr.Dataset(
        {"2m_temperature": (("time", "latitude", "longitude"), 280 + rng.normal(size=(nt, 9, 16))),
         "geopotential": (("time", "level", "latitude", "longitude"), rng.normal(size=(nt, 2, 9, 16)) * 100),
         "temperature": (("time", "level", "latitude", "longitude"), 250 + rng.normal(size=(nt, 2, 9, 16)))},
        coords={"time": TIMES, "level": LEVELS, "latitude": LAT, "longitude": LON})


def make_forecast(truth: xr.Dataset, offsets=(0.0,), source_lead: bool = True) -> xr.Dataset:
    """member m at (init, lead) = truth(init + lead) + offsets[m]; source_lead=False uses truth(init)
    (persistence), i.e. a forecast misaligned on valid time."""
    fields = []
    for lead in LEADS:
        src = INITS + lead if source_lead else INITS
        fields.append(truth.sel(time=src).assign_coords(time=INITS))
    fc = xr.concat(fields, dim=pd.Index(LEADS, name="prediction_timedelta"))
    fc = xr.concat([fc + c for c in offsets], dim=pd.Index(np.arange(len(offsets)), name="number"))
    return fc.transpose("time", "prediction_timedelta", "number", ...)


def test_forecast_equal_truth_plus_constant():
    truth = make_truth()
    c = -1.5
    scores = evaluate(make_forecast(truth, offsets=(c, c, c)), truth, ["t2m", "z500", "t850"], progress=False)
    assert dict(scores.sizes) == {"channel": 3, "prediction_timedelta": len(LEADS)}
    for k in ("rmse_member0", "rmse_ensmean", "crps_fair", "crps_ecdf"):
        np.testing.assert_allclose(scores[k].values, abs(c), rtol=1e-10, err_msg=k)
    np.testing.assert_allclose(scores["spread"].values, 0.0, atol=1e-10)
    assert np.all(np.isnan(scores["acc"].values))  # no climatology given
    assert scores.lead_hours.values.tolist() == [0, 6, 12, 24]
    assert scores.level.values[1] == 500 and np.isnan(scores.level.values[0])
    assert scores.attrs["n_members"] == 3 and scores.attrs["n_inits"] == 3


def test_member_offsets_give_known_ensemble_scores():
    truth = make_truth()
    c = np.array([-1.0, 0.5, 2.0, 3.5])
    scores = evaluate(make_forecast(truth, offsets=tuple(c)), truth, ["z850"], progress=False)
    fair = np.abs(c).mean() - np.abs(c[:, None] - c[None, :]).sum() / (2 * 4 * 3)
    ecdf = np.abs(c).mean() - np.abs(c[:, None] - c[None, :]).sum() / (2 * 16)
    np.testing.assert_allclose(scores["rmse_member0"].values, 1.0)
    np.testing.assert_allclose(scores["rmse_ensmean"].values, abs(c.mean()))
    np.testing.assert_allclose(scores["crps_fair"].values, fair)
    np.testing.assert_allclose(scores["crps_ecdf"].values, ecdf)
    np.testing.assert_allclose(scores["spread"].values, c.std(ddof=1))
    np.testing.assert_allclose(scores["ssr"].values, c.std(ddof=1) / abs(c.mean()))
    corrected = evaluate(make_forecast(truth, offsets=tuple(c)), truth, ["z850"], ssr_correction=True,
                         progress=False)
    np.testing.assert_allclose(corrected["ssr"].values, scores["ssr"].values * np.sqrt(5 / 4))


def test_alignment_on_valid_time():
    truth = make_truth()
    aligned = evaluate(make_forecast(truth), truth, ["t2m"], progress=False)
    np.testing.assert_allclose(aligned["rmse_member0"].values, 0.0, atol=1e-12)
    persistence = evaluate(make_forecast(truth, source_lead=False), truth, ["t2m"], progress=False)
    got = persistence["rmse_member0"].values[0]
    assert got[0] == pytest.approx(0.0, abs=1e-12)  # lead 0: persistence is the truth
    # independent: numpy over the non-pole rows with cos weights normalised to mean 1
    t2m = truth["2m_temperature"]
    w = np.cos(np.deg2rad(LAT[1:-1]))
    w = w / w.mean()
    for j, lead in enumerate(LEADS):
        err = t2m.sel(time=INITS).values - t2m.sel(time=INITS + lead).values
        ref = np.sqrt(np.mean([(w[:, None] * e[1:-1] ** 2).mean() for e in err]))
        assert got[j] == pytest.approx(ref, rel=1e-10)
    assert np.all(got[1:] > 0.5)


def test_acc_with_climatology():
    truth = make_truth()
    clim = M.compute_climatology(truth, ("2020-08-01", "2020-08-06"), window_days=3)
    fc = make_forecast(truth, offsets=(0.0, 0.0))
    scores = evaluate(fc, truth, ["t2m", "z500"], climatology=clim, progress=False)
    np.testing.assert_allclose(scores["acc"].values, 1.0, rtol=1e-6)
    # negated anomalies about the climatology of each valid time -> -1
    anti = []
    for lead in LEADS:
        c = M.climatology_at(clim, xr.DataArray((INITS + lead).values, dims=["time"],
                                                coords={"time": INITS}))
        anti.append(2 * c - truth.sel(time=INITS + lead).assign_coords(time=INITS))
    neg = xr.concat(anti, dim=pd.Index(LEADS, name="prediction_timedelta")).expand_dims(number=[0])
    neg_scores = evaluate(neg, truth, ["t2m"], climatology=clim, progress=False)
    np.testing.assert_allclose(neg_scores["acc"].values, -1.0, rtol=1e-6)


def _weighted(x: np.ndarray) -> float:
    """Reference area-weighted mean over the non-pole rows of LAT (independent of metrics.py)."""
    w = np.cos(np.deg2rad(LAT[1:-1]))
    return float((x[..., 1:-1, :] * (w / w.mean())[:, None]).mean())


def test_persistence_and_climatology_baselines_by_hand():
    truth = make_truth()
    clim = M.compute_climatology(truth, ("2020-08-01", "2020-08-06"), kind="hour")
    scores = evaluate(make_forecast(truth, offsets=(0.5, -1.0)), truth, ["t2m", "z850"], climatology=clim,
                      progress=False)
    assert scores.attrs["climatology_kind"] == "hour" and scores.attrs["baselines"] == "persistence, climatology"
    t = truth["2m_temperature"].values
    idx = {pd.Timestamp(x): i for i, x in enumerate(TIMES)}
    hours = TIMES.hour.values
    by_hour = {h: t[hours == h].mean(0) for h in np.unique(hours)}
    for j, lead in enumerate(LEADS):
        y = np.stack([t[idx[i + lead]] for i in INITS])
        p = np.stack([t[idx[i]] for i in INITS])
        c = np.stack([by_hour[(i + lead).hour] for i in INITS])
        got = scores.sel(channel="t2m").isel(prediction_timedelta=j)
        assert float(got["rmse_persistence"]) == pytest.approx(np.sqrt(np.mean([_weighted((p[k] - y[k]) ** 2)
                                                                                for k in range(3)])), rel=1e-6)
        assert float(got["crps_persistence"]) == pytest.approx(np.mean([_weighted(np.abs(p[k] - y[k]))
                                                                        for k in range(3)]), rel=1e-6)
        assert float(got["rmse_climatology"]) == pytest.approx(np.sqrt(np.mean([_weighted((c[k] - y[k]) ** 2)
                                                                                for k in range(3)])), rel=1e-5)
        assert float(got["crps_climatology"]) == pytest.approx(np.mean([_weighted(np.abs(c[k] - y[k]))
                                                                        for k in range(3)]), rel=1e-5)
    # persistence is perfect at lead 0, with ACC 1 there
    assert float(scores["rmse_persistence"].isel(prediction_timedelta=0).max()) == 0.0
    np.testing.assert_allclose(scores["acc_persistence"].isel(prediction_timedelta=0).values, 1.0, rtol=1e-6)
    assert np.all(np.abs(scores["acc_persistence"].values) <= 1 + 1e-9)
    # without a climatology: persistence only; with baselines off: none
    bare = evaluate(make_forecast(truth), truth, ["t2m"], progress=False)
    assert np.isfinite(bare["rmse_persistence"].values).all() and np.isnan(bare["rmse_climatology"].values).all()
    off = evaluate(make_forecast(truth), truth, ["t2m"], climatology=clim, baselines=False, progress=False)
    assert np.isnan(off["rmse_persistence"].values).all() and np.isnan(off["crps_climatology"].values).all()
    assert np.isfinite(off["acc"].values).all()
    # persistence needs the init times in the truth
    with pytest.raises(EvaluationError, match="init and valid times"):
        evaluate(make_forecast(truth), truth.drop_sel(time=INITS[:1]), ["t2m"], progress=False)


def test_lead_zero_spread_skill_is_nan_not_zero():
    truth = make_truth()
    fc = make_forecast(truth, offsets=(0.0, 0.0, 0.0))
    fc.loc[{"prediction_timedelta": LEADS[1:]}] = fc.sel(prediction_timedelta=LEADS[1:]) + 2.0
    fc.loc[{"prediction_timedelta": LEADS[:1]}] = fc.sel(prediction_timedelta=LEADS[:1]) + 1e-7  # rounding
    scores = evaluate(fc, truth, ["t2m", "z500"], progress=False)
    assert np.isnan(scores["ssr"].isel(prediction_timedelta=0).values).all()
    np.testing.assert_allclose(scores["spread"].isel(prediction_timedelta=0).values, 0.0, atol=1e-9)
    np.testing.assert_allclose(scores["ssr"].isel(prediction_timedelta=slice(1, None)).values, 0.0,
                               atol=1e-9)  # a collapsed ensemble after lead 0 is under-dispersive: 0
    assert scores_to_json(scores)["scores"]["t2m"]["ssr"][0] is None
    assert "| t2m | 1 | — | 0 |" in scores_to_markdown(scores)
    # a lead-0 ensemble with spread (perturbed initial conditions) keeps its ratio
    pert = make_forecast(truth, offsets=(-1.0, 2.0))
    ssr0 = evaluate(pert, truth, ["t2m"], progress=False)["ssr"].isel(channel=0, prediction_timedelta=0)
    assert float(ssr0) == pytest.approx(np.std([-1.0, 2.0], ddof=1) / 0.5)


def test_several_forecast_stores_are_one_set_of_inits(tmp_path):
    truth = make_truth()
    fc = make_forecast(truth, offsets=(0.5, -1.5))
    for k, sl in enumerate((slice(0, 1), slice(1, 3))):
        fc.isel(time=sl).to_zarr(tmp_path / f"fc{k}.zarr")
    both = open_forecasts([tmp_path / "fc1.zarr", tmp_path / "fc0.zarr"])
    assert pd.DatetimeIndex(both.time.values).equals(pd.DatetimeIndex(INITS))
    whole = evaluate(fc, truth, ["t2m", "z500"], progress=False)
    joined = evaluate(both, truth, ["t2m", "z500"], progress=False)
    for k in ("rmse_ensmean", "crps_fair", "rmse_persistence"):
        np.testing.assert_allclose(joined[k].values, whole[k].values, rtol=1e-12)
    fc.isel(time=slice(1, 3), number=slice(0, 1)).to_zarr(tmp_path / "one_member.zarr")
    with pytest.raises(EvaluationError, match="differ in 'number'"):
        open_forecasts([tmp_path / "fc0.zarr", tmp_path / "one_member.zarr"])
    with pytest.raises(EvaluationError, match="share init times"):
        open_forecasts([tmp_path / "fc0.zarr", tmp_path / "fc0.zarr"])


def test_climatology_for_chooses_the_kind_and_states_the_period():
    truth = make_truth()
    valid = (INITS.values[:, None] + LEADS.values[None, :]).ravel()
    clim = climatology_for(truth, ["t2m", "z500"], valid, ("2020-08-01", "2020-08-03"))
    assert clim.attrs["climatology_kind"] == "hour"  # one year: not enough for day of year
    assert clim.attrs["climatology_requested_period"] == "2020-08-01 .. 2020-08-03"
    assert "in-sample" in clim.attrs["climatology_note"]
    assert sorted(clim.data_vars) == ["2m_temperature", "geopotential"]
    doy = climatology_for(truth, ["t2m"], valid, None, kind="doy_hour", window_days=3)
    assert doy.attrs["climatology_kind"] == "doy_hour" and doy.attrs["climatology_window_days"] == 3
    assert doy.attrs["climatology_requested_period"] == "the whole truth store"
    with pytest.raises(EvaluationError, match="kind"):
        climatology_for(truth, ["t2m"], valid, None, kind="weekly")
    with pytest.raises(EvaluationError, match="no truth times in period"):
        climatology_for(truth, ["t2m"], valid, ("2021-01-01", "2021-01-02"))


def test_headline_is_the_mean_of_standardised_scores():
    truth = make_truth()
    scores = evaluate(make_forecast(truth, offsets=(1.0, -3.0)), truth, ["t2m", "z500", "t850"],
                      progress=False)
    std = {"t2m": 2.0, "z500": 100.0, "t850": 4.0}
    head = headline_scores(scores, std)
    for k in ("rmse_ensmean", "rmse_persistence", "crps_fair", "spread"):
        want = np.mean([scores[k].sel(channel=c).values / s for c, s in std.items()], axis=0)
        np.testing.assert_allclose(head[k].values, want, rtol=1e-12)
    np.testing.assert_allclose(head["ssr"].values, scores["ssr"].mean("channel").values, rtol=1e-12)
    assert head.attrs["channels"] == "t2m, z500, t850"
    with pytest.raises(EvaluationError, match="standard deviation"):
        headline_scores(scores, {"t2m": 2.0, "z500": 0.0, "t850": 1.0})
    md = scores_to_markdown(scores, headline=head)
    assert "## Headline" in md and "| 24 h |" in md
    assert scores_to_json(scores, head)["headline"]["rmse_ensmean"] == pytest.approx(head["rmse_ensmean"].values)


def test_polar_row_dropped_or_nan_padded_gives_same_scores():
    truth = make_truth()
    fc = make_forecast(truth, offsets=(0.3, -0.2)) + xr.DataArray(
        np.random.default_rng(1).normal(size=(9, 16)), dims=["latitude", "longitude"])
    full = evaluate(fc, truth, ["t2m", "t500"], progress=False)
    dropped = evaluate(fc.isel(latitude=slice(0, 8)), truth, ["t2m", "t500"], progress=False)
    nan_pole = fc.copy(deep=True)
    nan_pole["2m_temperature"][..., -1, :] = np.nan
    padded = evaluate(nan_pole, truth, ["t2m", "t500"], progress=False)
    for k in ("rmse_member0", "crps_fair", "ssr"):
        np.testing.assert_allclose(dropped[k].values, full[k].values, rtol=1e-12)
        np.testing.assert_allclose(padded[k].values, full[k].values, rtol=1e-12)
    # latitude ascending in the forecast is the same grid
    lat, lon = common_grid(fc.sortby("latitude"), truth)
    np.testing.assert_allclose(lat, LAT[1:-1])


def test_default_channels_and_skipped():
    truth = make_truth()
    fc = make_forecast(truth)
    present, skipped = default_channels(fc, truth)
    assert present == ["t2m", "z500", "t850"]
    assert "q700" in skipped and "msl" in skipped and "u850" in skipped
    scores = evaluate(fc, truth, progress=False)
    assert scores.channel.values.tolist() == present
    assert "q700" in scores.attrs["skipped_channels"]


def test_errors_name_what_is_wrong():
    truth = make_truth()
    fc = make_forecast(truth)
    with pytest.raises(EvaluationError, match="longitude grids differ"):
        evaluate(fc.assign_coords(longitude=LON + 1.0), truth, ["t2m"], progress=False)
    with pytest.raises(EvaluationError, match="latitude grids differ"):
        evaluate(fc.assign_coords(latitude=np.linspace(89, -89, 9)), truth, ["t2m"], progress=False)
    with pytest.raises(EvaluationError, match="latitude grids differ"):
        evaluate(fc.isel(latitude=slice(0, 7)), truth, ["t2m"], progress=False)
    with pytest.raises(EvaluationError, match="'2m_temperature' is not in the truth store"):
        evaluate(fc, truth.drop_vars("2m_temperature"), ["t2m"], progress=False)
    with pytest.raises(EvaluationError, match="level 700 hPa is not in the forecast store"):
        evaluate(fc, truth, ["t700"], progress=False)
    with pytest.raises(EvaluationError, match="cannot parse channel"):
        evaluate(fc, truth, ["bogus1"], progress=False)
    with pytest.raises(EvaluationError, match=r"valid times .* missing from the truth store.*2020-08-03T06:00:00.*1 of 9"):
        evaluate(fc, truth.sel(time=slice(None, "2020-08-02T18")), ["t2m"], progress=False)
    with pytest.raises(EvaluationError, match="prediction_timedelta"):
        evaluate(fc.isel(prediction_timedelta=0, drop=True), truth, ["t2m"], progress=False)


def test_deterministic_forecast_without_members():
    truth = make_truth()
    fc = make_forecast(truth, offsets=(2.0,)).isel(number=0, drop=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        scores = evaluate(fc, truth, ["t2m"], progress=False)
    assert any("no ensemble dim" in str(x.message) for x in w)
    np.testing.assert_allclose(scores["rmse_member0"].values, 2.0)
    np.testing.assert_allclose(scores["crps_ecdf"].values, 2.0)  # CRPS of a point forecast = MAE
    assert np.all(np.isnan(scores["crps_fair"].values)) and np.all(np.isnan(scores["ssr"].values))


def test_spectra_of_perfect_forecast_match_truth():
    truth = make_truth()
    spec = evaluate_spectra(make_forecast(truth, offsets=(0.0, 1.0)), truth, ["t2m", "z500"])
    assert spec["forecast_power"].dims == ("channel", "prediction_timedelta", "zonal_wavenumber")
    assert spec.sizes["prediction_timedelta"] == 3  # non-zero leads only
    np.testing.assert_allclose(spec["forecast_power"].values, spec["truth_power"].values, rtol=1e-12)
    # Parseval through the pipeline: total power = mean square of the truth on the scored rows
    t2m = truth["2m_temperature"].sel(time=INITS + LEADS[1]).isel(latitude=slice(1, -1))
    assert float(spec["truth_power"].sel(channel="t2m").isel(prediction_timedelta=0).sum()) == pytest.approx(
        float((t2m ** 2).mean()), rel=1e-12)


def test_write_scores_outputs(tmp_path):
    truth = make_truth()
    c = np.array([-1.0, 2.0])
    scores = evaluate(make_forecast(truth, offsets=tuple(c)), truth, ["t2m", "z500"], progress=False)
    paths = write_scores(scores, tmp_path / "out")
    back = xr.open_dataset(paths["netcdf"])
    np.testing.assert_allclose(back["crps_fair"].values, scores["crps_fair"].values)
    assert back.channel.values.tolist() == ["t2m", "z500"]
    back.close()
    js = json.loads(paths["json"].read_text())
    assert js["lead_hours"] == [0, 6, 12, 24]
    assert js["scores"]["z500"]["rmse_member0"] == pytest.approx([1.0] * 4)
    assert js["scores"]["t2m"]["acc"] == [None] * 4  # NaN -> null
    md = paths["markdown"].read_text()
    assert "## rmse_ensmean" in md and "| z500 | m**2 s**-2 |" in md and "## acc" not in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp left
    short = scores_to_markdown(scores, max_columns=2)  # first and last lead only
    assert "| channel | units | 0 h | 24 h |" in short and "| 6 h |" not in short


def test_cli_end_to_end_on_zarr_stores(tmp_path, capsys):
    from aeris.cli import main
    truth = make_truth()
    truth["2m_temperature"].attrs["units"] = "K"
    fc = make_forecast(truth, offsets=(0.5, -0.5, 1.0)).isel(latitude=slice(0, 8))  # polar row dropped
    truth.to_zarr(tmp_path / "truth.zarr")
    fc.to_zarr(tmp_path / "fc.zarr")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--forecast", str(tmp_path / "fc.zarr"), "--truth", str(tmp_path / "truth.zarr"),
               "--out", str(out), "--climatology-period", "2020-08-01", "2020-08-06",
               "--climatology-window", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipping headline channels not in both stores: u10, v10, msl, q700, u850, v850" in printed
    for name in ("scores.nc", "scores.json", "scores.md", "spectra.nc", "skill.png", "spectra.png"):
        assert (out / name).stat().st_size > 0, name
    import matplotlib.pyplot as plt
    img = plt.imread(out / "skill.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600  # 4 rows x 3 channel panels
    js = json.loads((out / "scores.json").read_text())
    assert js["channels"] == ["t2m", "z500", "t850"]
    assert js["scores"]["t850"]["rmse_member0"] == pytest.approx([0.5] * 4)
    assert js["scores"]["t2m"]["rmse_ensmean"] == pytest.approx([1 / 3] * 4)
    assert all(-1 <= a <= 1 for a in js["scores"]["z500"]["acc"])
    # the baselines beside the model, the climatology's period and kind recorded
    assert js["scores"]["t2m"]["rmse_persistence"][0] == 0.0 and js["scores"]["t2m"]["rmse_persistence"][1] > 0
    assert all(v > 0 for v in js["scores"]["z500"]["crps_climatology"])
    assert js["attrs"]["climatology_kind"] == "hour" and js["attrs"]["climatology"].startswith("2020-08-01")
    assert "headline" not in js  # no statistics beside the truth store
    assert "## rmse_persistence" in (out / "scores.md").read_text()
    # with statistics: the headline, standardised by each channel's std
    from aeris.data.stats import save_stats
    names = ["t2m", "z500", "t850"]
    stats = xr.Dataset({k: ("channel", np.array([2.0, 100.0, 4.0])) for k in ("mean", "std", "diff_mean", "diff_std")}
                       | {"kind": ("channel", np.array(["surface", "atmospheric", "atmospheric"]))},
                       coords={"channel": names})
    save_stats(stats, tmp_path / "truth.zarr.stats.nc")
    rc = main(["evaluate", "--forecast", str(tmp_path / "fc.zarr"), "--truth", str(tmp_path / "truth.zarr"),
               "--out", str(out), "--climatology-period", "2020-08-01", "2020-08-06", "--no-plots"])
    assert rc == 0
    head = json.loads((out / "scores.json").read_text())["headline"]
    assert head["channels"] == names
    want = np.mean([np.array(js["scores"][c]["rmse_ensmean"]) / s for c, s in zip(names, (2.0, 100.0, 4.0))], 0)
    assert head["rmse_ensmean"] == pytest.approx(want.tolist())
    assert "## Headline" in capsys.readouterr().out
    # asking for a channel one store lacks is an error naming it
    rc = main(["evaluate", "--forecast", str(tmp_path / "fc.zarr"), "--truth", str(tmp_path / "truth.zarr"),
               "--out", str(out), "--channels", "z500,u850", "--no-plots"])
    assert rc == 1
    assert "u_component_of_wind" in capsys.readouterr().err

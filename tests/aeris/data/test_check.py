"""`aeris data check`: a fuzz set of malformed stores, each a precise finding or a clear error; the
loader's own checks (bad samples, skip, excluded times)."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from aeris.cli.data_check import add_subcommand
from aeris.data.check import FLIP_RATIO, check_store, exclude_mask
from aeris.data.config import DataConfig
from aeris.data.dataset import ForecastDataset
from aeris.data.prepared import prepare
from aeris.data.store import DataError
from swipe.layout import WindowLayout
from tests.support.stores import make_dataset, write

T = pd.date_range("2020-08-01", periods=16, freq="6h")


def _iso(i: int) -> str:
    return T[i].strftime("%Y-%m-%dT%H:%M")


def _clean(n_time: int = 8, **kw) -> xr.Dataset:
    """make_dataset with the land-sea mask inside [0, 1] (its noise leaves it otherwise)."""
    ds = make_dataset(n_time=n_time, **kw)
    if "land_sea_mask" in ds:
        ds["land_sea_mask"] = ds["land_sea_mask"].clip(0.0, 1.0)
    return ds


def _smooth(n_time: int = 16, seed: int = 0) -> xr.Dataset:
    """A smooth store with north-south asymmetry (as real fields have): a latitude-reversed field is
    far from its neighbours, unlike in make_dataset, whose pattern is symmetric about the equator."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, 17)
    lon = np.arange(32) * 360.0 / 32
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    t = np.arange(n_time)[:, None, None]
    wave = np.cos(la) * np.sin(2 * lo - 0.15 * t)
    t2m = 275 + 25 * np.cos(la) + 10 * np.sin(la) + 4 * wave + 0.3 * rng.standard_normal((n_time, *la.shape))
    levels = [500, 850]
    z = np.stack([50000 + 3000 * np.cos(la) + 800 * np.sin(la) + k * 1000 + 300 * wave for k in range(2)], 1)
    return xr.Dataset(
        {"2m_temperature": (("time", "latitude", "longitude"), t2m.astype(np.float32), {"units": "K"}),
         "geopotential": (("time", "level", "latitude", "longitude"), z.astype(np.float32),
                          {"units": "m**2 s**-2"})},
        coords={"time": T[:n_time].values, "level": levels, "latitude": lat, "longitude": lon})


def _kinds(report) -> set[tuple]:
    return {(f.kind, f.variable, f.level, f.time) for f in report.findings}


# ---- clean stores ------------------------------------------------------------------------------
def test_clean_stores_have_no_findings(tmp_path):
    path = write(_clean(12), tmp_path / "era5.zarr")
    report = check_store(path, progress=False, block_times=5)
    assert report.findings == [] and report.exit_code == 0 and report.ok
    assert report.n_times == 12 and report.steps == {"6h": 11}
    assert report.time_range == [_iso(0), _iso(11)]
    assert "no problems found" in report.table()
    assert check_store(_smooth(), progress=False).findings == []  # smooth, asymmetric: no false flip


# ---- field findings ----------------------------------------------------------------------------
def test_nan_inf_constant_and_out_of_range_fields_are_named():
    ds = _clean(8, variables=["2m_temperature", "10m_u_component_of_wind", "mean_sea_level_pressure",
                              "geopotential", "specific_humidity", "sea_surface_temperature"])
    ds["2m_temperature"][3, 2, 5] = np.nan
    ds["geopotential"][2, 1, 0, 0] = np.nan                   # level 850
    ds["10m_u_component_of_wind"][6, 4, 4] = np.inf
    ds["mean_sea_level_pressure"][5] = 101325.0               # constant
    ds["2m_temperature"][1, 0, 0] = 400.0                     # > 350 K
    ds["specific_humidity"][4, 0, 3, 3] = -0.01               # level 500, < -1e-3
    sst = ds["sea_surface_temperature"].values
    sst[:, :3] = np.nan                                       # "land": expected NaNs
    sst[7] = np.nan                                           # a whole field: always a problem
    ds["sea_surface_temperature"] = (ds["sea_surface_temperature"].dims, sst, {"units": "K"})
    report = check_store(ds, progress=False, block_times=3)
    assert _kinds(report) == {
        ("nan", "2m_temperature", None, _iso(3)),
        ("nan", "geopotential", 850, _iso(2)),
        ("inf", "10m_u_component_of_wind", None, _iso(6)),
        ("constant", "mean_sea_level_pressure", None, _iso(5)),
        ("out_of_range", "2m_temperature", None, _iso(1)),
        ("out_of_range", "specific_humidity", 500, _iso(4)),
        ("all_nan", "sea_surface_temperature", None, _iso(7)),
    }
    by = {(f.kind, f.variable): f for f in report.findings}
    assert by["nan", "2m_temperature"].detail == "1 of 144 values NaN"
    assert by["out_of_range", "2m_temperature"].detail.startswith("1 value(s) outside [150, 350] K (min ")
    assert "max 400" in by["out_of_range", "2m_temperature"].detail
    assert by["constant", "mean_sea_level_pressure"].detail == "every finite value is 101325 Pa"
    assert report.exit_code == 1
    assert report.bad_times() == sorted(_iso(i) for i in (1, 2, 3, 4, 5, 6, 7))
    # without the expected-NaN list, sst's land NaNs are findings at every time
    strict = check_store(ds, progress=False, allow_nan=[], variables=["sst"])
    assert {f.time for f in strict.findings if f.kind == "nan"} == {_iso(i) for i in range(7)}


def test_flipped_day_in_a_smooth_store_is_found_exactly():
    ds = _smooth(16)
    day = slice(6, 10)                                        # 4 six-hourly times, across two blocks
    for v in ds.data_vars:
        ds[v][day] = ds[v][day].values[..., ::-1, :]
    report = check_store(ds, progress=False, block_times=4)
    want = {("flipped_latitude", v, lev, _iso(i)) for i in range(6, 10)
            for v, lev in (("2m_temperature", None), ("geopotential", 500), ("geopotential", 850))}
    assert _kinds(report) == want
    f = next(f for f in report.findings if f.variable == "2m_temperature")
    ratio = float(f.detail.split("reversed neighbour is ")[1].split("x")[0])
    assert ratio < FLIP_RATIO and "a run of 4 time(s)" in f.detail
    assert "data.exclude_times=[" + ", ".join(_iso(i) for i in range(6, 10)) + "]" in report.table()
    # one flipped field at the very first time, one level only
    one = _smooth(16)
    one["geopotential"][0, 1] = one["geopotential"][0, 1].values[::-1]
    assert _kinds(check_store(one, progress=False)) == {("flipped_latitude", "geopotential", 850, _iso(0))}


# ---- the time axis -----------------------------------------------------------------------------
def test_duplicated_missing_irregular_and_unsorted_times():
    ds = _clean(8, variables=["2m_temperature"])
    dup = xr.concat([ds.isel(time=slice(0, 3)), ds.isel(time=slice(2, 8))], dim="time")
    report = check_store(dup, progress=False)
    assert _kinds(report) == {("duplicate_time", None, None, _iso(2))}
    assert report.findings[0].detail == "appears 2 times (positions [2, 3])"
    gaps = ds.drop_isel(time=[3, 4])
    report = check_store(gaps, progress=False)
    assert _kinds(report) == {("missing_time", None, None, _iso(3)), ("missing_time", None, None, _iso(4))}
    assert report.steps == {"6h": 4, "18h": 1}
    odd = ds.assign_coords(time=ds["time"].values + np.array([0, 0, 0, 0, 0, 3, 0, 0], "timedelta64[h]"))
    report = check_store(odd, progress=False)
    assert _kinds(report) == {("irregular_step", None, None, "2020-08-02T09:00"),
                              ("irregular_step", None, None, "2020-08-02T12:00")}
    assert report.steps == {"6h": 5, "9h": 1, "3h": 1}
    back = ds.isel(time=[0, 1, 3, 2, 4, 5, 6, 7])
    assert ("unsorted_time", None, None, _iso(2)) in _kinds(check_store(back, progress=False))


def test_integer_time_axis_with_units_on_the_group(tmp_path):
    ref = _clean(6, variables=["2m_temperature"])
    hours = ((ref["time"].values - np.datetime64("1900-01-01")) // np.timedelta64(1, "h")).astype(np.int64)
    raw = ref.assign_coords(time=("time", hours)).assign_attrs(time_units="hours since 1900-01-01")
    report = check_store(write(raw, tmp_path / "int.zarr"), progress=False)
    assert report.ok and report.steps == {"6h": 5} and report.time_range == [_iso(0), _iso(5)]
    bare = ref.assign_coords(time=("time", hours))            # numbers without units
    with pytest.raises(DataError, match=r"coordinate 'time' holds int64 numbers without units"):
        check_store(write(bare, tmp_path / "bare.zarr"), progress=False)


# ---- stores that cannot be checked: one clear error ---------------------------------------------
def _no_lat_coord(ds):
    return ds.drop_vars("latitude")


@pytest.mark.parametrize("make, kwargs, match", [
    (lambda ds: ds, {"variables": ["2m_temperature", "specific_humidity"]},
     r"missing variable\(s\) \['specific_humidity'\]"),
    (lambda ds: ds.drop_vars("time"), {}, r"dimension 'time' has no coordinate values"),
    (lambda ds: ds.isel(time=0, drop=True), {}, r"no variable has a 'time' dim"),
    (_no_lat_coord, {}, r"dimension 'latitude' has no coordinate values"),
    (lambda ds: ds.rename({"latitude": "rows"}), {}, r"no 'latitude' dimension"),
    (lambda ds: ds.assign(mean_sea_level_pressure=ds["mean_sea_level_pressure"].expand_dims(band=2)), {},
     r"variable 'mean_sea_level_pressure' has dims \('time', 'band', 'latitude', 'longitude'\): unknown dim\(s\) "
     r"\['band'\]"),
    (lambda ds: ds.assign(temperature=ds["temperature"].isel(level=0, drop=True)), {},
     r"variable 'temperature' is a pressure-level variable but has no 'level' dim"),
    (lambda ds: ds.assign(land_sea_mask=ds["land_sea_mask"].expand_dims(time=ds["time"])), {},
     r"variable 'land_sea_mask' is a static field but has a 'time' dim"),
])
def test_malformed_stores_give_one_clear_error(tmp_path, make, kwargs, match):
    path = write(make(_clean(4)), tmp_path / "bad.zarr")
    with pytest.raises(DataError, match=match):
        check_store(path, progress=False, **kwargs)


def _truncate_chunk(path: Path, variable: str, t: int) -> Path:
    chunk = path / variable / "c" / str(t) / "0" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 3])
    return chunk


def test_truncated_chunk_is_named_by_variable_and_time(tmp_path):
    ds = _clean(6, variables=["2m_temperature", "mean_sea_level_pressure"])
    path = tmp_path / "trunc.zarr"
    ds.to_zarr(path, mode="w", consolidated=False, encoding={v: {"chunks": (1, 9, 16)} for v in ds.data_vars})
    _truncate_chunk(path, "2m_temperature", 2)
    report = check_store(path, progress=False, block_times=3)
    assert _kinds(report) == {("unreadable", "2m_temperature", None, _iso(2))}
    assert "cannot read or decode its chunk" in report.findings[0].detail and report.exit_code == 2


# ---- the CLI -----------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aeris data")
    add_subcommand(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(["check", *argv])
    return args.func(args)


def test_cli_exit_codes_table_and_json(tmp_path, capsys):
    clean = write(_clean(6), tmp_path / "clean.zarr")
    assert _cli([str(clean), "--no-progress"]) == 0
    assert "no problems found" in capsys.readouterr().out

    bad = _clean(6)
    bad["2m_temperature"][4, 1, 1] = np.nan
    out = tmp_path / "findings.json"
    assert _cli([str(write(bad, tmp_path / "nan.zarr")), "--no-progress", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "nan " in text and "2m_temperature" in text and _iso(4) in text and "1 problem(s): nan 1" in text
    doc = json.loads(out.read_text())
    assert doc["exit_code"] == 1 and doc["bad_times"] == [_iso(4)]
    assert doc["findings"] == [{"kind": "nan", "variable": "2m_temperature", "level": None, "time": _iso(4),
                                "detail": "1 of 144 values NaN", "where": {}}]

    trunc = tmp_path / "trunc.zarr"
    ds = _clean(4, variables=["2m_temperature"])
    ds.to_zarr(trunc, mode="w", consolidated=False, encoding={"2m_temperature": {"chunks": (1, 9, 16)}})
    _truncate_chunk(trunc, "2m_temperature", 1)
    assert _cli([str(trunc), "--no-progress"]) == 2
    assert "unreadable" in capsys.readouterr().out

    for path in (write(_clean(4).drop_vars("time"), tmp_path / "timeless.zarr"), tmp_path / "absent.zarr"):
        assert _cli([str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aeris data check: ") and err.count("\n") == 1 and "Traceback" not in err
    assert _cli([str(clean), "--no-progress", "--variables", "t2m,q"]) == 2
    assert "missing variable(s) ['specific_humidity']" in capsys.readouterr().err


# ---- the loader --------------------------------------------------------------------------------
WINDOW = (4, 4)


def _cfg(path, **kw) -> DataConfig:
    base = dict(path=str(path), surface=["2m_temperature"], atmospheric=["geopotential"], levels=[500],
                train_period=["2020-08-01", "2020-08-02"], val_period=["2020-08-03", "2020-08-03"],
                test_period=["2020-08-03", "2020-08-03"])
    return DataConfig(**(base | kw))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared store of 10 six-hourly times (train: 8 times, 7 samples); read-only."""
    root = tmp_path_factory.mktemp("loader")
    cfg = _cfg(write(make_dataset(n_lat=9, n_lon=16, n_time=10, levels=[500, 850]), root / "era5.zarr"))
    prepare(cfg, WINDOW, progress=False)
    return cfg


def _spoiled(cfg: DataConfig, tmp_path: Path, t: int, value: float, array: str = "state", **kw) -> DataConfig:
    """A copy of the prepared store with channel 0 of `array` (state: t2m, forcing: tisr) at time t,
    row 2, col 3 set to `value` (standardised)."""
    copy = tmp_path / "spoiled.zarr"
    shutil.copytree(Path(cfg.path).with_name("era5.prepared.zarr"), copy)
    zarr.open_group(copy, mode="r+")[array][t, 0, 2, 3] = value
    return replace(cfg, prepared=str(copy), **kw)


def test_bad_sample_is_an_error_naming_split_index_time_and_channel(prepared, tmp_path):
    cfg = _spoiled(prepared, tmp_path, 3, np.nan)
    ds = ForecastDataset(cfg, "train")
    for i in (0, 1, 4, 5, 6):
        ds[i]
    with pytest.raises(DataError, match=r"bad sample 2 of split 'train' \(t = 2020-08-01T12:00, t\+dt = "
                                        r"2020-08-01T18:00\): state 't2m' \(2m_temperature\) at 2020-08-01T18:00: "
                                        r"1 of 128 values NaN/inf"):
        ds[2]
    with pytest.raises(DataError, match=r"bad sample 3 of split 'train' \(t = 2020-08-01T18:00.*at 2020-08-01T18:00"):
        ds[-4]
    with pytest.raises(DataError, match=r"state 't2m' \(2m_temperature\) at 2020-08-01T18:00 has NaN/inf"):
        ds.state_at(ds.store.times[[2, 3]])
    tisr = ForecastDataset(_spoiled(prepared, tmp_path / "tisr", 4, np.inf, array="forcing"), "train")
    with pytest.raises(DataError, match=r"bad sample 3 .*: forcing 'tisr@t\+dt' \(toa_incident_solar_radiation\) "
                                        r"at 2020-08-02T00:00: 1 of 128 values NaN/inf"):
        tisr[3]
    with pytest.raises(DataError, match=r"forcing 'tisr@t\+dt' .* of the step from 2020-08-01T18:00 has NaN/inf"):
        tisr.forcing_at(tisr.store.times[[3]])
    # a value no physical field has: 400 K in standardised units
    rec = ds.store.record["stats"]["t2m"]
    hot = _spoiled(prepared, tmp_path / "hot", 5, (400.0 - rec["mean"]) / rec["std"])
    with pytest.raises(DataError, match=r"bad sample 4 .* state 't2m' \(2m_temperature\) at 2020-08-02T06:00: "
                                        r"values .* outside its plausible bounds \[150, 350\]"):
        ForecastDataset(hot, "train")[4]
    ForecastDataset(replace(hot, sample_range_check=False), "train")[4]  # the range check is optional
    with pytest.raises(DataError, match="data.on_bad_sample must be error|skip"):
        ForecastDataset(replace(cfg, on_bad_sample="ignore"), "train")


def test_skip_returns_the_next_good_sample_on_every_rank(prepared, tmp_path, caplog):
    cfg = _spoiled(prepared, tmp_path, 3, np.nan, on_bad_sample="skip")
    ds = ForecastDataset(cfg, "train")
    with caplog.at_level(logging.WARNING, logger="aeris.data.dataset"):
        got = [int(ds[i]["index"]) for i in range(len(ds))]
    assert got == [0, 1, 4, 4, 4, 5, 6]                      # samples 2 and 3 touch 18 UTC
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "bad sample 2 (t = 2020-08-01T12:00, t+dt = 2020-08-01T18:00) skipped, " \
                                "sample 4 read instead" in warned[0]
    whole = ds[2]
    clone = pickle.loads(pickle.dumps(ForecastDataset(cfg, "train")))
    assert int(clone[3]["index"]) == 4                         # deterministic in a fresh process view
    # a rank whose tokens do not hold the bad pixel (row 2, col 3) skips the same samples
    layout = WindowLayout(8, 16, *WINDOW, wpy=2, wpx=2)
    for r in range(layout.n_ranks):
        ids = layout.index_map(0, r)
        part = ForecastDataset(cfg, "train", index_map=ids)[2]
        assert int(part["index"]) == 4
        np.testing.assert_array_equal(part["cond"].numpy(),
                                      np.moveaxis(ds.to_field(whole["cond"].numpy()).reshape(2, -1)[:, ids], 0, -1))


def test_excluded_times_leave_the_split_deterministically(prepared):
    full = ForecastDataset(prepared, "train")
    assert len(full) == 7
    ds = ForecastDataset(replace(prepared, exclude_times=["2020-08-01T06:00", "2020-08-02T00:00"]), "train")
    # t or t+dt excluded: (00, 06), (06, 12), (18, 00), (00, 06) of the 7 pairs
    assert [str(t)[:16] for t in ds.times] == ["2020-08-01T12:00", "2020-08-02T06:00", "2020-08-02T12:00"]
    assert len(ds) == 3 and int(ds[1]["time"]) == int(full[5]["time"])
    day = ForecastDataset(replace(prepared, exclude_times=["2020-08-01"]), "train")  # a date: the whole day
    assert [str(t)[:16] for t in day.times] == ["2020-08-02T00:00", "2020-08-02T06:00", "2020-08-02T12:00"]
    with pytest.raises(DataError, match=r"has no \(t, t\+6h\) pair .* after data.exclude_times left out 1"):
        ForecastDataset(replace(prepared, exclude_times=["2020-08-03"]), "val")
    with pytest.raises(DataError, match=r"data.exclude_times: cannot read 'soon' as an ISO time"):
        ForecastDataset(replace(prepared, exclude_times=["soon"]), "train")
    t = np.array(["2020-08-01T00", "2020-08-01T06", "2020-08-02T00"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(exclude_mask(t, ["2020-08-01T06:00Z", "2020-08-02"]), [False, True, True])

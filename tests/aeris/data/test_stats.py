"""Normalisation statistics against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from aeris.data.config import DataConfig
from aeris.data.stats import (
    compute_and_save_stats, compute_stats, load_stats, save_stats, stats_for, stats_path, time_pairs,
)
from aeris.data.store import DataError, open_store
from tests.support.stores import make_dataset, write


def _np_stats(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), np.sqrt(((x - x.mean()) ** 2).mean())


def test_stats_match_numpy(tmp_path):
    ref = make_dataset(n_time=10, variables=["2m_temperature", "geopotential", "temperature",
                                             "toa_incident_solar_radiation", "land_sea_mask",
                                             "sea_surface_temperature"])
    sst = ref["sea_surface_temperature"].values.copy()
    sst[:, 2:4, 5:9] = np.nan  # "land"
    ref["sea_surface_temperature"].values[:] = sst
    # chunk by time so the reduction really streams over several chunks
    path = write(ref.chunk({"time": 1}), tmp_path / "s.zarr")
    ds = open_store(path)
    period = ["2020-08-01T06", "2020-08-03T00"]  # time indices 1..8
    st = compute_stats(ds, ["z500", "t2m", "t850", "sst"], 12, forcings=["toa_incident_solar_radiation"],
                       static=["lsm"], period=period, fill_nan_with_min=["sea_surface_temperature"])
    assert st["channel"].values.tolist() == ["z500", "t2m", "t850", "sst", "tisr", "lsm"]
    assert st["kind"].values.tolist() == ["prognostic"] * 4 + ["forcing", "static"]
    sel = slice(1, 9)
    filled = np.where(np.isnan(sst), np.nanmin(sst, axis=(1, 2), keepdims=True), sst)
    fields = {"z500": ref["geopotential"].sel(level=500).values,
              "t2m": ref["2m_temperature"].values,
              "t850": ref["temperature"].sel(level=850).values,
              "sst": filled,
              "tisr": ref["toa_incident_solar_radiation"].values}
    for ch, x in fields.items():
        m, s = _np_stats(x[sel])
        np.testing.assert_allclose(st["mean"].sel(channel=ch), m, rtol=1e-10, err_msg=ch)
        np.testing.assert_allclose(st["std"].sel(channel=ch), s, rtol=1e-8, err_msg=ch)
        if ch != "tisr":
            d = x[3:9].astype(np.float64) - x[1:7].astype(np.float64)  # t and t+12h both in 1..8
            dm, ds_ = _np_stats(d)
            np.testing.assert_allclose(st["diff_mean"].sel(channel=ch), dm, rtol=1e-8, atol=1e-9, err_msg=ch)
            np.testing.assert_allclose(st["diff_std"].sel(channel=ch), ds_, rtol=1e-8, err_msg=ch)
    m, s = _np_stats(ref["land_sea_mask"].values)
    np.testing.assert_allclose(st["mean"].sel(channel="lsm"), m, rtol=1e-10)
    np.testing.assert_allclose(st["std"].sel(channel="lsm"), s, rtol=1e-8)
    assert np.isnan(st["diff_std"].sel(channel="lsm")) and np.isnan(st["diff_mean"].sel(channel="tisr"))
    assert st.attrs["n_pairs"] == 6 and st.attrs["n_times"] == 8

    p = save_stats(st, tmp_path / "out" / "s.stats.nc")
    back = load_stats(p)
    for k in ("mean", "std", "diff_mean", "diff_std"):
        np.testing.assert_array_equal(back[k].values, st[k].values)
    assert back.attrs["period"] == period
    got = stats_for(back, ["t850", "z500"], need_diff=True)
    np.testing.assert_array_equal(got["std"], st["std"].sel(channel=["t850", "z500"]).values)
    with pytest.raises(DataError, match=r"no channel\(s\) \['q700'\]"):
        stats_for(back, ["q700"])


def test_unfilled_nans_are_an_error(tmp_path):
    ref = make_dataset(variables=["sea_surface_temperature"])
    ref["sea_surface_temperature"].values[:, 0, 0] = np.nan
    ds = open_store(write(ref, tmp_path / "s.zarr"))
    with pytest.raises(DataError, match="sst"):
        compute_stats(ds, ["sst"], 6)


def test_time_pairs_respect_period_and_gaps():
    t = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T18", "2020-01-02T00"], dtype="datetime64[ns]")
    i0, i1 = time_pairs(t, 6)
    assert i0.tolist() == [0, 2] and i1.tolist() == [1, 3]
    i0, _ = time_pairs(t, 6, ["2020-01-01", "2020-01-01"])
    assert i0.tolist() == [0]


def test_compute_and_save_stats_from_config(tmp_path, make_store):
    path, ref = make_store(tmp_path)
    cfg = DataConfig(path=str(path), surface=["2m_temperature"], atmospheric=["geopotential"], levels=[500],
                     static=["land_sea_mask"], train_period=["2020-08-01", "2020-08-01"])
    assert stats_path(cfg) == f"{path}.stats.nc"
    out = compute_and_save_stats(cfg)
    st = load_stats(out)
    assert st["channel"].values.tolist() == ["t2m", "z500", "tisr", "lsm"]
    m, s = _np_stats(ref["geopotential"].sel(level=500).values[:4])
    np.testing.assert_allclose(st["std"].sel(channel="z500"), s, rtol=1e-8)
    assert stats_path(DataConfig(path="gs://b/x.zarr", stats="/tmp/x.nc")) == "/tmp/x.nc"
    with pytest.raises(DataError, match="remote"):
        stats_path(DataConfig(path="gs://b/x.zarr"))

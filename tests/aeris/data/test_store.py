"""open_store canonicalisation, validation, model grid and channel selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from aeris.data.store import (
    G0, DataError, drop_row, fill_nan_with_min, model_grid, model_latitudes, open_store, pad_row,
    select_channels, select_period, validate,
)
from tests.support.stores import make_dataset, to_variant, write

VARIANTS = {
    "wb2": {},
    "lat_ascending": {"lat_ascending": True},
    "lat_lon_names": {"lat_lon_names": True},
    "grib_number": {"grib": True, "number_dim": True},
    "lon_first": {"lon_first": True},
    "lon_180": {"lon_180": True},
    "everything": {"lat_ascending": True, "lat_lon_names": True, "grib": True, "number_dim": True,
                   "lon_first": True, "lon_180": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("fmt", ["zarr", "nc"])
def test_open_store_canonicalises(tmp_path, make_store, variant, fmt):
    path, ref = make_store(tmp_path, name=f"s.{fmt}", variant=VARIANTS[variant])
    ds = open_store(path)
    assert sorted(ds.data_vars) == sorted(ref.data_vars)
    for name in ref.data_vars:
        assert ds[name].dims == ref[name].dims, name
        assert ds[name].chunks is not None, f"{name} was loaded eagerly"
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)
    np.testing.assert_allclose(ds["latitude"].values, ref["latitude"].values)
    np.testing.assert_allclose(ds["longitude"].values, ref["longitude"].values)
    assert ds["level"].values.tolist() == [500, 850]
    assert ds["time"].dtype == np.dtype("datetime64[ns]")


def test_select_variables_and_levels_by_value(tmp_path, make_store):
    path, ref = make_store(tmp_path, levels=(300, 500, 850), variant={"grib": True})
    ds = open_store(path, variables=["z", "t2m"], levels=[850, 300])
    assert sorted(ds.data_vars) == ["2m_temperature", "geopotential"]
    np.testing.assert_array_equal(ds["geopotential"].values,
                                  ref["geopotential"].sel(level=[850, 300]).values)
    with pytest.raises(DataError, match=r"missing pressure level\(s\) \[700\]"):
        open_store(path, levels=[500, 700])
    with pytest.raises(DataError, match="specific_humidity"):
        open_store(path, variables=["q"])


def test_levelless_grib_z_is_orography_and_units_converted(tmp_path):
    ref = make_dataset(variables=["geopotential", "geopotential_at_surface", "2m_temperature",
                                  "mean_sea_level_pressure"])
    raw = ref.rename({"geopotential_at_surface": "z_surface"})
    raw["z_surface"] = raw["z_surface"]
    raw = raw.rename({"geopotential": "zg"})
    # geopotential height in metres and msl in hPa, as some stores have them
    raw["zg"] = (raw["zg"] / G0).assign_attrs(units="gpm")
    raw["mean_sea_level_pressure"] = (raw["mean_sea_level_pressure"] / 100).assign_attrs(units="hPa")
    raw["2m_temperature"] = (raw["2m_temperature"] - 273.15).assign_attrs(units="degC")
    raw = raw.rename({"z_surface": "orog"})
    ds = open_store(write(raw, tmp_path / "u.zarr"))
    np.testing.assert_allclose(ds["geopotential"].values, ref["geopotential"].values, rtol=1e-6)
    np.testing.assert_allclose(ds["mean_sea_level_pressure"].values, ref["mean_sea_level_pressure"].values,
                               rtol=1e-6)
    np.testing.assert_allclose(ds["2m_temperature"].values, ref["2m_temperature"].values, rtol=1e-6)
    assert ds["geopotential"].attrs["units"] == "m**2 s**-2"


def test_grib_z_without_level_becomes_geopotential_at_surface(tmp_path):
    ref = make_dataset(variables=["geopotential_at_surface"])
    ds = open_store(write(ref.rename({"geopotential_at_surface": "z"}), tmp_path / "z.zarr"))
    assert list(ds.data_vars) == ["geopotential_at_surface"]


def test_unknown_units_are_an_error(tmp_path):
    ref = make_dataset(variables=["temperature"])
    ref["temperature"].attrs["units"] = "furlongs"
    with pytest.raises(DataError, match=r"'temperature' has units 'furlongs', expected 'K'"):
        open_store(write(ref, tmp_path / "bad.zarr"))


def test_missing_store_and_missing_fs_package(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_store(tmp_path / "nope.zarr")
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="gcsfs"):
            open_store("gs://bucket/era5.zarr")


def test_validate_names_missing_variable_nan_and_grid(tmp_path, make_store):
    path, ref = make_store(tmp_path)
    ds = open_store(path)
    validate(ds, ["z", "t2m"], levels=[500], grid=(9, 16))
    with pytest.raises(DataError, match=r"missing variable\(s\) \['specific_humidity'\]"):
        validate(ds, ["z", "q"])
    with pytest.raises(DataError, match="expected 8x16.*got 9x16"):
        validate(ds, ["z"], grid=(8, 16))
    bad = ref.copy(deep=True)
    bad["temperature"][3, 1, 4, 5] = np.nan  # time index 3, level 850
    ds = open_store(write(bad, tmp_path / "nan.zarr"))
    with pytest.raises(DataError, match=r"'temperature', time 2020-08-01T18, level 850 hPa"):
        validate(ds, ["temperature", "2m_temperature"])
    validate(ds, ["temperature"], times=ds["time"].values[:3])  # NaN outside the asked times
    validate(ds, ["temperature"], allow_nan=["temperature"])
    with pytest.raises(DataError, match="missing time"):
        validate(ds, ["temperature"], times=[np.datetime64("2021-01-01")])


def test_drop_and_pad_row_numpy_and_torch():
    f = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    for which, kept, neighbour in (("last", slice(0, 4), 3), ("first", slice(1, 5), 1)):
        d = drop_row(f, which)
        np.testing.assert_array_equal(d, f[:, kept])
        p = pad_row(d, which, mode="copy")
        assert p.shape == f.shape
        restored = 4 if which == "last" else 0
        np.testing.assert_array_equal(p[:, kept], f[:, kept])
        np.testing.assert_array_equal(p[:, restored], f[:, neighbour])
        pn = pad_row(d, which, mode="nan")
        assert np.isnan(pn[:, restored]).all() and not np.isnan(pn[:, kept]).any()
        pt = pad_row(torch.from_numpy(d), which)
        assert isinstance(pt, torch.Tensor)
        np.testing.assert_array_equal(pt.numpy(), p)
    assert drop_row(f, "none") is f and pad_row(f, "none") is f
    with pytest.raises(DataError, match="first"):
        drop_row(f, "middle")


def test_model_grid_and_latitudes():
    assert model_grid(65, 128, "last", (8, 8)) == (64, 128)
    assert model_grid(64, 128, "none", (8, 16)) == (64, 128)
    with pytest.raises(DataError, match=r"model grid 64x128 .* not divisible by the window 12x8"):
        model_grid(65, 128, "last", (12, 8))
    lat = np.linspace(90, -90, 5)
    np.testing.assert_allclose(model_latitudes(lat, "last"), [90, 45, 0, -45])
    np.testing.assert_allclose(model_latitudes(lat, "first"), [45, 0, -45, -90])


def test_select_channels_order_and_values(tmp_path, make_store):
    path, ref = make_store(tmp_path)
    ds = open_store(path)
    chans = ["z850", "t2m", "t500", "lsm"]
    da = select_channels(ds, chans)
    assert da.dims == ("time", "channel", "latitude", "longitude")
    assert da["channel"].values.tolist() == chans
    v = da.values
    np.testing.assert_array_equal(v[:, 0], ref["geopotential"].sel(level=850).values)
    np.testing.assert_array_equal(v[:, 1], ref["2m_temperature"].values)
    np.testing.assert_array_equal(v[:, 2], ref["temperature"].sel(level=500).values)
    for t in range(v.shape[0]):
        np.testing.assert_array_equal(v[t, 3], ref["land_sea_mask"].values)
    with pytest.raises(DataError, match="level 700"):
        select_channels(ds, ["z700"])


def test_select_period_inclusive_end_day():
    t = np.array(["2020-08-01T00", "2020-08-01T18", "2020-08-02T00"], dtype="datetime64[ns]")
    assert select_period(t, ["2020-08-01", "2020-08-01"]).tolist() == [True, True, False]
    assert select_period(t, ["2020-08-01T06", "2020-08-02T00"]).tolist() == [False, True, True]
    with pytest.raises(DataError, match="ends before"):
        select_period(t, ["2020-08-02", "2020-08-01"])


def test_fill_nan_with_min_per_field():
    a = np.array([[[1.0, np.nan], [3.0, 4.0]], [[np.nan, -2.0], [5.0, 6.0]]])
    da = xr.DataArray(a, dims=("time", "latitude", "longitude"))
    out = fill_nan_with_min(da).values
    np.testing.assert_array_equal(out, [[[1, 1], [3, 4]], [[-2, -2], [5, 6]]])


def test_forecast_store_keeps_number_and_lead(tmp_path):
    ref = make_dataset(variables=["2m_temperature"], n_time=2)
    fc = ref.expand_dims(step=np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]"),
                         realization=[0, 1, 2]).transpose("realization", "latitude", "time", "step", "longitude")
    ds = open_store(write(fc, tmp_path / "fc.zarr"))
    assert ds["2m_temperature"].dims == ("time", "prediction_timedelta", "number", "latitude", "longitude")
    one = open_store(tmp_path / "fc.zarr", member=1)
    assert "number" not in one.dims

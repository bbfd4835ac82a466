"""Time axes of odd real extracts decoded to datetime64[ns], or a clear error naming the coordinate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aeris.data.store import DataError, open_store
from aeris.data.timeaxis import decode_time, require_time
from tests.support.stores import make_dataset, write

SIX_HOURLY = pd.date_range("2020-08-01", periods=4, freq="6h").values.astype("datetime64[ns]")


def _with_time(values, attrs=None, group=None, name="time") -> xr.Dataset:
    """A raw (undecoded) dataset whose time axis holds `values`."""
    ds = xr.Dataset({"t2m": ((name, "latitude", "longitude"), np.zeros((len(values), 3, 4), np.float32))},
                    coords={name: (name, np.asarray(values), dict(attrs or {}))})
    return ds.assign_attrs(group or {})


def _times(ds, name="time"):
    return decode_time(ds, error=DataError)[name].values


def test_cf_units_on_the_coordinate_and_on_the_group():
    hours = ((SIX_HOURLY - np.datetime64("1900-01-01")) // np.timedelta64(1, "h")).astype(np.int64)
    for ds in (_with_time(hours, {"units": "hours since 1900-01-01"}),
               _with_time(hours, group={"time_units": "hours since 1900-01-01 00:00:00"}),
               _with_time(hours.astype(np.float64), group={"units": "hours since 1900-01-01"}),
               _with_time((hours - hours[0]) * 60, {"units": "minutes since 2020-08-01 00:00"}),
               _with_time((hours - hours[0]) * 3600, {"units": "seconds since 2020-08-01T00:00:00Z"})):
        got = _times(ds)
        assert got.dtype == np.dtype("datetime64[ns]")
        np.testing.assert_array_equal(got, SIX_HOURLY)
    out = decode_time(_with_time(hours, {"units": "hours since 1900-01-01", "long_name": "time"}), error=DataError)
    assert out["time"].attrs == {"long_name": "time", "decoded_from": "hours since 1900-01-01"}
    assert decode_time(out, error=DataError)["time"].equals(out["time"])  # idempotent


def test_calendars_keep_their_labels_or_fail_by_name():
    days = np.array([0, 1])
    std = _times(_with_time(days, {"units": "days since 2020-02-28"}))
    assert list(np.datetime_as_string(std, unit="D")) == ["2020-02-28", "2020-02-29"]
    noleap = _times(_with_time(days, {"units": "days since 2020-02-28", "calendar": "noleap"}))
    assert list(np.datetime_as_string(noleap, unit="D")) == ["2020-02-28", "2020-03-01"]  # no Feb 29
    group_cal = _times(_with_time(days, group={"time_units": "days since 2020-02-28", "calendar": "365_day"}))
    np.testing.assert_array_equal(group_cal, noleap)
    with pytest.raises(DataError, match=r"coordinate 'time'.*2020-02-30.*calendar '360_day'"):
        _times(_with_time(np.array([0, 1, 2]), {"units": "days since 2020-02-28", "calendar": "360_day"}))
    with pytest.raises(DataError, match=r"coordinate 'time': cannot decode units 'hours since 2020-01-01' with "
                                        r"calendar 'martian'"):
        _times(_with_time(days, {"units": "hours since 2020-01-01", "calendar": "martian"}))


def test_cdo_absolute_axis_iso_strings_and_other_datetime_units():
    cdo = _with_time(np.array([20200801.0, 20200801.25, 20200801.5, 20200801.75]), {"units": "day as %Y%m%d.%f"})
    np.testing.assert_array_equal(_times(cdo), SIX_HOURLY)
    iso = _with_time(np.array(["2020-08-01T00:00", "2020-08-01T06:00", "2020-08-01T12:00", "2020-08-01 18:00Z"],
                              dtype=object))
    np.testing.assert_array_equal(_times(iso), SIX_HOURLY)
    seconds = _with_time(SIX_HOURLY.astype("datetime64[s]"))
    assert _times(seconds).dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(_times(seconds), SIX_HOURLY)
    valid = _with_time(np.arange(4) * 6, {"units": "hours since 2020-08-01"}, name="valid_time")
    np.testing.assert_array_equal(_times(valid, "valid_time"), SIX_HOURLY)  # an alias of time


@pytest.mark.parametrize("ds, match", [
    (_with_time(np.arange(4)), r"coordinate 'time' holds int64 numbers without units"),
    (_with_time(np.arange(4), {"units": "fortnights since 2020-01-01"}),
     r"coordinate 'time': cannot decode units 'fortnights since 2020-01-01'"),
    (_with_time(np.arange(4), {"units": "hours after 2020-01-01"}),
     r"coordinate 'time': cannot read units 'hours after 2020-01-01'"),
    (_with_time(np.array([0.0, 6.0, np.nan, 18.0]), {"units": "hours since 2020-08-01"}),
     r"coordinate 'time' has 1 missing value\(s\) \(NaT\) at position\(s\) \[2\]"),
    (_with_time(np.array(["2020-08-01", "soon"], dtype=object)), r"coordinate 'time': value 'soon' at position 1"),
    (_with_time(np.array([20200801.0, 20201350.0]), {"units": "day as %Y%m%d.%f"}),
     r"coordinate 'time': cannot read \[20200801.0\] as 'day as %Y%m%d.%f'"),
    (_with_time(np.array([1, 2], dtype="timedelta64[h]")), r"coordinate 'time' holds time differences"),
    (xr.Dataset({"t2m": (("time", "latitude"), np.zeros((2, 3)))}), r"dimension 'time' has no coordinate values"),
])
def test_unreadable_time_axes_name_the_coordinate(ds, match):
    with pytest.raises(DataError, match=match):
        decode_time(ds, error=DataError)


def test_time_less_store_and_require_time(tmp_path):
    static = xr.Dataset({"lsm": (("latitude", "longitude"), np.zeros((3, 4)))})
    assert decode_time(static, error=DataError) is static  # static fields: nothing to decode
    with pytest.raises(DataError, match=r"store x: no 'time' coordinate \(dims \['latitude', 'longitude'\]\)"):
        require_time(static, "store x", error=DataError)
    np.testing.assert_array_equal(require_time(_with_time(SIX_HOURLY), "s", error=DataError), SIX_HOURLY)


def test_group_units_store_on_disk_decodes_after_open_store(tmp_path):
    """A zarr extract whose time units live on the group: xarray leaves the numbers, we decode them."""
    ref = make_dataset(n_time=4, variables=["2m_temperature"])
    hours = ((ref["time"].values - np.datetime64("1900-01-01")) // np.timedelta64(1, "h")).astype(np.int64)
    raw = ref.assign_coords(time=("time", hours)).assign_attrs(time_units="hours since 1900-01-01")
    path = write(raw, tmp_path / "int_time.zarr")
    ds = decode_time(open_store(path), error=DataError)
    np.testing.assert_array_equal(ds["time"].values, ref["time"].values)
    np.testing.assert_array_equal(ds["2m_temperature"].values, ref["2m_temperature"].values)

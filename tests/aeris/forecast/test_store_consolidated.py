"""The forecast store is written with consolidated metadata, and reads back consolidated."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data.store import open_store
from aeris.forecast.store_writer import ForecastStore, StoreSpec, read_request


def test_forecast_store_metadata_is_consolidated_and_exact_after_writes(tmp_path):
    channels = ["t2m", "msl", "z500", "z850"]
    lat, lon = np.linspace(90, -90, 5), np.arange(8) * 45.0
    spec = StoreSpec(inits=pd.to_datetime(["2020-08-01", "2020-08-02"]).values,
                     leads=pd.to_timedelta([0, 6], unit="h").values, members=[0, 1], channels=channels,
                     latitudes=lat, longitudes=lon, chunk_members=1)
    path = tmp_path / "fc.zarr"
    store, resumed = ForecastStore.create_or_resume(path, spec, {"steps": 1})
    assert not resumed
    root = json.loads((path / "zarr.json").read_text())
    consolidated = root["consolidated_metadata"]["metadata"]
    assert {"2m_temperature", "geopotential", "time", "latitude"} <= set(consolidated)
    fields = np.arange(2 * 4 * 5 * 8, dtype=np.float32).reshape(2, 4, 5, 8)
    store.write(1, 0, 1, fields)  # init 1, members 0-1, lead 1
    assert read_request(path) == {"steps": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the consolidated metadata is there
        ds = xr.open_zarr(path, consolidated=True)
    np.testing.assert_array_equal(ds["geopotential"].isel(time=1, prediction_timedelta=1).sel(level=850).values,
                                  fields[:, 3])
    assert np.isnan(ds["2m_temperature"].isel(time=0).values).all()  # unwritten chunks read as NaN
    again = open_store(path)
    np.testing.assert_array_equal(again["mean_sea_level_pressure"].isel(time=1, prediction_timedelta=1).values,
                                  fields[:, 1])

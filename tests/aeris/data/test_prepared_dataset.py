"""Prepared store round trip, reuse refusal, and per-rank reads of ForecastDataset."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from aeris.data.config import DataConfig
from aeris.data.dataset import ForecastDataset
from aeris.data.prepared import PreparedStore, prepare, prepared_path
from aeris.data.store import DataError
from swipe.layout import WindowLayout
from tests.support.stores import make_dataset, small_data_cfg, write
from tests.support import REPO

WINDOW = (4, 4)
LEVELS = [500, 850]


_cfg = small_data_cfg


def _build(tmp):
    """9x16 pole-inclusive source grid -> 8x16 model grid; 10 six-hourly times."""
    ref = make_dataset(n_lat=9, n_lon=16, n_time=10, levels=LEVELS)
    cfg = _cfg(write(ref, Path(tmp) / "era5.zarr"))
    prepare(cfg, WINDOW, progress=False)
    return cfg, ref


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Shared, read-only: tests that rebuild or change the prepared store use `_build`."""
    return _build(tmp_path_factory.mktemp("prepared"))


def _physical(ref, t):
    """Source fields at time index t on the model grid (last row dropped): (C, 8, 16)."""
    out = [ref["2m_temperature"][t], ref["mean_sea_level_pressure"][t]]
    out += [ref["geopotential"][t].sel(level=lv) for lv in LEVELS]
    out += [ref["temperature"][t].sel(level=lv) for lv in LEVELS]
    return np.stack([np.asarray(o, dtype=np.float64) for o in out])[:, :-1]


def test_round_trip_every_token(store):
    cfg, ref = store
    ds = ForecastDataset(cfg, "train")
    assert ds.channels == ["t2m", "msl", "z500", "z850", "t500", "t850"]
    assert ds.forcing_channels == ["tisr@t", "tisr@t+dt", "zs", "lsm"] and ds.n_forcing == 4
    assert ds.grid == (8, 16) and len(ds) == 3  # 00, 06, 12 UTC (18 UTC's t+dt leaves the period)
    np.testing.assert_allclose(ds.latitudes, ref["latitude"].values[:-1])
    n_tok = 8 * 16
    for i in range(len(ds)):
        s = ds[i]
        assert s["cond"].shape == (n_tok // 16, 16, 6) and s["cond"].dtype == torch.float32
        assert s["forcing"].shape == (8, 16, 4) and s["target"].shape == (8, 16, 6)
        assert int(s["time"]) == int(ref["time"].values[i].astype(np.int64)) and int(s["index"]) == i
        x0, x1 = _physical(ref, i), _physical(ref, i + 1)
        cond = ds.to_field(ds.denormalize_state(s["cond"].double()).numpy())
        np.testing.assert_allclose(cond, x0, rtol=2e-7 * 10, atol=1e-6 * np.abs(x0).max(axis=(1, 2), keepdims=True).max())
        dx = ds.to_field(ds.denormalize_residual(s["target"].double()).numpy())
        scale = np.abs(x1 - x0).max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(dx, x1 - x0, atol=1e-4 * scale.max(), rtol=1e-4)
        # per channel relative check of the increment
        assert np.all(np.abs(dx - (x1 - x0)).max(axis=(1, 2)) <= 1e-4 * scale[:, 0, 0])
        nxt = ds.to_field(ds.denormalize_state(ds.advance(s["cond"].double(), s["target"].double())).numpy())
        np.testing.assert_allclose(nxt, x1, rtol=1e-6)
        f = ds.to_field(s["forcing"].double().numpy())
        fphys = ds.normalizer.denormalize_forcing(np.moveaxis(f[[0, 2, 3]], 0, -1))
        tisr = ref["toa_incident_solar_radiation"].values.astype(np.float64)[:, :-1]
        np.testing.assert_allclose(fphys[..., 0], tisr[i], rtol=1e-6)
        np.testing.assert_allclose(ds.normalizer.denormalize_forcing(np.moveaxis(f[[1, 2, 3]], 0, -1))[..., 0],
                                   tisr[i + 1], rtol=1e-6)
        np.testing.assert_allclose(fphys[..., 1], ref["geopotential_at_surface"].values[:-1], rtol=1e-5, atol=1e-2)
        np.testing.assert_allclose(fphys[..., 2], ref["land_sea_mask"].values[:-1], rtol=1e-5, atol=1e-6)
    # rollout helpers agree with the samples
    t = ds.times[1:3]
    torch.testing.assert_close(ds.state_at(t)[0], ds[1]["cond"])
    torch.testing.assert_close(ds.forcing_at(t)[1], ds[2]["forcing"])
    with pytest.raises(DataError, match="not in the prepared store"):
        ds.state_at([np.datetime64("2020-08-03T18")])  # beyond the stored times


def test_computed_tisr_in_store_and_past_its_end(tmp_path):
    from aeris.data.forcings import toa_incident_solar_radiation
    ref = make_dataset(n_lat=9, n_lon=16, n_time=10, levels=LEVELS).drop_vars("toa_incident_solar_radiation")
    cfg = _cfg(write(ref, tmp_path / "era5.zarr"))
    prepare(cfg, WINDOW, progress=False)
    ds = ForecastDataset(cfg, "test")
    lat, lon = ds.latitudes, ds.longitudes
    times = np.array(["2020-08-03T00", "2020-08-03T12", "2020-08-04T06"], dtype="datetime64[ns]")
    f = ds.forcing_at(times).double().numpy()  # the last two need times past the store's end
    torch.testing.assert_close(ds.forcing_at(times[:1])[0], ds[0]["forcing"])
    for k, t in enumerate(times):
        for j, tt in enumerate((t, t + np.timedelta64(6, "h"))):
            want = toa_incident_solar_radiation(np.array([tt]), lat, lon)[0]
            field = ds.to_field(f[k])[j]
            got = ds.normalizer.denormalize_forcing(field[..., None].repeat(3, -1))[..., 0]
            np.testing.assert_allclose(got, want, atol=1e-6 * want.max() + 1.0, err_msg=str(tt))
    assert PreparedStore(prepared_path(cfg)).record["computed_forcings"] == ["toa_incident_solar_radiation"]


def test_splits_and_errors(store, tmp_path):
    cfg, _ = store
    assert len(ForecastDataset(cfg, "val")) == 3 and len(ForecastDataset(cfg, "test")) == 1
    with pytest.raises(DataError, match="split must be"):
        ForecastDataset(cfg, "dev")
    with pytest.raises(DataError, match="dt_hours"):
        ForecastDataset(_cfg(cfg.path, dt_hours=12), "train")
    with pytest.raises(DataError, match="not found"):
        ForecastDataset(_cfg(cfg.path, prepared=str(tmp_path / "none.zarr")), "train")
    with pytest.raises(DataError, match=r"index_map ids must lie in \[0, 128\)"):
        ForecastDataset(cfg, "train", index_map=np.array([[0, 128]]))


def test_reuse_refused_when_config_differs(tmp_path):
    cfg, _ = _build(tmp_path)
    path = prepared_path(cfg)
    stamp = os.stat(os.path.join(path, "zarr.json")).st_mtime_ns
    assert prepare(cfg, WINDOW, progress=False) == Path(path)  # same config: reused, not rebuilt
    assert os.stat(os.path.join(path, "zarr.json")).st_mtime_ns == stamp
    other = _cfg(cfg.path, stats=cfg.path + ".stats.nc", surface=["2m_temperature"])
    with pytest.raises(DataError, match="channels"):
        prepare(other, WINDOW, progress=False)
    with pytest.raises(DataError, match="window"):
        prepare(cfg, (8, 8), progress=False)
    with pytest.raises(DataError, match="channels"):
        ForecastDataset(other, "train")
    prepare(cfg, (8, 8), overwrite=True, progress=False)
    assert PreparedStore(path).window == (8, 8) and PreparedStore(path).tile == (4, 4)
    with pytest.raises(DataError, match="not divisible by the window 6x4"):
        prepare(cfg, (6, 4), overwrite=True, progress=False)


LAYOUTS = [(1, 1, 1), (2, 2, 1), (1, 1, 4), (2, 1, 2), (1, 2, 4), (2, 2, 2)]


def test_rank_sample_is_gather_of_global_sample(store):
    cfg, _ = store
    whole = ForecastDataset(cfg, "train")
    g = whole[1]
    fields = {k: whole.to_field(g[k].numpy()) for k in ("cond", "forcing", "target")}  # (C, H, W)
    for wpy, wpx, sp in LAYOUTS:
        layout = WindowLayout(8, 16, *WINDOW, wpy=wpy, wpx=wpx, sp=sp)
        for frame in (0, 1):
            for r in range(layout.n_ranks):
                ids = layout.index_map(frame, r)
                s = ForecastDataset(cfg, "train", index_map=ids)[1]
                where = f"layout wy{wpy} wx{wpx} sp{sp} frame {frame} rank {r}"
                for k, f in fields.items():
                    want = np.moveaxis(f.reshape(f.shape[0], -1)[:, ids], 0, -1)
                    np.testing.assert_array_equal(s[k].numpy(), want, err_msg=f"{k}: {where}")
                assert int(s["time"]) == int(g["time"])


def test_window_rank_reads_fewer_bytes_than_the_field(tmp_path, make_store):
    path, _ = make_store(tmp_path, n_lat=33, n_lon=64, n_time=6, levels=LEVELS)
    cfg = _cfg(path)
    prepare(cfg, (8, 8), progress=False)

    def bytes_for(ids):
        ds = ForecastDataset(cfg, "train", index_map=ids)
        ds.io.reset()
        ds[0]
        return ds.io.bytes, ds.io.requests

    full_b, full_r = bytes_for(None)
    layout = WindowLayout(32, 64, 8, 8, wpy=2, wpx=2)
    quarter_b, _ = bytes_for(layout.index_map(0, 3))
    assert quarter_b < 0.4 * full_b, (quarter_b, full_b)
    sp4 = WindowLayout(32, 64, 8, 8, sp=4)
    piece_b, _ = bytes_for(sp4.index_map(0, 2))  # one quadrant of every window
    assert piece_b < 0.4 * full_b, (piece_b, full_b)
    # the data bytes of the whole field: 2 times x (6 state + 1 forcing channels) x H x W x 4
    assert full_b >= 2 * 7 * 32 * 64 * 4


def test_dataset_pickles_for_workers(store):
    cfg, _ = store
    ds = ForecastDataset(cfg, "train")
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[2]["target"], ds[2]["target"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch["cond"].shape == (2, 8, 16, 6)


def test_cli_stats_prepare_info(tmp_path, capsys):
    from aeris.cli import main
    ref = make_dataset(n_lat=9, n_lon=16, n_time=10, levels=LEVELS)
    path = write(ref.assign_attrs(description="SYNTHETIC test data"), tmp_path / "era5.zarr")
    ov = [f"data.path={path}", "data.surface=[2m_temperature]", "data.atmospheric=[geopotential]",
          "data.levels=[500]", "data.train_period=[2020-08-01, 2020-08-01T18]",
          "data.val_period=[2020-08-02, 2020-08-02]", "data.test_period=[2020-08-03, 2020-08-03]"]
    assert main(["data", "stats", *ov]) == 0
    out = capsys.readouterr().out
    assert f"{path}.stats.nc" in out and "z500" in out
    assert main(["data", "prepare", "--window", "4x8", *ov]) == 0
    assert "grid 8x16, window 4x8, chunk tile 2x4" in capsys.readouterr().out
    assert main(["data", "prepare", "--window", "4", *ov]) == 1  # another window: refused
    assert "window" in capsys.readouterr().err
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic: yes" in out and "grid: 9 x 16" in out and "levels [hPa]: [500, 850]" in out
    assert main(["data", "info", str(tmp_path / "era5.prepared.zarr")]) == 0
    assert "channels (2): t2m z500" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "missing.zarr")]) == 1
    assert main(["data"]) == 2


def test_raw_shards_match_zarr_and_compressed_store(tmp_path):
    """Our directly written shards read back through zarr equal zarr's own (zstd) store, and the
    byte-range fast path gives the same samples as zarr's reader for several layouts."""
    ref = make_dataset(n_lat=9, n_lon=16, n_time=6, levels=LEVELS)
    path = write(ref, tmp_path / "era5.zarr")
    raw_cfg = _cfg(path, prepared=str(tmp_path / "raw.zarr"))
    z_cfg = _cfg(path, prepared=str(tmp_path / "zstd.zarr"))
    prepare(raw_cfg, WINDOW, progress=False)
    prepare(z_cfg, WINDOW, compressor="zstd", progress=False)
    a, b = PreparedStore(raw_cfg.prepared), PreparedStore(z_cfg.prepared)
    assert a.raw_layout("state") and a.raw_layout("static") and not b.raw_layout("state")
    for name in ("state", "forcing", "static"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)
    for wpy, wpx, sp in [(1, 1, 1), (2, 2, 1), (1, 2, 4)]:
        layout = WindowLayout(8, 16, *WINDOW, wpy=wpy, wpx=wpx, sp=sp)
        for frame in (0, 1):
            ids = layout.index_map(frame, layout.n_ranks - 1)
            sa = ForecastDataset(raw_cfg, "train", index_map=ids)[1]
            sb = ForecastDataset(z_cfg, "train", index_map=ids)[1]
            for k in ("cond", "forcing", "target"):
                torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


def test_loader_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("loader_bench", REPO / "benchmarks" / "loader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_layout("wy2xwx2") == (2, 2, 1) and bench.parse_layout("wy2xsp2") == (2, 1, 2)
    out = tmp_path / "loader.json"
    assert bench.main(["--lat", "17", "--lon", "32", "--times", "3", "--levels", "500", "--window", "8x8",
                       "--samples", "1", "--layouts", "serial", "wy2xwx2", "--workdir", str(tmp_path / "w"),
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["grid"] == [16, 32] and len(res["layouts"]["wy2xwx2"]["ranks"]) == 4
    assert res["layouts"]["wy2xwx2"]["bytes_fraction_of_serial"] < 0.5


def test_split_reaching_outside_the_prepared_periods_is_refused(store):
    """Widening a split after `prepare` must not silently drop the times the store lacks."""
    cfg, _ = store
    wider = DataConfig(**{**cfg.__dict__, "test_period": ["2020-08-03", "2020-08-05"]})
    with pytest.raises(DataError, match="reaches outside the periods"):
        ForecastDataset(wider, "test")
    inside = DataConfig(**{**cfg.__dict__, "val_period": ["2020-08-02T06", "2020-08-02T18"]})
    assert len(ForecastDataset(inside, "val")) == 2   # narrowing is fine


def test_period_needs_full_dates():
    from aeris.data.store import period_bounds, select_period
    t = np.array(["2020-09-30T18"], dtype="datetime64[ns]")
    assert select_period(t, ["2020-09-01", "2020-09-30"]).all()      # a date end = the whole day
    with pytest.raises(DataError, match="full dates"):
        period_bounds(["2020-09-01", "2020-09"])

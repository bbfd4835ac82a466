"""Skill metrics against hand computations and independent libraries (properscoring, scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import properscoring
import pytest
import xarray as xr
from scores.continuous import mse as scores_mse
from scores.probability import crps_for_ensemble

from aeris.evaluate import metrics as M


def grid(values: np.ndarray, lat, lon=None, **extra) -> xr.DataArray:
    """DataArray (*extra dims, latitude, longitude) with the given coordinates."""
    lon = np.arange(values.shape[-1]) * 360.0 / values.shape[-1] if lon is None else lon
    dims = list(extra) + [M.LAT, M.LON]
    coords = {**extra, M.LAT: np.asarray(lat, float), M.LON: lon}
    return xr.DataArray(values, dims=dims, coords=coords)


# ---- weights ----------------------------------------------------------------------------------
def test_area_weights_cosine_mean_one_and_zero_at_poles():
    w = M.area_weights([90.0, 60.0, 0.0, -60.0, -90.0])
    # cos = 0, .5, 1, .5, 0 -> mean .4 -> 0, 1.25, 2.5, 1.25, 0
    np.testing.assert_allclose(w.values, [0.0, 1.25, 2.5, 1.25, 0.0], atol=1e-12)
    assert w.dims == (M.LAT,)


def test_area_weights_bad_input():
    with pytest.raises(ValueError, match="outside"):
        M.area_weights([100.0, 0.0])
    with pytest.raises(ValueError, match="poles"):
        M.area_weights([90.0, -90.0])


# ---- RMSE -------------------------------------------------------------------------------------
def test_rmse_hand_computation_mse_averaged_before_root():
    lat = [60.0, 0.0, -60.0]  # cos .5 1 .5 -> weights .75 1.5 .75
    err = np.zeros((2, 3, 2))
    err[0] = [[2, 2], [0, 0], [0, 0]]  # t0: mean(w e^2) = (.75*4*2)/6 = 1
    err[1] = [[0, 0], [2, 0], [0, 0]]  # t1: (1.5*4)/6 = 1 ... make it different:
    err[1, 1, 1] = 4                   # t1: 1.5*(4+16)/6 = 5
    truth = grid(np.random.default_rng(0).normal(size=(2, 3, 2)), lat, time=[0, 1])
    fc = truth + err
    np.testing.assert_allclose(M.mse(fc, truth).values, [1.0, 5.0])
    assert float(M.rmse(fc, truth)) == pytest.approx(np.sqrt(3.0))  # not (1 + sqrt 5) / 2
    # independent: `scores` weighted MSE over all dims (equal weight per time) = mean_t <e^2>
    w = M.area_weights(lat)
    ref = np.sqrt(float(scores_mse(fc, truth, weights=w.broadcast_like(truth), reduce_dims="all")))
    assert float(M.rmse(fc, truth)) == pytest.approx(ref, rel=1e-12)
    # without a time dim: the RMSE of one field
    assert float(M.rmse(fc.isel(time=1), truth.isel(time=1))) == pytest.approx(np.sqrt(5.0))


def test_ensemble_mean_rmse():
    lat = [30.0, -30.0]
    truth = grid(np.zeros((1, 2, 4)), lat, time=[0])
    members = xr.concat([truth + 1.0, truth + 3.0, truth - 1.0], dim="number")  # mean +1
    assert float(M.ensemble_mean_rmse(members, truth)) == pytest.approx(1.0)
    assert float(M.rmse(members.isel(number=1), truth)) == pytest.approx(3.0)


# ---- CRPS -------------------------------------------------------------------------------------
def crps_bruteforce(x: np.ndarray, y: np.ndarray, fair: bool) -> np.ndarray:
    m = x.shape[0]
    skill = np.abs(x - y).mean(0)
    pairs = np.abs(x[:, None] - x[None, :]).sum((0, 1))
    return skill - pairs / (2 * (m * (m - 1) if fair else m * m))


@pytest.mark.parametrize("m", [2, 7, 50])
def test_crps_numpy_core_matches_bruteforce_and_properscoring(m):
    rng = np.random.default_rng(m)
    x = rng.gamma(2.0, size=(m, 6, 5)) * rng.choice([-1, 1], size=(m, 6, 5))
    y = rng.normal(size=(6, 5))
    np.testing.assert_allclose(M.crps_ensemble(x, y, fair=True), crps_bruteforce(x, y, True), atol=1e-12)
    np.testing.assert_allclose(M.crps_ensemble(x, y, fair=False), crps_bruteforce(x, y, False), atol=1e-12)
    ref = properscoring.crps_ensemble(y, np.moveaxis(x, 0, -1))
    np.testing.assert_allclose(M.crps_ensemble(x, y, fair=False), ref, atol=1e-6)
    # members along another axis
    np.testing.assert_allclose(M.crps_ensemble(np.moveaxis(x, 0, 2), y, axis=2), crps_bruteforce(x, y, True),
                               atol=1e-12)


@pytest.mark.parametrize("method", ["fair", "ecdf"])
def test_crps_xarray_matches_scores(method):
    rng = np.random.default_rng(3)
    lat = np.linspace(80, -80, 5)
    truth = grid(rng.normal(size=(3, 5, 8)), lat, time=pd.date_range("2020-01-01", periods=3, freq="6h"))
    fc = grid(rng.normal(size=(10, 3, 5, 8)) * 1.3 + 0.2, lat, number=np.arange(10),
              time=truth.time.values)
    fn = M.crps_fair if method == "fair" else M.crps_ecdf
    pointwise = fn(fc, truth)
    ref = crps_for_ensemble(fc, truth, "number", method=method, preserve_dims="all")
    np.testing.assert_allclose(pointwise.transpose(*ref.dims).values, ref.values, atol=1e-6)
    w = M.area_weights(lat)
    ref_mean = crps_for_ensemble(fc, truth, "number", method=method, reduce_dims="all",
                                 weights=w.broadcast_like(truth))
    assert float(M.crps_score(fc, truth, method=method)) == pytest.approx(float(ref_mean), abs=1e-6)


def test_crps_edge_cases():
    x = np.array([[1.0], [1.0], [1.0]])
    assert M.crps_ensemble(x, np.array([3.0]))[0] == pytest.approx(2.0)  # point mass: |x - y|
    assert np.isnan(M.crps_ensemble(x[:1], np.array([0.0]), fair=True)[0])  # M = 1: undefined
    assert M.crps_ensemble(x[:1], np.array([0.0]), fair=False)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        M.crps_score(grid(np.zeros((2, 1, 2)), [0.0], number=[0, 1]), grid(np.zeros((1, 2)), [0.0]),
                     method="bogus")


# ---- spread / skill ----------------------------------------------------------------------------
def test_ssr_hand_case():
    truth = grid(np.zeros((1, 1)), [0.0])
    fc = grid(np.array([[[1.0]], [[3.0]]]), [0.0], number=[0, 1])
    # mean 2 -> rmse 2; unbiased var 2 -> spread sqrt 2
    assert float(M.ensemble_spread(fc)) == pytest.approx(np.sqrt(2))
    assert float(M.spread_skill_ratio(fc, truth)) == pytest.approx(np.sqrt(2) / 2)
    assert float(M.spread_skill_ratio(fc, truth, finite_ensemble_correction=True)) == pytest.approx(
        np.sqrt(3) / 2)
    with pytest.raises(ValueError, match=">= 2 members"):
        M.ensemble_variance(fc.isel(number=[0]))


def test_ssr_calibrated_ensemble_is_one():
    rng = np.random.default_rng(11)
    m, nt, nlat, nlon = 5, 120, 12, 24
    lat = np.linspace(85, -85, nlat)
    mu = rng.normal(size=(nt, nlat, nlon)) * 10
    sigma = 0.5 + np.abs(np.cos(np.deg2rad(lat)))[:, None]  # spread varies with latitude
    truth = grid(mu + sigma * rng.normal(size=mu.shape), lat, time=np.arange(nt))
    fc = grid(mu + sigma * rng.normal(size=(m,) + mu.shape), lat, number=np.arange(m), time=np.arange(nt))
    raw = float(M.spread_skill_ratio(fc, truth))
    corrected = float(M.spread_skill_ratio(fc, truth, finite_ensemble_correction=True))
    assert corrected == pytest.approx(1.0, rel=0.05)
    assert raw == pytest.approx(np.sqrt(m / (m + 1)), rel=0.05)
    # an under-dispersive ensemble (half the spread) is detected
    narrow = grid(mu + 0.5 * sigma * rng.normal(size=(m,) + mu.shape), lat, number=np.arange(m),
                  time=np.arange(nt))
    assert float(M.spread_skill_ratio(narrow, truth, finite_ensemble_correction=True)) < 0.7


# ---- climatology and ACC -----------------------------------------------------------------------
def test_acc_perfect_negated_and_time_mean():
    rng = np.random.default_rng(5)
    lat = np.linspace(60, -60, 5)
    clim = grid(rng.normal(size=(2, 5, 8)), lat, time=[0, 1])
    truth = clim + grid(rng.normal(size=(2, 5, 8)), lat, time=[0, 1])
    assert float(M.acc(truth, truth, clim)) == pytest.approx(1.0)
    assert float(M.acc(2 * clim - truth, truth, clim)) == pytest.approx(-1.0)
    mixed = xr.concat([truth.isel(time=0), (2 * clim - truth).isel(time=1)], dim="time")
    np.testing.assert_allclose(M.acc(mixed, truth, clim, time_dim=None).values, [1.0, -1.0])
    assert float(M.acc(mixed, truth, clim)) == pytest.approx(0.0, abs=1e-12)
    # scale-invariant, and a hand value: f' = y' + orthogonal part of equal norm -> 1/sqrt(2)
    assert float(M.acc(clim + 3 * (truth - clim), truth, clim)) == pytest.approx(1.0)
    ya = np.zeros((1, 5, 8))
    fa = np.zeros((1, 5, 8))
    ya[0, 2, 0], fa[0, 2, 0], fa[0, 2, 1] = 1.0, 1.0, 1.0  # same row: same weight
    zero = grid(np.zeros((1, 5, 8)), lat, time=[0])
    assert float(M.acc(zero + fa, zero + ya, zero)) == pytest.approx(1 / np.sqrt(2))


def _daily_store(times: pd.DatetimeIndex, values: np.ndarray) -> xr.Dataset:
    lat, lon = [45.0, -45.0], [0.0, 180.0]
    return xr.Dataset({"2m_temperature": (("time", M.LAT, M.LON), values)},
                      coords={"time": times, M.LAT: lat, M.LON: lon})


def test_climatology_unsmoothed_is_mean_over_years_per_doy_and_hour():
    times = pd.DatetimeIndex(["2019-03-01T00", "2019-03-01T12", "2021-03-01T00", "2021-03-01T12",
                              "2021-03-02T00"])
    vals = np.array([1.0, 10.0, 3.0, 20.0, 100.0])[:, None, None] * np.ones((1, 2, 2))
    clim = M.compute_climatology(_daily_store(times, vals), window_days=1)["2m_temperature"]
    assert clim.dims == ("dayofyear", "hour", M.LAT, M.LON)
    assert clim.dayofyear.values.tolist() == [60, 61] and clim.hour.values.tolist() == [0, 12]
    assert float(clim.sel(dayofyear=60, hour=0)[0, 0]) == pytest.approx(2.0)
    assert float(clim.sel(dayofyear=60, hour=12)[0, 0]) == pytest.approx(15.0)
    assert float(clim.sel(dayofyear=61, hour=0)[0, 0]) == pytest.approx(100.0)
    assert np.isnan(float(clim.sel(dayofyear=61, hour=12)[0, 0]))  # no sample at that hour
    # period restricts the samples (end date inclusive of the whole day)
    only19 = M.compute_climatology(_daily_store(times, vals), ("2019-01-01", "2019-03-01"), window_days=1)
    assert float(only19["2m_temperature"].sel(dayofyear=60, hour=12)[0, 0]) == pytest.approx(10.0)


def test_climatology_window_wraps_around_the_year():
    times = pd.DatetimeIndex(["2021-12-31T00", "2022-01-01T00", "2022-01-03T00"])  # doy 365, 1, 3
    vals = np.array([1.0, 2.0, 4.0])[:, None, None] * np.ones((1, 2, 2))
    clim = M.compute_climatology(_daily_store(times, vals), window_days=3)["2m_temperature"]
    # doy 1 window {366, 1, 2}: only the Jan 1 sample; doy 366 window {365, 366, 1}: 1 and 2
    assert float(clim.sel(dayofyear=1, hour=0)[0, 0]) == pytest.approx(2.0)
    assert float(clim.sel(dayofyear=366, hour=0)[0, 0]) == pytest.approx(1.5)
    assert float(clim.sel(dayofyear=2, hour=0)[0, 0]) == pytest.approx(3.0)  # {1, 2, 3}
    assert float(clim.sel(dayofyear=364, hour=0)[0, 0]) == pytest.approx(1.0)
    assert 10 not in clim.dayofyear.values  # no sample within a day of doy 10
    # lookup by valid time; a day of year outside the climatology gives NaN
    vt = xr.DataArray(pd.DatetimeIndex(["2023-01-02", "2023-12-31", "2023-06-01"]).values, dims=["time"])
    at = M.climatology_at(clim, vt)
    np.testing.assert_allclose(at[:, 0, 0].values, [3.0, 1.0, np.nan])  # 2023-12-31 is doy 365
    with pytest.raises(ValueError, match="hour"):
        M.climatology_at(clim, xr.DataArray(pd.DatetimeIndex(["2023-01-02T06"]).values, dims=["time"]))


def test_climatology_errors():
    ds = _daily_store(pd.DatetimeIndex(["2020-01-01"]), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="no truth times in period"):
        M.compute_climatology(ds, ("2021-01-01", "2021-02-01"))
    with pytest.raises(ValueError, match="odd"):
        M.compute_climatology(ds, window_days=4)


def test_mae_is_the_crps_of_a_point_forecast():
    lat = [60.0, 0.0]
    y = grid(np.array([[[1.0, -2.0], [0.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]]), lat, lon=[0.0, 180.0], time=[0, 1])
    f = y * 0 + 1.0
    w = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    err = np.abs(f.values - y.values)
    want = np.mean([(w[:, None] * err[t]).mean() for t in range(2)])
    assert float(M.mae(f, y)) == pytest.approx(want)
    point = M.crps_ensemble(f.values[None], y.values, fair=False)  # one member, ecdf form
    assert float((point * w[None, :, None]).mean()) == pytest.approx(want)


def test_hour_climatology_is_the_mean_per_hour_of_day():
    times = pd.DatetimeIndex(["2020-08-01T00", "2020-08-01T12", "2020-08-02T00", "2020-09-20T00",
                              "2020-09-20T12"])
    vals = np.array([1.0, 10.0, 3.0, 8.0, 20.0])[:, None, None] * np.ones((1, 2, 2))
    clim = M.compute_climatology(_daily_store(times, vals), kind="hour")["2m_temperature"]
    assert clim.dims == ("hour", M.LAT, M.LON)
    np.testing.assert_allclose(clim[:, 0, 0].values, [(1 + 3 + 8) / 3, 15.0])
    vt = xr.DataArray(pd.DatetimeIndex(["2021-01-05T12", "2019-07-01T00"]).values, dims=["time"])
    np.testing.assert_allclose(M.climatology_at(clim, vt)[:, 1, 1].values, [15.0, 4.0])
    ds = M.compute_climatology(_daily_store(times, vals), ("2020-08-01", "2020-08-01"), kind="hour")
    assert ds.attrs["climatology_kind"] == "hour" and ds.attrs["climatology_years"] == 1
    assert "climatology_window_days" not in ds.attrs
    with pytest.raises(ValueError, match="kind"):
        M.compute_climatology(_daily_store(times, vals), kind="month")


def test_climatology_years_and_the_kind_rule():
    def six_hourly(years, start="08-01", end="09-30T18"):
        return pd.DatetimeIndex(np.concatenate([pd.date_range(f"{y}-{start}", f"{y}-{end}", freq="6h")
                                                for y in years]))
    three = six_hourly([2018, 2019, 2020])
    n = M.climatology_years(three, window_days=61)
    assert n.hour.values.tolist() == [0, 6, 12, 18]
    aug15 = pd.Timestamp("2020-08-15").day_of_year
    assert int(n.sel(dayofyear=aug15, hour=6)) == 3
    assert int(n.sel(dayofyear=aug15 - 60, hour=6)) == 0  # mid June: 46 days before the first sample
    assert int(n.sel(dayofyear=pd.Timestamp("2020-07-10").day_of_year, hour=0)) == 3  # window reaches Aug 1
    valid = pd.date_range("2021-08-20", "2021-08-25", freq="6h")
    assert M.choose_climatology_kind(three, valid) == "doy_hour"
    assert M.choose_climatology_kind(three, valid, min_years=4) == "hour"
    assert M.choose_climatology_kind(six_hourly([2019, 2020]), valid) == "hour"
    # one bin short: December valid times are far from an Aug-Sep period
    assert M.choose_climatology_kind(three, valid.append(pd.DatetimeIndex(["2021-12-20"]))) == "hour"
    # a narrow window sees only the same calendar days
    assert M.choose_climatology_kind(three, pd.DatetimeIndex(["2021-10-05"]), window_days=9) == "hour"
    assert M.choose_climatology_kind(three, pd.DatetimeIndex(["2021-10-03"]), window_days=9) == "doy_hour"


# ---- spectra ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_lon", [32, 33])
def test_zonal_spectrum_parseval(n_lon):
    rng = np.random.default_rng(n_lon)
    x = grid(rng.normal(size=(2, 4, n_lon)) + 3.0, np.linspace(60, -60, 4), time=[0, 1])
    p = M.zonal_power_spectrum(x)
    assert p.sizes["zonal_wavenumber"] == n_lon // 2 + 1
    np.testing.assert_allclose(p.sum("zonal_wavenumber").values, (x ** 2).mean(M.LON).values, rtol=1e-12)
    mean = M.mean_zonal_spectrum(x)
    assert mean.dims == ("zonal_wavenumber",)
    assert float(mean.sum()) == pytest.approx(float((x ** 2).mean()), rel=1e-12)


def test_zonal_spectrum_sine_peaks_at_its_wavenumber():
    n, k0, amp = 64, 5, 2.5
    lon = np.arange(n) * 360.0 / n
    wave = amp * np.sin(k0 * np.deg2rad(lon) + 0.3) + 1.0
    x = grid(np.tile(wave, (3, 1)), [30.0, 0.0, -30.0], lon=lon)
    p = M.mean_zonal_spectrum(x)
    assert int(p.argmax("zonal_wavenumber")) == k0
    assert float(p.sel(zonal_wavenumber=k0)) == pytest.approx(amp ** 2 / 2)
    assert float(p.sel(zonal_wavenumber=0)) == pytest.approx(1.0)
    others = p.drop_sel(zonal_wavenumber=[0, k0])
    assert float(others.max()) < 1e-20
    # Nyquist wavenumber is not doubled: (-1)^n has power 1 = its mean square
    nyq = M.zonal_power_spectrum(grid(np.tile((-1.0) ** np.arange(n), (1, 1)), [0.0], lon=lon))
    assert float(nyq.sel(zonal_wavenumber=n // 2).squeeze()) == pytest.approx(1.0)
    band = M.mean_zonal_spectrum(x, lat_band=(10, 40))
    np.testing.assert_allclose(band.values, p.values, atol=1e-12)
    with pytest.raises(ValueError, match="band"):
        M.mean_zonal_spectrum(x, lat_band=(50, 60))

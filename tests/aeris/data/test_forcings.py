"""TOA insolation against analytic results and independent formulas; static fields."""

import numpy as np
import pytest

from aeris.data.forcings import (
    GRAVITY, SOLAR_CONSTANT, daily_mean_insolation, instantaneous_toa_flux, land_sea_mask,
    solar_position, surface_geopotential, toa_incident_solar_radiation,
)

S0 = SOLAR_CONSTANT


def _t(*s):
    return np.array(s, dtype="datetime64[ns]")


def _spencer(times):
    """Spencer (1971) Fourier series: declination (rad), equation of time (min), (r0/r)^2."""
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int)
    hours = (times - times.astype("datetime64[D]")).astype("timedelta64[s]").astype(float) / 3600
    g = 2 * np.pi / 365 * (doy + (hours - 12) / 24)
    dec = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
           + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    eot = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g)
                    - 0.014615 * np.cos(2 * g) - 0.040849 * np.sin(2 * g))
    dist2 = (1.000110 + 0.034221 * np.cos(g) + 0.001280 * np.sin(g) + 0.000719 * np.cos(2 * g)
             + 0.000077 * np.sin(2 * g))
    return dec, eot, dist2


def test_solar_geometry_matches_spencer_series():
    times = np.datetime64("2020-01-01T12", "ns") + np.arange(0, 366, 7) * np.timedelta64(1, "D")
    pos = solar_position(times)
    dec, eot, dist2 = _spencer(times)
    assert np.max(np.abs(np.rad2deg(pos["declination"] - dec))) < 0.3
    assert np.max(np.abs(pos["equation_of_time_min"] - eot)) < 0.8
    assert np.max(np.abs(1 / pos["distance_au"] ** 2 - dist2)) < 1e-3


def test_zero_at_night_and_in_polar_night():
    # midnight UTC at (0N, 0E) around the equinox: the sun is ~180 deg away
    assert instantaneous_toa_flux(_t("2020-03-20T00:00"), [0.0], [0.0])[0, 0, 0] == 0.0
    acc = toa_incident_solar_radiation(_t("2020-03-20T00:00"), [0.0], [0.0])
    assert acc[0, 0, 0] == 0.0
    # north pole in December: dark all day, whatever the longitude
    day = np.datetime64("2020-12-21T00", "ns") + np.arange(24) * np.timedelta64(1, "h")
    assert np.all(toa_incident_solar_radiation(day, [90.0, 85.0], [0.0, 120.0, 240.0]) == 0.0)
    assert daily_mean_insolation(day[:1], [90.0])[0, 0] == 0.0


def test_peak_is_solar_constant_at_subsolar_point():
    lat = np.linspace(-30, 30, 241)
    lon = np.arange(0, 360, 0.25)
    for when in ("2020-01-04T06:00", "2020-07-04T18:00"):
        t = _t(when)
        f = instantaneous_toa_flux(t, lat, lon)[0]
        r = solar_position(t)["distance_au"][0]
        assert f.max() == pytest.approx(S0 / r**2, rel=2e-4)
        iy, ix = np.unravel_index(np.argmax(f), f.shape)
        dec = np.rad2deg(solar_position(t)["declination"][0])
        assert abs(lat[iy] - dec) <= 0.25
        # subsolar longitude: where local solar time is noon = 180 - 15 * UTC hour - EoT/4
        hour = (t - t.astype("datetime64[D]")).astype("timedelta64[m]").astype(float)[0] / 60
        eot = solar_position(t)["equation_of_time_min"][0]
        expect = np.mod(180.0 - 15.0 * hour - eot / 4.0, 360.0)
        dlon = abs((lon[ix] - expect + 180) % 360 - 180)
        assert dlon <= 0.3
    # perihelion (early January) is ~6.9 % brighter than aphelion (early July)
    jan = instantaneous_toa_flux(_t("2020-01-04T12:00"), lat, lon).max()
    jul = instantaneous_toa_flux(_t("2020-07-04T12:00"), lat, lon).max()
    assert jan / jul == pytest.approx((1.0167 / 0.9833) ** 2, rel=2e-3)


def test_daily_means_seasonal_cycle():
    # equator at equinox: S0 / (pi R^2) (~433 W m-2 at 1 AU)
    day = np.datetime64("2020-03-20T01", "ns") + np.arange(24) * np.timedelta64(1, "h")
    acc = toa_incident_solar_radiation(day, [0.0], [0.0, 90.0, 200.0])
    mean = acc.sum(axis=0) / 86400.0
    r = solar_position(day[12:13])["distance_au"][0]
    assert np.allclose(mean, S0 / (np.pi * r**2), rtol=3e-3)
    assert 425 < mean.min() and mean.max() < 440
    # north pole at June solstice: S0 sin(23.44 deg) / R^2 ~ 524 W m-2
    day = np.datetime64("2020-06-20T13", "ns") + np.arange(24) * np.timedelta64(1, "h")
    pole = toa_incident_solar_radiation(day, [90.0], [0.0]).sum() / 86400.0
    assert 518 < pole < 530
    assert daily_mean_insolation(day[:1], [90.0])[0, 0] == pytest.approx(pole, rel=2e-3)
    # the analytic daily mean equals the mean of 24 hourly accumulations everywhere
    lat = np.linspace(90, -90, 37)
    for start in ("2020-02-10T01", "2020-08-15T01", "2020-11-01T01"):
        day = np.datetime64(start, "ns") + np.arange(24) * np.timedelta64(1, "h")
        acc = toa_incident_solar_radiation(day, lat, [10.0]).sum(axis=0)[:, 0] / 86400.0
        mid = daily_mean_insolation(day[11:12], lat)[0]
        assert np.max(np.abs(acc - mid)) < 2.0


def test_accumulation_is_integral_of_flux_over_previous_hour():
    times = _t("2020-03-20T06:30", "2020-06-21T12:00", "2020-09-01T19:00", "2020-12-21T05:00")
    lat = np.linspace(89, -89, 19)
    lon = np.arange(0, 360, 20.0)
    acc = toa_incident_solar_radiation(times, lat, lon)
    fine = np.arange(0, 3601, 30)  # seconds; 30 s trapezoid
    ref = np.zeros_like(acc)
    fwd = np.zeros_like(acc)
    for i, t in enumerate(times):
        back = t - np.timedelta64(3600, "s") + fine * np.timedelta64(1, "s")
        ref[i] = np.trapezoid(instantaneous_toa_flux(back, lat, lon), fine, axis=0)
        ahead = t + fine * np.timedelta64(1, "s")
        fwd[i] = np.trapezoid(instantaneous_toa_flux(ahead, lat, lon), fine, axis=0)
    scale = S0 * 3600
    assert np.max(np.abs(acc - ref)) < 1e-4 * scale
    assert np.max(np.abs(acc - fwd)) > 0.05 * scale  # the window ENDS at the valid time
    # the numerical mode agrees, and a 6 h accumulation is the sum of six 1 h ones
    mid = toa_incident_solar_radiation(times, lat, lon, n_substeps=60)
    assert np.max(np.abs(mid - ref)) < 1e-4 * scale
    six = toa_incident_solar_radiation(times, lat, lon, accumulation_hours=6)
    hours = sum(toa_incident_solar_radiation(times - k * np.timedelta64(1, "h"), lat, lon)
                for k in range(6))
    assert np.allclose(six, hours, rtol=1e-9, atol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="lat"):
        instantaneous_toa_flux(_t("2020-01-01"), [95.0], [0.0])
    with pytest.raises(TypeError, match="datetime64"):
        toa_incident_solar_radiation(np.array([1.5, 2.5]), [0.0], [0.0])
    with pytest.raises(ValueError, match="accumulation_hours"):
        toa_incident_solar_radiation(_t("2020-01-01"), [0.0], [0.0], accumulation_hours=0)


def _grid():
    return np.linspace(90, -90, 65), np.arange(128) * 360 / 128


def test_land_sea_mask_known_places_and_land_fraction():
    lat, lon = _grid()
    lsm = land_sea_mask(lat, lon)
    assert lsm.shape == (65, 128) and lsm.min() >= 0 and lsm.max() <= 1

    def at(la, lo):
        return lsm[np.argmin(abs(lat - la)), np.argmin(abs((lon - lo + 180) % 360 - 180))]

    assert at(0.0, 22.5) == 1.0      # Congo basin
    assert at(39.4, 258.75) == 1.0   # Colorado
    assert at(-87.2, 45.0) == 1.0    # Antarctica
    assert at(0.0, 180.0) == 0.0     # central Pacific
    assert at(90.0, 0.0) == 0.0      # Arctic ocean
    assert at(-30.9, 340.0) == 0.0   # South Atlantic
    w = np.cos(np.deg2rad(lat))[:, None] * np.ones_like(lsm)
    assert 0.26 < (lsm * w).sum() / w.sum() < 0.31  # Earth is ~29 % land


def test_surface_geopotential_is_plausible():
    lat, lon = _grid()
    lsm = land_sea_mask(lat, lon)
    zs = surface_geopotential(lat, lon, lsm)
    assert np.all(zs[lsm == 0] == 0) and zs.min() >= 0
    assert zs.max() <= 6000 * GRAVITY and zs.max() > 4000 * GRAVITY
    tibet = zs[np.argmin(abs(lat - 33)), np.argmin(abs(lon - 87))]
    amazon = zs[np.argmin(abs(lat + 3)), np.argmin(abs(lon - 300))]
    assert tibet > 3500 * GRAVITY and amazon < 800 * GRAVITY
    with pytest.raises(ValueError, match="lsm shape"):
        surface_geopotential(lat, lon, lsm[:-1])

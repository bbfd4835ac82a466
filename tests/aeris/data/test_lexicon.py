"""Variable lexicon: aliases, channel names and their inverse."""

import pytest

from aeris.data import lexicon as lx


@pytest.mark.parametrize("alias, name", [
    ("z", "geopotential"), ("t", "temperature"), ("u", "u_component_of_wind"),
    ("v", "v_component_of_wind"), ("q", "specific_humidity"), ("msl", "mean_sea_level_pressure"),
    ("t2m", "2m_temperature"), ("2t", "2m_temperature"), ("u10", "10m_u_component_of_wind"),
    ("v10", "10m_v_component_of_wind"), ("sst", "sea_surface_temperature"),
    ("tisr", "toa_incident_solar_radiation"), ("lsm", "land_sea_mask"),
    ("Geopotential", "geopotential"), ("2m_temperature", "2m_temperature"),
])
def test_aliases(alias, name):
    assert lx.canonical_name(alias) == name


def test_unknown_variable_is_a_clear_error():
    with pytest.raises(lx.LexiconError, match="unknown variable 'vorticity'"):
        lx.canonical_name("vorticity")


def test_channel_names_roundtrip_and_order():
    ch = lx.channel_names(["2m_temperature", "msl"], ["z", "t"], [500, 850])
    assert ch == ["t2m", "msl", "z500", "z850", "t500", "t850"]
    for c in ch:
        var, lev = lx.parse_channel(c)
        assert lx.channel_name(var, lev) == c


def test_aeris_69_channels():
    surface = ["2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
               "mean_sea_level_pressure"]
    atmos = ["geopotential", "u_component_of_wind", "v_component_of_wind", "temperature",
             "specific_humidity"]
    assert len(lx.channel_names(surface, atmos, lx.WB2_LEVELS)) == 69


def test_level_errors():
    with pytest.raises(lx.LexiconError, match="needs a level"):
        lx.channel_name("geopotential")
    with pytest.raises(lx.LexiconError, match="has no level"):
        lx.channel_name("2m_temperature", 500)
    with pytest.raises(lx.LexiconError, match="cannot parse"):
        lx.parse_channel("t2m500")
    with pytest.raises(lx.LexiconError, match="duplicate"):
        lx.channel_names(["t2m", "2m_temperature"], [], [])

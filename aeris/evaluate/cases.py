"""Reference cases of the demo and the notebooks (docs/evaluation.md, "Hurricane Laura reference case").

Plain constants, so that the CLI can name them without loading the evaluation stack.
"""

from __future__ import annotations

__all__ = ["LAURA_SID", "LAURA_INITS", "LAURA_TRACK_INIT"]

LAURA_SID = "2020233N14313"   # IBTrACS SID of Hurricane Laura 2020 (AL132020)
# 7, 5 and 3 days before 2020-08-28 00Z, the day after Laura's landfall in Louisiana
LAURA_INITS = ("2020-08-21T00:00", "2020-08-23T00:00", "2020-08-25T00:00")
LAURA_TRACK_INIT = "2020-08-25T00:00"   # the init of the track target (docs/evaluation.md, "Demo targets")

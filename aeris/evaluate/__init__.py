"""aeris.evaluate: ensemble skill scores, climatology, spectra, cyclone tracks.

`evaluate` (aeris.evaluate.skill) and `compute_climatology` (aeris.evaluate.metrics) are
re-exported lazily, so that importing the package (e.g. for its config section) stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["evaluate", "compute_climatology"]

_LAZY = {"evaluate": "aeris.evaluate.skill", "compute_climatology": "aeris.evaluate.metrics"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aeris.evaluate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Documented config fields: ``x: int = doc(10, "what x means")``.

The one-line doc is kept in the field's metadata (``metadata["doc"]``), where `aeris config
show` and the tests read it. Standard library only, so every section module stays cheap to
import.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

__all__ = ["doc", "field_doc"]

_MUTABLE = (list, dict, set)


def doc(default: Any = dataclasses.MISSING, text: str = "", *,
        factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with a default (or a zero-argument `factory`) and its one-line doc.

    A list, dict or set default is deep-copied for each instance, so ``doc([1, 2], "...")`` is
    safe. Exactly one of `default` and `factory`, and a non-empty `text`, are required.
    """
    if not text.strip():
        raise ValueError("a config field needs a non-empty doc")
    if (default is dataclasses.MISSING) == (factory is None):
        raise ValueError(f"give exactly one of default and factory (field {text!r})")
    meta = {"doc": text.strip()}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, _MUTABLE):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_doc(f: dataclasses.Field) -> str:
    """The doc of a dataclass field ("" when it has none)."""
    return f.metadata.get("doc", "")

"""The TempestExtremes command language of the tracker: variable expressions, closed-contour,
output and threshold commands (pure parsing, no fields).

Variables are written as in TempestExtremes commands: ``MSL``, ``U10``, ``V10``,
``Z(300hPa)``, ``T(500hPa)`` (any lexicon short name, with the level in hPa), channel names
such as ``z500``, and ``ZS`` = surface height in metres (geopotential_at_surface / 9.80665).
Operators: ``_DIFF(a,b)`` = a - b, ``_SUM(a,b)``, ``_VECMAG(a,b)`` = sqrt(a^2 + b^2), ``_ABS(a)``.
Used by `aeris.evaluate.config` (commands are checked when a config is built) and by the
tracker (`aeris.evaluate.tracker`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from aeris.data.lexicon import LexiconError, canonical_name, lookup, parse_channel

__all__ = ["G0", "TrackerError", "Leaf", "Expr", "parse_expr", "ClosedContour", "OutputSpec", "Threshold",
           "parse_closed_contours", "parse_outputs", "parse_thresholds", "COMPARISONS"]

G0 = 9.80665  # standard gravity, m s-2 (surface height = surface geopotential / G0)


class TrackerError(ValueError):
    """Bad tracker input: unknown variable, missing field, malformed command."""


# ---- variable expressions --------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """One stored field: canonical variable name, pressure level (hPa) or None, scale factor."""

    name: str
    level: int | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class Expr:
    """A variable expression tree: a Leaf, or an operator applied to sub-expressions."""

    op: str                      # "leaf" | "_DIFF" | "_SUM" | "_VECMAG" | "_ABS"
    args: tuple = ()
    leaf: Leaf | None = None

    def leaves(self) -> set[Leaf]:
        if self.op == "leaf":
            return {self.leaf}
        return set().union(*(a.leaves() for a in self.args))

    def evaluate(self, fields: Mapping[Leaf, np.ndarray]) -> np.ndarray:
        if self.op == "leaf":
            try:
                return fields[self.leaf]
            except KeyError:
                raise TrackerError(f"field {self.leaf} was not provided") from None
        vals = [a.evaluate(fields) for a in self.args]
        return _OPS[self.op][1](*vals)


_OPS: dict[str, tuple[int, Callable]] = {
    "_DIFF": (2, lambda a, b: a - b),
    "_SUM": (2, lambda a, b: a + b),
    "_VECMAG": (2, lambda a, b: np.sqrt(a * a + b * b)),
    "_ABS": (1, np.abs),
}


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out]


def _resolve_leaf(token: str) -> Leaf:
    if token.upper() == "ZS":
        return Leaf("geopotential_at_surface", None, 1.0 / G0)
    m = re.fullmatch(r"([A-Za-z0-9_]+)\(\s*(\d+)\s*hPa\s*\)", token)
    try:
        if m:
            name, level = canonical_name(m.group(1)), int(m.group(2))
        else:
            try:
                name, level = parse_channel(token)
            except LexiconError:
                name, level = canonical_name(token), None   # e.g. "Z": a level is missing
    except LexiconError as e:
        raise TrackerError(f"unknown variable {token!r} in tracker command: {e}") from None
    if lookup(name).kind == "atmospheric" and level is None:
        raise TrackerError(f"variable {token!r} needs a level, e.g. Z(500hPa) or z500")
    return Leaf(name, level)


def parse_expr(text: str) -> Expr:
    """Parse a TempestExtremes-style variable expression (see module docstring)."""
    t = text.strip()
    m = re.fullmatch(r"(_[A-Z]+)\((.*)\)", t)
    if m:
        op = m.group(1)
        if op not in _OPS:
            raise TrackerError(f"unknown operator {op} in {text!r}; known: {sorted(_OPS)}")
        args = _split_top(m.group(2), ",")
        if len(args) != _OPS[op][0]:
            raise TrackerError(f"{op} takes {_OPS[op][0]} argument(s), got {len(args)} in {text!r}")
        return Expr(op, tuple(parse_expr(a) for a in args))
    if not t:
        raise TrackerError("empty variable expression")
    return Expr("leaf", leaf=_resolve_leaf(t))


# ---- commands --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClosedContour:
    """Closed-contour criterion: `var` changes by `delta` within `dist` degrees of the pivot."""

    var: Expr
    delta: float
    dist: float
    minmaxdist: float = 0.0


@dataclass(frozen=True)
class OutputSpec:
    """Node output: `op` (min|max|avg) of `var` within `dist` degrees of the node."""

    var: Expr
    op: str
    dist: float


@dataclass(frozen=True)
class Threshold:
    """StitchNodes threshold: at least `count` nodes (or all/first/last) satisfy `column op value`."""

    column: str
    op: str
    value: float
    count: int | str


# StitchNodes' threshold operators ("|>=" and "|<=" compare the magnitude)
COMPARISONS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less,
               "=": np.equal, "!=": np.not_equal,
               "|>=": lambda a, v: np.greater_equal(np.abs(a), v),
               "|<=": lambda a, v: np.less_equal(np.abs(a), v)}


def _float(s: str, what: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise TrackerError(f"{what}: {s!r} is not a number") from None


def parse_closed_contours(cmd: str) -> list[ClosedContour]:
    """``"var,delta,dist,minmaxdist;..."`` -> list of ClosedContour ("" = none)."""
    out = []
    for part in filter(None, _split_top(cmd, ";")):
        f = _split_top(part, ",")
        if len(f) != 4:
            raise TrackerError(f"closed contour {part!r} must be var,delta,dist,minmaxdist")
        c = ClosedContour(parse_expr(f[0]), _float(f[1], part), _float(f[2], part), _float(f[3], part))
        if c.delta == 0 or c.dist <= 0 or c.minmaxdist < 0:
            raise TrackerError(f"closed contour {part!r}: need delta != 0, dist > 0, minmaxdist >= 0")
        out.append(c)
    return out


def parse_outputs(cmd: str) -> list[OutputSpec]:
    """``"var,op,dist;..."`` -> list of OutputSpec."""
    out = []
    for part in filter(None, _split_top(cmd, ";")):
        f = _split_top(part, ",")
        if len(f) != 3 or f[1] not in ("min", "max", "avg"):
            raise TrackerError(f"output {part!r} must be var,min|max|avg,dist")
        spec = OutputSpec(parse_expr(f[0]), f[1], _float(f[2], part))
        if not 0.0 <= spec.dist <= 180.0:
            raise TrackerError(f"output {part!r}: distance must be in [0, 180] degrees")
        out.append(spec)
    return out


def parse_thresholds(cmd: str) -> list[Threshold]:
    """``"column,op,value,count;..."`` -> list of Threshold (op: >=, >, <=, <, =, !=, |>=, |<=;
    count: integer, all, first, last)."""
    out = []
    for part in filter(None, _split_top(cmd, ";")):
        f = _split_top(part, ",")
        if len(f) != 4 or f[1] not in COMPARISONS:
            raise TrackerError(f"threshold {part!r} must be column,op,value,count with op in {list(COMPARISONS)}")
        count: int | str = f[3]
        if count not in ("all", "first", "last"):
            try:
                count = int(count)
            except ValueError:
                raise TrackerError(f"threshold {part!r}: count must be an integer, all, first or last") from None
        out.append(Threshold(f[0], f[1], _float(f[2], part), count))
    return out

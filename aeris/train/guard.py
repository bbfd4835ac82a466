"""What keeps a long run alive: update guard, stop requests, fault injection (docs/training.md,
"Long runs").

* `UpdateGuard` decides, from the step's global loss and gradient norm (the same numbers on
  every rank, so every rank decides the same), whether the update is applied: a non-finite
  loss or norm is skipped, and with ``spike_factor`` k > 0 so is a norm above k x the median
  of the last ``spike_window`` applied norms. More than ``max_consecutive`` skips in a row
  stop the run (`TooManySkips`). Its state goes into every checkpoint, so a resumed run
  decides exactly as an uninterrupted one.
* Stop requests (signals, a wall-time budget) are `aeris.stop.StopRequest`, shared with the
  forecast rollout.
* `Fault` rehearses the failure paths: ``nan@K`` makes step K's loss NaN, ``signal@K:TERM``
  (``:R`` for rank R, default 0) sends the signal to itself at the start of step K.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
from dataclasses import dataclass

__all__ = ["UpdateGuard", "TooManySkips", "Fault", "parse_fault", "fire"]


class TooManySkips(RuntimeError):
    """More updates skipped in a row than the run allows."""


class UpdateGuard:
    """Skip decisions (module docstring)."""

    def __init__(self, max_consecutive: int = 5, spike_factor: float = 0.0, spike_window: int = 50):
        self.max_consecutive, self.spike_factor, self.spike_window = max_consecutive, spike_factor, spike_window
        self.history: list[float] = []   # gradient norms of the last applied updates
        self.skipped = 0                 # skipped updates in the run
        self.consecutive = 0             # skipped in a row

    def check(self, loss: float, grad_norm: float) -> str | None:
        """None to apply the update, else why it is skipped ("non-finite" or "spike")."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return "non-finite"
        if self.spike_factor > 0 and len(self.history) >= max(1, self.spike_window // 2):
            if grad_norm > self.spike_factor * statistics.median(self.history):
                return "spike"
        return None

    def record(self, reason: str | None, grad_norm: float, step: int) -> None:
        """After the step: count a skip (TooManySkips past the limit) or remember the norm."""
        if reason is None:
            self.consecutive = 0
            self.history = (self.history + [float(grad_norm)])[-self.spike_window:]
            return
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive > self.max_consecutive:
            raise TooManySkips(f"{self.consecutive} updates skipped in a row (the last at step {step}: "
                               f"{reason}), more than train.max_consecutive_skips={self.max_consecutive}")

    def state_dict(self) -> dict:
        return {"history": list(self.history), "skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.history = [float(v) for v in state.get("history", [])][-self.spike_window:]
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))


@dataclass(frozen=True)
class Fault:
    kind: str          # "nan" or "signal"
    step: int          # 0-based optimizer step
    signal: str = ""   # e.g. "SIGTERM"
    rank: int = 0


def parse_fault(text: str) -> Fault | None:
    """``nan@K`` | ``signal@K:NAME[:RANK]`` -> Fault; "" -> None; ValueError otherwise."""
    text = (text or "").strip()
    if not text:
        return None
    kind, at, rest = text.partition("@")
    parts = rest.split(":")
    try:
        step = int(parts[0])
    except ValueError:
        raise ValueError(f"fault {text!r}: expected nan@STEP or signal@STEP:NAME[:RANK]") from None
    if kind == "nan" and len(parts) == 1 and at:
        return Fault("nan", step)
    if kind == "signal" and at and 2 <= len(parts) <= 3:
        name = parts[1].upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if not hasattr(signal, name):
            raise ValueError(f"fault {text!r}: unknown signal {parts[1]!r}")
        return Fault("signal", step, name, int(parts[2]) if len(parts) == 3 else 0)
    raise ValueError(f"fault {text!r}: expected nan@STEP or signal@STEP:NAME[:RANK]")


def fire(fault: Fault | None, step: int, rank: int) -> None:
    """A signal fault of this step and rank: the process signals itself now."""
    if fault is not None and fault.kind == "signal" and fault.step == step and fault.rank == rank:
        os.kill(os.getpid(), getattr(signal, fault.signal))

"""Stop requests: SIGTERM, SIGUSR1 and SIGINT (Slurm ``--signal``, PBS walltime warnings,
Ctrl-C) and a wall-time budget as a flag that a long loop reads at its safe points (the
trainer after each step, the forecast rollout between units). A second SIGINT interrupts at
once. Under torch.distributed the ranks agree with `agreed`: a signal that reached one rank
stops them all at the same point."""

from __future__ import annotations

import signal
import time

import torch
import torch.distributed as dist

__all__ = ["StopRequest", "STOP_SIGNALS", "agreed"]

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
_REASONS = (*STOP_SIGNALS, "wall time")


class StopRequest:
    """Signals and a wall-time budget as a flag (module docstring). Use as a context manager
    around the loop: the previous handlers are restored on exit."""

    def __init__(self, max_wall_minutes: float = 0.0):
        self.deadline = time.monotonic() + 60.0 * max_wall_minutes if max_wall_minutes > 0 else None
        self.signal: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = name

    def __enter__(self) -> StopRequest:
        try:
            for name in STOP_SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handlers, the wall-time budget still applies
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous = {}

    def reason(self) -> str | None:
        """Why this rank wants to stop ("SIGTERM", ..., "wall time"), or None."""
        if self.signal:
            return self.signal
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "wall time"
        return None


def agreed(reason: str | None, all_sum=None) -> str | None:
    """The stop reasons of all ranks (``all_sum``: a sum over every rank, returned on the CPU;
    default the default process group's, or none without one), joined; None if no rank stops."""
    flags = torch.tensor([float(reason == r) for r in _REASONS], dtype=torch.float64)
    if all_sum is not None:
        flags = all_sum(flags)
    elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # on the communication device: an nccl group serves only CUDA tensors
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        flags = flags.to(dev) if dev is not None else flags
        dist.all_reduce(flags)
        flags = flags.cpu()
    return " and ".join(r for r, f in zip(_REASONS, flags.tolist()) if f > 0) or None

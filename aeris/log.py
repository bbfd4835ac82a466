"""Library logging: module loggers (``logging.getLogger(__name__)``), rank-aware console output.

Library code never prints; it logs. The CLI calls `setup_console` once: records at INFO and
above go to standard output as bare messages (what `aeris` prints), on rank 0 only unless
``all_ranks`` (then prefixed ``[rank R]``). Warnings go to standard error.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_console", "process_rank"]

_HANDLER_NAME = "aeris-console"


def process_rank() -> int:
    """This process's rank: the default process group's, else the launcher's variables (so it
    is known before the group exists), else 0."""
    import torch.distributed as dist  # lazy: torch is heavy and `aeris --help` needs none of it

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for k in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PALS_RANKID", "SLURM_PROCID"):
        v = os.environ.get(k, "")
        if v.isdigit():
            return int(v)
    return 0


class _Console(logging.Handler):
    """INFO and DEBUG to the CURRENT sys.stdout, warnings and errors to the current sys.stderr
    (looked up at each record, so redirections made after setup are honoured)."""

    def __init__(self, all_ranks: bool):
        super().__init__()
        self.all_ranks = all_ranks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rank = process_rank()  # at each record: the process group may start after setup
            if rank != 0 and not self.all_ranks and record.levelno < logging.ERROR:
                return
            prefix = f"[rank {rank}] " if self.all_ranks else ""
            msg = self.format(record)
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            if record.levelno >= logging.WARNING:
                msg = f"{record.levelname.lower()}: {msg}"
            stream.write("".join(f"{prefix}{line}\n" for line in msg.splitlines() or [""]))
            stream.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_console(level: int = logging.INFO, all_ranks: bool | None = None) -> None:
    """Route the ``aeris`` and ``swipe`` loggers to the console (idempotent). Only rank 0 speaks
    unless ``all_ranks`` (default: the environment variable ``AERIS_LOG_ALL_RANKS=1``)."""
    if all_ranks is None:
        all_ranks = os.environ.get("AERIS_LOG_ALL_RANKS", "") == "1"
    for name in ("aeris", "swipe"):
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(h)
        handler = _Console(all_ranks)
        handler.set_name(_HANDLER_NAME)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False

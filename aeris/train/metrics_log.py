"""Metrics log: one JSON object per line (always), TensorBoard and W&B when asked and installed."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

__all__ = ["MetricsLogger", "read_metrics"]


class MetricsLogger:
    """Append-only JSONL metrics file ``<out_dir>/metrics.jsonl`` (+ optional sinks).

    On resume the file is truncated to the records up to the resumed step, so a resumed run's
    log reads exactly like an uninterrupted one.
    """

    def __init__(self, out_dir: str | os.PathLike, *, resume_step: int | None = None,
                 tensorboard: bool = False, wandb: bool = False, run_name: str = "aeris",
                 enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = self._wb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                warnings.warn("train.tensorboard=true but tensorboard is not installed "
                              "(pip install 'aeris-swipe[tensorboard]'); logging to JSONL only")
        if wandb:
            try:
                import wandb as wb
                self._wb = wb.init(project="aeris", name=run_name, dir=str(out_dir), resume="allow")
            except ImportError:
                warnings.warn("train.wandb=true but wandb is not installed; logging to JSONL only")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        step = record.get("step", 0)
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wb is not None:
            self._wb.log(record, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wb is not None:
            self._wb.finish()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a metrics.jsonl file. A half-written LAST line (the run was killed while
    logging) is skipped with a warning; a bad line anywhere else is an error naming it."""
    lines = [(i, ln) for i, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()]
    out = []
    for k, (i, line) in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                warnings.warn(f"{path}: ignoring a truncated last line {i} ({e})")
                break
            raise ValueError(f"{path}: line {i} is not JSON: {e}") from e
    return out

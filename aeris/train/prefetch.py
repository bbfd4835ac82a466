"""This rank's micro-batch data, step after step: read inside the step, or ahead on threads.

    loader = StepLoader(ds, plan, stride=B, device=dev, depth=2, threads=2, end=last_position)
    batches = loader.get(step, start)   # one dict per micro-batch: field -> (mb, n_lw, tpp, C) on dev
    loader.wait_s                       # the seconds that get() waited for them
    loader.close()                      # joins the threads (also: with StepLoader(...) as loader)

``plan(start)`` gives the dataset indices of each of this rank's micro-batches of the step whose
first global position is ``start``: a pure function (the data order, aeris.train.data_order);
the next step starts at ``start + stride``. ``depth`` 0 reads in `get` (the reference). With
``depth`` > 0, `get` also hands the micro-batches of the next ``depth`` steps (those starting
before ``end``) to ``threads`` worker threads, which read them while the step runs (file reads
and numpy release the GIL), stacked into pinned memory when ``device`` is CUDA or XPU (copied to
it with non_blocking). The batches are the synchronous read's exactly: the same samples stacked
in the same order. Nothing the trainer checkpoints is touched, so steps read ahead and never
used (a stop, a crash) change nothing of a resume. A sample that cannot be read is a
`DataError` naming it and its time, raised by the `get` of its step, as the synchronous read
raises it (docs/data.md, "Reading ahead").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from aeris.data.store import DataError

__all__ = ["StepLoader"]

PIN_DEVICES = ("cuda", "xpu")


def _use_device(index: int) -> None:
    """Worker-thread start: pinned buffers belong to the rank's device, not to device 0."""
    torch.accelerator.set_device_index(index)


class StepLoader:
    """The micro-batch data of consecutive training steps of one rank (module docstring)."""

    def __init__(self, ds, plan: Callable[[int], list[np.ndarray]], *, stride: int,
                 device: torch.device | str = "cpu", depth: int = 0, threads: int = 1,
                 end: int | None = None):
        if depth < 0 or threads < 1:
            raise ValueError(f"read-ahead depth must be >= 0 and threads >= 1, got {depth} and {threads}")
        self.ds, self.plan, self.stride, self.depth, self.end = ds, plan, int(stride), int(depth), end
        self.device = torch.device(device)
        self.pin = self.depth > 0 and self.device.type in PIN_DEVICES  # pinning a synchronous read only copies
        self.wait_s = 0.0
        self._pending: deque[tuple[tuple[int, int], list[Future]]] = deque()
        self._pool = None
        if self.depth:
            init, args = None, ()
            if self.pin:
                index = self.device.index
                init, args = _use_device, (torch.accelerator.current_device_index() if index is None else index,)
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="aeris-read-ahead", initializer=init,
                                            initargs=args)

    def __enter__(self) -> StepLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------------
    def _read(self, step: int, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """The samples `indices`, stacked per field (pinned when reading ahead for an accelerator)."""
        ds, samples = self.ds, []
        for i in indices:
            try:
                samples.append(ds[int(i)])
            except Exception as err:  # any failure of a read names the sample and its time
                when = np.datetime_as_string(ds.times[int(i)], unit="m")
                raise DataError(f"{ds.split} sample {int(i)} (t = {when}) of step {step + 1} could not be read: "
                                f"{type(err).__name__}: {err}") from err
        out = {}
        for k in ds.fields:
            parts = [s[k] for s in samples]
            if self.pin:
                buf = torch.empty((len(parts), *parts[0].shape), dtype=parts[0].dtype, pin_memory=True)
                out[k] = torch.stack(parts, out=buf)
            else:
                out[k] = torch.stack(parts)
        return out

    def _submit(self, key: tuple[int, int]) -> None:
        step, start = key
        self._pending.append((key, [self._pool.submit(self._read, step, sel) for sel in self.plan(start)]))

    def _fill(self, key: tuple[int, int]) -> None:
        """Steps after `key` handed to the workers until `depth` of them are pending."""
        while len(self._pending) < self.depth:
            step, start = self._pending[-1][0] if self._pending else key
            nxt = (step + 1, start + self.stride)
            if self.end is not None and nxt[1] >= self.end:
                return
            self._submit(nxt)

    def _drop_pending(self) -> None:
        for _, futures in self._pending:
            for f in futures:
                f.cancel()  # queued reads are dropped; a read under way finishes unused
        self._pending.clear()

    def get(self, step: int, start: int) -> list[dict[str, torch.Tensor]]:
        """The batches of the micro-batches of step `step`, whose first global position is `start`,
        on the device; `wait_s` = the seconds this call waited for them."""
        t0 = time.perf_counter()
        if self._pool is None:
            batches = [self._read(step, sel) for sel in self.plan(start)]
        else:
            key = (int(step), int(start))
            if not self._pending or self._pending[0][0] != key:
                self._drop_pending()  # the first step, or the position moved (a load): restart there
                self._submit(key)
            _, futures = self._pending.popleft()
            self._fill(key)
            batches = [f.result() for f in futures]  # a worker's exception is raised here
        out = [{k: v.to(self.device, non_blocking=self.pin) for k, v in b.items()} for b in batches]
        self.wait_s = time.perf_counter() - t0
        return out

    def close(self) -> None:
        """Drop the steps read ahead and join the threads (a read under way finishes first)."""
        if self._pool is not None:
            self._drop_pending()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self.pin = None, False

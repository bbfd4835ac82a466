"""Where the block tasks of `aeris data stats|prepare` run: this process or a Dask distributed
cluster (docs/data.md, "Preparing ERA5 on a cluster").

``Cluster(scheduler, workers)`` takes the ``data.scheduler`` setting:

* ``local``   a `distributed.LocalCluster` of ``workers`` worker processes (0 = the cores), one
              thread each; ``threads``: the same with threads of this process;
* ``serial``  no cluster: the blocks run here, one after the other (the one-process reference);
* ``tcp://host:port`` (any ``<protocol>://`` address) or the path of a scheduler file (the JSON
  that ``dask scheduler --scheduler-file``, dask-jobqueue's ``scheduler_file`` or dask-mpi
  write): an existing cluster, e.g. started by a PBS or Slurm job.

A job of one block (and a job of none) runs in this process without starting a local
cluster. `Cluster.run(fn, job, items)` maps ``fn(job, item)`` over the items, the job sent to
the workers once, with one progress bar over the items (and the dashboard link); the first
failing task's error is raised after the others are cancelled. Results come back in item
order whatever order the tasks finish in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from aeris.data.store import DataError

__all__ = ["Cluster", "available_cores", "LOCAL_KINDS"]

log = logging.getLogger(__name__)

LOCAL_KINDS = ("local", "threads", "serial")
TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Cluster:
    """Where block tasks run (module docstring). A context manager: what it started, it stops.

    client: an existing `distributed.Client` to use as it is (then `scheduler` is ignored).
    """

    def __init__(self, scheduler: str = "local", workers: int = 0, client=None):
        self.scheduler = str(scheduler or "local").strip()
        self.workers = int(workers or 0)
        if self.workers < 0:
            raise DataError(f"workers must be >= 0 (0 = the cores), got {workers}")
        self._client = client
        self._started = None   # the client this object connected, and the cluster it started
        self._cluster = None
        if client is None and self.scheduler not in LOCAL_KINDS and "://" not in self.scheduler:
            if not Path(self.scheduler).is_file():
                raise DataError(f"scheduler {self.scheduler!r} is neither local, threads, serial, an address "
                                f"such as tcp://host:8786, nor an existing scheduler file")

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect what this object connected and stop the local cluster it started."""
        for thing in (self._started, self._cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # pragma: no cover - closing must not hide the real error
                    log.debug("closing %r failed", thing, exc_info=True)
        if self._started is not None:
            self._client = None
        self._started = self._cluster = None

    @property
    def in_process(self) -> bool:
        return self._client is None and self.scheduler == "serial"

    def client(self):
        """The `distributed.Client` (started or connected on first use); None for ``serial``."""
        if self._client is not None or self.scheduler == "serial":
            return self._client
        import dask
        from distributed import Client, LocalCluster
        if self.scheduler in ("local", "threads"):
            n = self.workers or available_cores()
            # the nanny's MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold: every
            # block's arrays then come as fresh pages (10x the page faults, +60% CPU time here)
            with dask.config.set({TRIM_KEY: None}):
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                                             processes=self.scheduler == "local",
                                             dashboard_address=":8787" if _has_bokeh() else ":0",
                                             silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
        elif "://" in self.scheduler:
            self._client = Client(self.scheduler, timeout="60s")
        else:
            self._client = Client(scheduler_file=self.scheduler, timeout="60s")
        self._started = self._client
        n_workers = len(self._client.scheduler_info().get("workers", {}))
        log.info("dask cluster: %d worker(s) at %s; %s", n_workers, self._client.scheduler.address,
                 self.dashboard_text())
        return self._client

    def dashboard_text(self) -> str:
        c = self._client
        if c is None:
            return "no cluster (this process)"
        if not _has_bokeh():
            return "dashboard: install bokeh to see it (pip install 'aeris-swipe[cluster]')"
        return f"dashboard {c.dashboard_link}"

    # ---- running ---------------------------------------------------------------------------
    def run(self, fn: Callable, job, items: Sequence, *, desc: str, progress: bool = True,
            done: int = 0, unit: str = "block") -> list:
        """``[fn(job, item) for item in items]`` on the cluster (or here); `done` items already
        complete count in the bar."""
        items = list(items)
        local = self.in_process or (self._client is None and self.scheduler in ("local", "threads")
                                    and len(items) <= 1)
        client = None if local else self.client()   # started before the bar: its log line first
        bar = tqdm(total=len(items) + done, initial=done, desc=desc, unit=unit, disable=not progress,
                   dynamic_ncols=True)
        try:
            if local:
                out = []
                for item in items:
                    out.append(fn(job, item))
                    bar.update(1)
                return out
            if _has_bokeh():
                bar.set_postfix_str(f"dashboard {client.dashboard_link}", refresh=False)
            return _run_on(client, fn, job, items, bar)
        finally:
            bar.close()


def _run_on(client, fn: Callable, job, items: list, bar) -> list:
    from distributed import as_completed
    if not items:
        return []
    job_f = client.scatter(job, broadcast=True, hash=False)
    futures = client.map(fn, [job_f] * len(items), items, pure=False)
    position = {f.key: k for k, f in enumerate(futures)}
    out: list = [None] * len(items)
    try:
        for fut in as_completed(futures):
            if fut.status == "error":
                fut.result()  # raises the task's own exception with its traceback
            out[position[fut.key]] = fut.result()
            fut.release()
            bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        client.cancel(job_f)
    return out


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None

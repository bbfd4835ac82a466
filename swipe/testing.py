"""Run a function on N local torch.distributed processes (gloo on CPU), for tests and examples.

    results = run_distributed(check_something, world_size=4, args=(layout,), timeout=60)

``fn(rank, world_size, *args)`` runs in every process after ``init_process_group``; its
return value (anything ``torch.save`` can write) comes back in ``results[rank]``. An exception
in any rank is raised in the caller as a RuntimeError carrying the traceback of the rank that
failed FIRST (not of a peer that then died of a closed connection); a hang raises TimeoutError
after ``timeout`` seconds and kills the processes.

Processes are forked by default (0.3 s for 8 ranks instead of ~15-25 s for spawn, which
re-imports torch in every child); spawn is used instead when CUDA is already initialised in
the caller, or when asked for. Rendezvous goes through a FileStore in a fresh temporary directory rather than a TCP port, so
concurrent test runs on one machine can never collide on a port (``free_port`` is there for
launchers that need one).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swipe.launch import free_port, set_threads  # free_port re-exported for tests that need a TCP rendezvous

__all__ = ["run_distributed", "free_port"]


def _entry(rank: int, fn: Callable, world_size: int, args: tuple, workdir: str, backend: str,
           threads: int) -> None:
    # a few ranks share 2 cores: one intra-op thread each avoids oversubscription (and a
    # forked rank cannot have more once the caller ran multi-threaded: `set_threads`)
    set_threads(threads)
    store = dist.FileStore(os.path.join(workdir, "store"), world_size)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    try:
        try:
            result = fn(rank, world_size, *args)
        except BaseException:
            # record when and why, before peers die of "connection closed" in turn
            _write(os.path.join(workdir, f"error{rank}.txt"),
                   f"{time.time()!r}\n{traceback.format_exc()}")
            raise
        tmp = os.path.join(workdir, f"result{rank}.tmp")
        torch.save(result, tmp)
        os.replace(tmp, os.path.join(workdir, f"result{rank}.pt"))
        dist.barrier()  # nobody tears down the group while a peer still communicates
    finally:
        dist.destroy_process_group()


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _first_failure(workdir: str, world_size: int) -> str | None:
    """The traceback of the rank that failed first, and which others failed too."""
    errs = []
    for r in range(world_size):
        try:
            with open(os.path.join(workdir, f"error{r}.txt")) as f:
                t, tb = f.read().split("\n", 1)
            errs.append((float(t), r, tb))
        except FileNotFoundError:
            continue
    if not errs:
        return None
    errs.sort()
    t0, r0, tb0 = errs[0]
    others = f" (ranks {[r for _, r, _ in errs[1:]]} failed after it)" if len(errs) > 1 else ""
    return f"rank {r0} failed first{others}:\n{tb0}"


def run_distributed(fn: Callable[..., Any], world_size: int, args: tuple = (), *,
                    timeout: float = 120.0, backend: str = "gloo", start_method: str | None = None,
                    threads: int = 1) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` fresh processes; return their results.

    ``start_method``: None = "fork" where available and safe (CUDA not initialised in the
    caller), else "spawn"; with "spawn", ``fn`` must be a module-level (importable) function.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if start_method is None:
        fork_ok = "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()
        start_method = "fork" if fork_ok else "spawn"
    with tempfile.TemporaryDirectory(prefix="swipe-dist-") as workdir:
        ctx = mp.start_processes(_entry, args=(fn, world_size, tuple(args), workdir, backend, threads),
                                 nprocs=world_size, join=False, start_method=start_method)
        deadline = time.monotonic() + timeout
        try:
            try:
                while not ctx.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"{world_size}-process run of {getattr(fn, '__name__', fn)} did not "
                            f"finish within {timeout:.0f} s (deadlock? mismatched collectives?)")
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
                # join() reports whichever rank it noticed first, often a peer that died of
                # "connection closed": report the rank that failed first instead
                first = _first_failure(workdir, world_size)
                if first is None:
                    raise
                raise RuntimeError(first) from e
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        return [torch.load(os.path.join(workdir, f"result{r}.pt"), weights_only=False)
                for r in range(world_size)]

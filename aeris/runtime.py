"""The memory allocator of the `aeris` entry points (docs/environment.md, "Allocator and threads").

Allocator. glibc's malloc serves large blocks with mmap and hands freed memory back to the
kernel, so a step's big temporaries are page-faulted in again at every use (batched forwards
up to 2x slower per member). The policy ``AERIS_MALLOC`` (environment variable) chooses:

* ``glibc`` (default): ``GLIBC_TUNABLES=`` `GLIBC_TUNABLES` (large blocks from the heap, never
  trimmed): the step's buffers stay mapped and are reused;
* ``jemalloc`` / ``tcmalloc``: that library, found on the system, in ``LD_PRELOAD``; or a path to
  any malloc library;
* ``system``: the environment as it is.

glibc reads its tunables and the loader its preloads only when a process starts, so
`reexec_with_allocator` replaces the starting process by itself once, with the policy's
environment (same pid, arguments and descriptors). Its children (torchrun ranks, the demo's
steps) inherit that environment. A ``GLIBC_TUNABLES`` the user set is left alone, and the
marker ``AERIS_MALLOC_APPLIED`` prevents a second re-exec.

(Threads per rank are the launcher's business: `swipe.launch.configure_threads`.)
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys
from collections.abc import Callable, Mapping

__all__ = ["GLIBC_TUNABLES", "POLICIES", "AllocatorError", "allocator_env", "find_malloc_library",
           "reexec_with_allocator"]

# mmap_max=0: no block is served by mmap (so none is unmapped on free); trim_threshold 16 GiB: the
# heap's free top is kept rather than returned to the kernel
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
POLICIES = ("glibc", "jemalloc", "tcmalloc", "system")
MARKER = "AERIS_MALLOC_APPLIED"
_LIBRARIES = {"jemalloc": ("jemalloc",), "tcmalloc": ("tcmalloc", "tcmalloc_minimal")}


class AllocatorError(RuntimeError):
    """AERIS_MALLOC names an unknown policy or a library that is not installed."""


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False


def find_malloc_library(name: str) -> str | None:
    """The shared library of ``jemalloc`` or ``tcmalloc``: the system's (ldconfig) or one in
    this Python's prefix (conda, pip wheels); None if not installed."""
    for lib in _LIBRARIES[name]:
        found = ctypes.util.find_library(lib)
        if found:
            return found
        for prefix in {sys.prefix, sys.base_prefix}:
            hits = sorted(glob.glob(os.path.join(prefix, "lib", f"lib{lib}.so*")))
            if hits:
                return hits[0]
    return None


def allocator_env(env: Mapping[str, str], *, glibc: bool | None = None,
                  find: Callable[[str], str | None] = find_malloc_library) -> dict[str, str] | None:
    """The environment this process should be restarted with under ``env["AERIS_MALLOC"]``, or
    None to run as it is (policy ``system``, already applied, user tunables, not glibc)."""
    policy = env.get("AERIS_MALLOC", "").strip() or "glibc"
    if env.get(MARKER):
        return None
    glibc = _is_glibc() if glibc is None else glibc
    if policy == "system":
        return None
    if policy == "glibc":
        if not glibc or "GLIBC_TUNABLES" in env:  # not glibc; or the user's own tunables win
            return None
        return {**env, "GLIBC_TUNABLES": GLIBC_TUNABLES, MARKER: policy}
    if os.sep in policy:
        if not os.path.isfile(policy):
            raise AllocatorError(f"AERIS_MALLOC={policy!r}: no such file")
        lib = policy
    elif policy in _LIBRARIES:
        lib = find(policy)
        if not lib:
            raise AllocatorError(f"AERIS_MALLOC={policy}: lib{policy} is not installed (e.g. apt-get install "
                                 f"lib{'jemalloc2' if policy == 'jemalloc' else 'google-perftools'}); "
                                 f"use AERIS_MALLOC=glibc or system")
    else:
        raise AllocatorError(f"AERIS_MALLOC={policy!r}: expected one of {POLICIES} or a library path")
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    if lib in preload:
        return None
    return {**env, "LD_PRELOAD": ":".join([lib, *preload]), MARKER: policy}


def reexec_with_allocator() -> None:
    """Replace this process by itself under the allocator policy (module docstring), once; a
    no-op when there is nothing to change or when the process runs inline code (REPL, -c)."""
    if not sys.argv or sys.argv[0] in ("", "-c", "-") or not getattr(sys, "orig_argv", None):
        return
    try:
        new = allocator_env(os.environ)
    except AllocatorError as e:
        print(f"aeris: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if new is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # argv[0] = the interpreter's full path: python finds its venv from argv[0]
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new)

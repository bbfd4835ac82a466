"""Atomic file writes: nothing is ever left half-written under a user's output name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "plain_file_mode", "temporary_beside"]


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask can only read by setting, racing threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def plain_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def temporary_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """(fd, name) of a new temporary file in `path`'s folder, with a plain file's mode (mkstemp
    makes it 0600, which the rename would carry over to the user's output)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, plain_file_mode())
    return fd, tmp


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file in the target folder, then rename it to `path`.

    The temporary name keeps the suffix (writers such as matplotlib and xarray pick the
    format from it); on any error it is removed and the old `path`, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path, path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

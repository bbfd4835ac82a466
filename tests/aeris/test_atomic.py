"""Atomic writes leave a file with the mode a plain open() would give, and nothing half-written."""

from __future__ import annotations

import os
import stat

import pytest

from aeris.atomic import atomic_write, plain_file_mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert plain_file_mode() == 0o666 & ~umask
        out = atomic_write(tmp_path / "report.html", lambda p: p.write_text("x"))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) \
        == 0o666 & ~umask


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]

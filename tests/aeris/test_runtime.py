"""Allocator policy of the `aeris` CLI: the pure rules, and real processes observed from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aeris.runtime import GLIBC_TUNABLES, MARKER, AllocatorError, allocator_env, find_malloc_library
from tests.support import REPO

# ---- the rules -----------------------------------------------------------------------------------
BASE = {"PATH": "/usr/bin", "LD_PRELOAD": ""}


def _find(name):
    return {"jemalloc": "/opt/lib/libjemalloc.so.2"}.get(name)


def test_default_policy_sets_the_glibc_tunables_once():
    new = allocator_env(BASE, glibc=True)
    assert new["GLIBC_TUNABLES"] == GLIBC_TUNABLES and new[MARKER] == "glibc" and new["PATH"] == "/usr/bin"
    assert allocator_env(new, glibc=True) is None                       # applied: no second restart
    assert allocator_env({**BASE, "AERIS_MALLOC": "glibc"}, glibc=True)["GLIBC_TUNABLES"] == GLIBC_TUNABLES


@pytest.mark.parametrize("env", [
    {"AERIS_MALLOC": "system"},                                   # opt-out
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},               # the user's own tunables win
    {"GLIBC_TUNABLES": ""},
    {MARKER: "jemalloc", "AERIS_MALLOC": "glibc"},                # already restarted by a parent
])
def test_nothing_to_change(env):
    assert allocator_env({**BASE, **env}, glibc=True, find=_find) is None


def test_not_glibc_runs_as_is():
    assert allocator_env(BASE, glibc=False) is None


def test_preloaded_libraries():
    new = allocator_env({**BASE, "AERIS_MALLOC": "jemalloc", "LD_PRELOAD": "/x/libfoo.so"}, glibc=True, find=_find)
    assert new["LD_PRELOAD"] == "/opt/lib/libjemalloc.so.2:/x/libfoo.so" and new[MARKER] == "jemalloc"
    assert "GLIBC_TUNABLES" not in new
    already = {**BASE, "AERIS_MALLOC": "jemalloc", "LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}
    assert allocator_env(already, glibc=True, find=_find) is None
    lib = os.path.realpath(sys.executable)  # any existing file stands for a library path here
    assert allocator_env({**BASE, "AERIS_MALLOC": lib}, glibc=True)["LD_PRELOAD"] == lib


@pytest.mark.parametrize("policy,match", [("tcmalloc", "libtcmalloc is not installed"),
                                          ("mimalloc", "expected one of"),
                                          ("/no/such/libjemalloc.so", "no such file")])
def test_bad_policies(policy, match):
    with pytest.raises(AllocatorError, match=match):
        allocator_env({**BASE, "AERIS_MALLOC": policy}, glibc=True, find=_find)


# ---- real processes --------------------------------------------------------------------------------
# sitecustomize runs at every interpreter start: it records the pid and the environment the
# process STARTED with, so a re-exec shows as a second record with the same pid
OBSERVER = """
import json, os
with open(os.environ["AERIS_TEST_STARTS"], "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
                        "LD_PRELOAD": os.environ.get("LD_PRELOAD"), "marker": os.environ.get("%s")}) + "\\n")
""" % MARKER


def _starts(tmp_path, cmd, **env_extra):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(OBSERVER)
    log = tmp_path / "starts.jsonl"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "AERIS_MALLOC", MARKER, "LD_PRELOAD")}
    env.update(AERIS_TEST_STARTS=str(log), PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), **env_extra)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    starts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, starts


CONFIG_SHOW = [sys.executable, "-m", "aeris.cli", "config", "show", "--section", "swipe"]


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc tunables exist on glibc only")
def test_cli_restarts_itself_once_with_the_tunables(tmp_path):
    proc, starts = _starts(tmp_path, CONFIG_SHOW)
    assert proc.returncode == 0 and "swipe:" in proc.stdout, proc.stderr
    assert len(starts) == 2 and starts[0]["pid"] == starts[1]["pid"]   # exec: the same process
    assert starts[0]["GLIBC_TUNABLES"] is None
    assert starts[1]["GLIBC_TUNABLES"] == GLIBC_TUNABLES and starts[1]["marker"] == "glibc"


def test_cli_opt_out_and_user_tunables(tmp_path):
    proc, starts = _starts(tmp_path, CONFIG_SHOW, AERIS_MALLOC="system")
    assert proc.returncode == 0, proc.stderr
    assert len(starts) == 1 and starts[0]["GLIBC_TUNABLES"] is None
    proc, starts = _starts(tmp_path, CONFIG_SHOW, GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    assert proc.returncode == 0, proc.stderr
    assert len(starts) == 1 and starts[0]["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"


def test_cli_preload_policy(tmp_path):
    """jemalloc if this machine has it (restart with it preloaded), else a clear error."""
    proc, starts = _starts(tmp_path, CONFIG_SHOW, AERIS_MALLOC="jemalloc")
    lib = find_malloc_library("jemalloc")
    if lib:
        assert proc.returncode == 0, proc.stderr
        assert len(starts) == 2 and starts[1]["LD_PRELOAD"].split(":")[0] == lib
    else:
        assert proc.returncode == 2 and len(starts) == 1
        assert "AERIS_MALLOC=jemalloc: libjemalloc is not installed" in proc.stderr


def test_library_calls_do_not_restart(tmp_path):
    """main(argv) from Python (tests, notebooks) never replaces the calling process."""
    code = "from aeris.cli import main; import sys; sys.exit(main(['config', 'show', '--section', 'swipe']))"
    proc, starts = _starts(tmp_path, [sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert len(starts) == 1

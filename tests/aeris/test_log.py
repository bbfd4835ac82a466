"""Console logging of the library: rank 0 speaks by default, every rank on request."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest

from aeris.log import process_rank, setup_console


@pytest.fixture
def console(monkeypatch):
    def run(rank: int, all_ranks: bool) -> tuple[str, str]:
        for k in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PALS_RANKID", "SLURM_PROCID"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("RANK", str(rank))
        setup_console(all_ranks=all_ranks)
        out, err = io.StringIO(), io.StringIO()
        # the handler looks the streams up at each record, so a redirection made later is honoured
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            log = logging.getLogger("aeris.some.module")
            log.info("two\nlines")
            log.debug("hidden")
            log.warning("careful")
            log.error("broken")
        return out.getvalue(), err.getvalue()

    yield run
    setup_console()  # back to the default: rank 0, INFO


def test_rank_zero_prints_info_and_warnings(console):
    out, err = console(0, False)
    assert out == "two\nlines\n"
    assert err == "warning: careful\nerror: broken\n"


def test_other_ranks_print_only_errors(console):
    out, err = console(3, False)
    assert out == "" and err == "error: broken\n"


def test_all_ranks_on_request_with_a_rank_prefix(console):
    out, err = console(3, True)
    assert out == "[rank 3] two\n[rank 3] lines\n"
    assert err == "[rank 3] warning: careful\n[rank 3] error: broken\n"


def test_rank_from_launcher_variables(monkeypatch):
    for k in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PALS_RANKID", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert process_rank() == 0
    monkeypatch.setenv("PMI_RANK", "5")
    assert process_rank() == 5

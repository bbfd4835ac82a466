"""Long jobs that survive: skipped updates, stop requests, faults, corrupt and foreign checkpoints.

The signal tests send real signals (the fault injection makes the process signal itself at a
step, like a scheduler would) and the kill tests kill real subprocesses with SIGKILL.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aeris.checkpoint.training import CheckpointError, list_checkpoints, read_record
from aeris.checkpoint.weights import read_weights
from aeris.train.guard import TooManySkips, UpdateGuard, parse_fault
from aeris.train.metrics_log import read_metrics
from aeris.train.trainer import Trainer
from tests.aeris.train.test_trainer import _cfg, store  # noqa: F401 (the fixture)
from tests.support import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
ENV.pop("AERIS_FAULT", None)


# ---- the guard and the fault syntax (pure) ------------------------------------------------------
def test_guard_skips_non_finite_and_spikes_and_stops_after_too_many():
    g = UpdateGuard(max_consecutive=2, spike_factor=3.0, spike_window=4)
    assert g.check(1.0, float("nan")) == "non-finite" and g.check(float("inf"), 1.0) == "non-finite"
    assert g.check(1.0, 100.0) is None           # no history yet: no spike test
    for n in (1.0, 2.0, 1.5):
        g.record(None, n, 1)
    assert g.check(1.0, 1.5 * 3.0 + 1e-9) == "spike" and g.check(1.0, 4.4) is None  # 3 x median 1.5
    g.record("spike", 9.0, 2)
    g.record("non-finite", float("nan"), 3)
    assert (g.skipped, g.consecutive) == (2, 2)
    state = g.state_dict()
    with pytest.raises(TooManySkips, match=r"3 updates skipped in a row \(the last at step 4: spike\)"):
        g.record("spike", 9.0, 4)
    h = UpdateGuard(2, 3.0, 4)
    h.load_state_dict(state)
    assert h.state_dict() == state and h.history == [1.0, 2.0, 1.5]
    g2 = UpdateGuard(5, 0.0, 4)
    for n in (1.0, 1.0, 1.0):
        g2.record(None, n, 1)
    assert g2.check(1.0, 1e6) is None               # spike detector off by default


def test_fault_syntax():
    assert parse_fault("") is None
    assert parse_fault("nan@3").kind == "nan" and parse_fault("nan@3").step == 3
    f = parse_fault("signal@2:term:3")
    assert (f.kind, f.step, f.signal, f.rank) == ("signal", 2, "SIGTERM", 3)
    assert parse_fault("signal@0:SIGUSR1").rank == 0
    for bad in ("nan", "nan@x", "signal@1", "signal@1:NOPE", "oops@1"):
        with pytest.raises(ValueError, match="fault"):
            parse_fault(bad)


# ---- skipped updates through the trainer --------------------------------------------------------
COMMON = ["train.grad_accum=1", "train.val_every=0", "train.warmup_steps=0", "train.log_every=1",
          "train.ckpt_every=1", "train.keep_checkpoints=5"]


def _state(tr):
    return ({n: p.detach().clone() for n, p in tr.model.named_parameters()},
            {n: t.clone() for n, t in tr.ema.shadow.items()},
            {k: {n: v.clone() for n, v in s.items()} for k, s in tr.optimizer.state_dict()["state"].items()})


def _same(a, b):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], dict):
                for n in x[k]:
                    assert torch.equal(x[k][n], y[k][n]), (k, n)
            else:
                assert torch.equal(x[k], y[k]), k


def test_a_nan_step_is_skipped_without_changing_anything(store, tmp_path):
    root, _ = store
    one = Trainer(_cfg(root, tmp_path / "one", "train.steps=1", *COMMON), resume=False)
    one.run()
    tr = Trainer(_cfg(root, tmp_path / "nan", "train.steps=2", "train.fault=nan@1", *COMMON), resume=False)
    tr.run()
    _same(_state(one), _state(tr))   # step 2 (index 1) changed no parameter, EMA or AdamW state
    recs = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert "skipped" not in recs[0] and recs[1]["skipped"] == "non-finite" and recs[1]["skipped_total"] == 1
    assert recs[1]["loss"] is None  # a non-finite value is written as null
    assert tr.step == 2 and tr.samples_seen == 2   # the data moved on: the bad batch is not retried
    # the guard's counters are part of the checkpoint
    assert read_record(list_checkpoints(tmp_path / "nan")[-1])["guard"]["skipped"] == 1


def test_too_many_skips_stop_with_a_checkpoint_of_the_last_good_state(store, tmp_path):
    root, _ = store
    cfg = _cfg(root, tmp_path, "train.steps=4", "train.fault=nan@1", "train.max_consecutive_skips=0", *COMMON)
    with pytest.raises(TooManySkips, match=r"1 updates skipped in a row \(the last at step 2: non-finite\).*"
                                          r"checkpoint of the last good state at step 2"):
        Trainer(cfg, resume=False).run()
    ck = list_checkpoints(tmp_path)[-1]
    assert read_record(ck)["step"] == 2
    good = read_weights(list_checkpoints(tmp_path)[0])   # step 1: the last applied update
    for n, t in read_weights(ck)["model"].items():
        assert torch.equal(t, good["model"][n]), n


def test_wall_time_budget_stops_cleanly(store, tmp_path):
    root, _ = store
    tr = Trainer(_cfg(root, tmp_path, "train.steps=50", "train.max_wall_minutes=0.0001",
                      *[c for c in COMMON if not c.startswith("train.ckpt_every")], "train.ckpt_every=0"),
                 resume=False)
    last = tr.run()
    assert last["stopped"] == "wall time" and tr.step == 1
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]


# ---- checkpoint safety --------------------------------------------------------------------------
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_good_one(store, tmp_path, caplog):
    root, _ = store
    Trainer(_cfg(root, tmp_path, "train.steps=3", *COMMON), resume=False).run()
    latest = list_checkpoints(tmp_path)[-1]
    shard = sorted(latest.glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="aeris"):
        tr = Trainer(_cfg(root, tmp_path, "train.steps=3", *COMMON), resume=True)
    assert tr.step == 2
    assert any("skipped checkpoint" in r.getMessage() and "step_00000003" in r.getMessage() for r in caplog.records)
    # moved aside: the next saves and their rotation see only good checkpoints
    assert latest.with_name(latest.name + ".corrupt").is_dir() and not latest.exists()
    tr.run()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002", "step_00000003"]
    assert read_record(list_checkpoints(tmp_path)[-1])["step"] == 3


def test_checkpoint_of_another_model_lists_every_mismatched_field(store, tmp_path):
    root, _ = store
    Trainer(_cfg(root, tmp_path, "train.steps=1", *COMMON), resume=False).run()
    with pytest.raises(CheckpointError, match=r"does not fit this model: model\.dim: checkpoint 32, this run 16; "
                                              r"model\.heads: checkpoint 2, this run 4; model\.window"):
        Trainer(_cfg(root, tmp_path, "train.steps=1", "model.dim=16", "model.heads=4", "model.window=[2,2]",
                     *COMMON), resume=True)


# ---- real signals and real kills ----------------------------------------------------------------
def _train_cmd(root, out, steps, *extra, launcher=()):
    cfg = _cfg(root, out, f"train.steps={steps}", *COMMON, *extra)
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in (
        ("data.path", cfg.data.path), ("data.atmospheric", "[geopotential,temperature]"),
        ("data.levels", "[500,850]"), ("data.train_period", f"[{cfg.data.train_period[0]},{cfg.data.train_period[1]}]"),
        ("data.val_period", f"[{cfg.data.val_period[0]},{cfg.data.val_period[1]}]"),
        ("data.test_period", f"[{cfg.data.test_period[0]},{cfg.data.test_period[1]}]"))]
    rest = ["model.window=[4,4]", "model.dim=32", "model.heads=2", "model.mlp_hidden=64", "model.depth=2",
            f"train.out_dir={out}", "train.progress=false", "train.precision=fp32", f"train.steps={steps}",
            *COMMON, *extra]
    return [*(launcher or [sys.executable]), "-m", "aeris.cli", "train", "--config", "tiny", "--device", "cpu",
            *overrides, *rest]


def _run(cmd, **kw):
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=420, **kw)


def _final_weights(out: Path) -> dict:
    return read_weights(list_checkpoints(out)[-1])


def _assert_same_weights(a: dict, b: dict):
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        for n, t in a[part].items():
            assert torch.equal(t, b[part][n]), (part, n)


def test_sigterm_finishes_the_step_checkpoints_and_exits_0_then_resumes(store, tmp_path):
    root, _ = store
    p = _run(_train_cmd(root, tmp_path / "run", 4, "train.fault=signal@1:TERM", "train.ckpt_every=0"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "stopped by SIGTERM after step 2" in p.stdout
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step_00000002"]
    p = _run(_train_cmd(root, tmp_path / "run", 4, "train.ckpt_every=0"))   # the requeued job
    assert p.returncode == 0, p.stderr[-3000:]
    p = _run(_train_cmd(root, tmp_path / "straight", 4, "train.ckpt_every=0"))
    _assert_same_weights(_final_weights(tmp_path / "run"), _final_weights(tmp_path / "straight"))


def _kill_after(cmd, out: Path, step: int, group: bool = False) -> None:
    """Start `cmd`, SIGKILL it (its whole process group) once `step` is logged."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and any(json.loads(l).get("step", 0) >= step for l in log.read_text().splitlines() if l):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkill_and_resume_is_bit_exact(store, tmp_path):
    root, _ = store
    _kill_after(_train_cmd(root, tmp_path / "run", 5), tmp_path / "run", 2)
    done = read_record(list_checkpoints(tmp_path / "run")[-1])["step"]
    assert 1 <= done < 5   # killed after step 2 was logged, maybe before its checkpoint
    assert _run(_train_cmd(root, tmp_path / "run", 5)).returncode == 0
    assert _run(_train_cmd(root, tmp_path / "straight", 5)).returncode == 0
    _assert_same_weights(_final_weights(tmp_path / "run"), _final_weights(tmp_path / "straight"))
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
MESH = ["swipe.pp=2", "swipe.sp=2"]


def test_mesh_sigkill_resume_and_sigterm_to_one_rank(store, tmp_path):
    """A 4-rank pp 2 x sp 2 run killed with SIGKILL resumes bit-exactly; a SIGTERM that reaches
    only rank 2 stops all four ranks after the same step with one checkpoint."""
    root, _ = store
    _kill_after(_train_cmd(root, tmp_path / "run", 4, *MESH, launcher=TORCHRUN), tmp_path / "run", 2)
    assert _run(_train_cmd(root, tmp_path / "run", 4, *MESH, launcher=TORCHRUN)).returncode == 0
    p = _run(_train_cmd(root, tmp_path / "term", 4, *MESH, "train.fault=signal@1:TERM:2", "train.ckpt_every=0",
                        launcher=TORCHRUN))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "stopped by SIGTERM after step 2" in p.stdout and p.stdout.count("stopped by") == 1
    assert [c.name for c in list_checkpoints(tmp_path / "term")] == ["step_00000002"]
    assert _run(_train_cmd(root, tmp_path / "term", 4, *MESH, launcher=TORCHRUN)).returncode == 0
    assert _run(_train_cmd(root, tmp_path / "straight", 4, *MESH, launcher=TORCHRUN)).returncode == 0
    straight = _final_weights(tmp_path / "straight")
    _assert_same_weights(_final_weights(tmp_path / "run"), straight)
    _assert_same_weights(_final_weights(tmp_path / "term"), straight)

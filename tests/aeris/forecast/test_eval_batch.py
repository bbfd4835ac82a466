"""Member batch of the network evaluations: the output does not depend on it, the measured
choice is the cheapest per member, the probe is one evaluation, measurements are cached, and
the background writes finish (or fail) before run_forecast returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeris.data.store import open_store
from aeris.forecast import rollout
from aeris.forecast.config import ForecastConfig
from aeris.forecast.rollout import (RankRole, choose_eval_batch, eval_batch_candidates, measure_eval_batch,
                                    run_forecast)
from aeris.forecast.store_writer import ForecastStore

INIT = "2020-08-01T06"


def _fcfg(out, **kw) -> ForecastConfig:
    base = dict(out=str(out), inits=[INIT], steps=2, members=4, seed=5, progress=False)
    return ForecastConfig(**(base | kw))


@pytest.fixture(scope="module")
def batch_one(fc, tmp_path_factory):
    out = tmp_path_factory.mktemp("eb") / "b1.zarr"
    run_forecast(fc, _fcfg(out, eval_batch=1))
    return open_store(out).load()


@pytest.mark.parametrize("eval_batch", [4, 3, 0], ids=["all-4", "groups-3-1", "measured"])
def test_members_do_not_depend_on_the_evaluation_batch(fc, batch_one, tmp_path, eval_batch):
    out = tmp_path / "b.zarr"
    run_forecast(fc, _fcfg(out, eval_batch=eval_batch))
    other = open_store(out).load()
    assert int(batch_one.sizes["number"]) == 4
    for v in batch_one.data_vars:
        a, b = batch_one[v].values, other[v].values
        assert np.isfinite(a).all()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))
    # members differ from each other (else equality above would say little)
    t2m = batch_one["2m_temperature"].values[0, -1]
    assert np.abs(t2m[0] - t2m[1]).max() > 1e-3


def test_candidates():
    assert eval_batch_candidates(1) == [1]
    assert eval_batch_candidates(2) == [1, 2]
    assert eval_batch_candidates(4) == [1, 2, 4]
    assert eval_batch_candidates(6) == [1, 2, 4, 6]
    assert eval_batch_candidates(8) == [1, 2, 4, 8]


def test_measure_picks_the_lowest_time_per_member():
    """A fake clock: a call on b members costs cost[b]; the first call of each b is a slow warm-up."""
    cost = {1: 1.0, 2: 1.6, 4: 4.4}           # per member 1.0, 0.8, 1.1
    now, seen, calls = [0.0], [], {1: 0, 2: 0, 4: 0}

    def probe(cond, keys):
        b = len(keys)
        seen.append((tuple(cond.shape), tuple(keys)))
        calls[b] += 1
        now[0] += cost[b] + (100.0 if calls[b] == 1 else 0.0)
        return torch.zeros(b)

    cond = torch.zeros(4, 3, 2, 5)
    keys = [(0, 1, m, 0) for m in range(4)]
    times = measure_eval_batch(probe, cond, keys, [1, 2, 4], repeats=2, clock=lambda: now[0])
    assert times == pytest.approx({1: 1.0, 2: 0.8, 4: 1.1})
    assert choose_eval_batch(times) == 2
    assert calls == {1: 3, 2: 3, 4: 3}        # warm-up + 2 timed each
    assert seen[0] == ((1, 3, 2, 5), (keys[0],)) and seen[-1] == ((4, 3, 2, 5), tuple(keys))
    assert choose_eval_batch({1: 0.5, 2: 0.5, 4: 0.7}) == 1  # a tie: the smaller batch


def test_probe_is_one_network_evaluation(fc):
    """The stepper does 2N - 1 evaluations (Heun, Euler last), its probe exactly one."""
    calls = []
    handle = fc.model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        st = fc.stepper()
        L = fc.ctx.layout
        cond = torch.zeros(3, L.n_local_windows, L.tokens_per_piece, fc.model.n_in - len(fc.channels))
        keys = [(1, 2, m, 0) for m in range(3)]
        st.probe()(cond, keys)
        assert calls == [3]
        calls.clear()
        st(cond, keys)
        assert len(calls) == 2 * fc.dcfg.steps - 1
    finally:
        handle.remove()


def test_measurement_is_cached_and_skipped_when_forced(fc, tmp_path, monkeypatch):
    n = []
    real = rollout.measure_eval_batch

    def counting(*a, **k):
        n.append(1)
        return real(*a, **k)

    monkeypatch.setattr(rollout, "measure_eval_batch", counting)
    monkeypatch.setattr(rollout, "_MEASURED", {})
    run_forecast(fc, _fcfg(tmp_path / "a.zarr", steps=1, members=2))
    run_forecast(fc, _fcfg(tmp_path / "b.zarr", steps=1, members=2, seed=9))
    assert len(n) == 1 and len(rollout._MEASURED) == 1
    (times,) = rollout._MEASURED.values()
    assert sorted(times) == [1, 2] and all(t > 0 for t in times.values())
    run_forecast(fc, _fcfg(tmp_path / "c.zarr", steps=1, members=4, eval_batch=2))
    assert len(n) == 1  # forced: nothing measured


def test_a_failed_write_is_raised_and_leaves_no_progress(fc, tmp_path):
    """Writes run in a background thread: their failure still reaches the caller, and the
    progress record of a region is only written after its data."""
    def gather(x):
        if gather.calls == 2:
            raise OSError("disk full")
        gather.calls += 1
        return fc.ds.to_field(x.detach().cpu().numpy())

    gather.calls = 0
    role = RankRole(gather=gather, local_gather=True)
    out = tmp_path / "w.zarr"
    with pytest.raises(OSError, match="disk full"):
        run_forecast(fc, _fcfg(out, steps=3, members=1), role=role)
    store = ForecastStore(out, None)
    assert store.completed_step("i00000_b0000") == 1  # lead 0 and step 1 written, step 2 failed

"""benchmarks/rollout.py on the tiny forecast checkpoint: it runs and its JSON is consistent."""

import importlib.util
import json

import pytest
import torch

from tests.aeris.forecast.conftest import build_checkpoint
from tests.support import REPO

_spec = importlib.util.spec_from_file_location("rollout_bench", REPO / "benchmarks" / "rollout.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_rollout_benchmark_json(tmp_path):
    threads = torch.get_num_threads()
    try:
        _, _, run = build_checkpoint(tmp_path)
        out = tmp_path / "rollout.json"
        res = bench.main(["--checkpoint", str(run), "--init", "2020-08-01T06", "--members", "3", "--steps", "2",
                          "--repeats", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == res
    assert set(res["forward_s_per_member"]) == {"1", "2", "3"}
    assert res["nfe"] == 2 * res["sampler_steps"] - 1 == 3
    best = min(res["forward_s_per_member"].values())
    assert res["evaluations_s_per_member_step"] == pytest.approx(3 * best, rel=1e-3, abs=1e-4)
    assert res["evaluations_cpu_s_per_member_step"] > 0
    for name, row in res["rollout"].items():
        assert row["member_step_s"] > 0 and 1 <= row["eval_batch"] <= 3
        assert row["ratio_to_evaluations"] == pytest.approx(row["member_step_s"] / res["evaluations_s_per_member_step"],
                                                            rel=0.02, abs=1e-3)
    assert res["rollout"]["whole unit"]["eval_batch"] == 3
    assert res["meets_target"] == (res["rollout"]["as aeris forecast"]["ratio_to_evaluations"] <= 1.1)

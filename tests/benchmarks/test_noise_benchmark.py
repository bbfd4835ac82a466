"""benchmarks/noise.py on a tiny grid: it runs, prints its table and writes the documented JSON."""

import importlib.util
import json

import torch

from aeris.diffusion.noise import window_noise
from swipe.layout import WindowLayout
from tests.support import REPO

_spec = importlib.util.spec_from_file_location("noise_bench", REPO / "benchmarks" / "noise.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_noise_benchmark_writes_its_json(tmp_path, capsys):
    out = tmp_path / "noise.json"
    # 72 x 144 with 6 x 6 windows: 12 x 24 windows, divisible by both window groups (4x4, 6x6)
    res = bench.main(["--grid", "72", "144", "--window", "6", "6", "--channels", "5", "--repeats", "2",
                      "--json", str(out)])
    assert json.loads(out.read_text()) == res
    for key in ("rank_1p3b_ms", "rank_40b_ms", "field_ms", "former_rank_1p3b_ms", "former_rank_40b_ms"):
        assert res[key] > 0, key
    cases = res["cases"]
    assert cases["rank_1p3b"]["tokens"] == 72 * 144 // (4 * 4 * 12)
    assert cases["rank_40b"]["tokens"] == 72 * 144 // (6 * 6 * 12)
    assert cases["field"]["tokens"] == 72 * 144 and res["device"] == "cpu"
    assert "1.3B rank" in capsys.readouterr().out


def test_former_generator_shape_and_statistics():
    """The comparison baseline draws standard normals of the same shape as the new generator."""
    layout = WindowLayout(72, 144, 6, 6, 4, 4, 12)
    old = bench.former_window_noise(layout, 5, bench.KEYS, 3)
    assert old.shape == window_noise(layout, 5, bench.KEYS, 3).shape
    assert abs(old.mean().item()) < 0.3 and 0.7 < old.std().item() < 1.3
    assert old.dtype == torch.float32

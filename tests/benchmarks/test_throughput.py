"""benchmarks/throughput.py: MFU against the GEMM rate of the same run, and the split table."""

import importlib.util
import sys

import torch

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
_spec = importlib.util.spec_from_file_location("throughput", REPO / "benchmarks" / "throughput.py")
tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp)


def test_gemm_rate_is_a_rate():
    cpu = torch.device("cpu")
    r = tp.gemm_tflops(cpu, torch.float32, 128, repeats=3)
    assert 1e-4 < r < 10.0         # TFLOP/s of a CPU core: positive and physical


def test_bench_reports_mfu_against_the_measured_gemm(monkeypatch):
    monkeypatch.setattr(tp, "gemm_tflops", lambda *a, **k: 0.05)
    r = tp.bench("tiny", ["model.depth=1", "model.window=[8,8]"], (16, 32), torch.device("cpu"), "fp32",
                 1, 1, 0, 3, 1, None)
    assert r["gemm_tflops"] == 0.05
    assert abs(r["mfu_vs_gemm"] - r["tflops_exact"] / 0.05) < 1e-12


def test_split_table_prints_every_rank(capsys):
    t = {"seconds": 1.0, "data_wait_s": 0.01, "noise_s": 0.02, "comm_wait_s": 0.2, "bubble_s": 0.1,
         "compute_s": 0.67, "data_and_noise_frac": 0.03}
    tp.print_split([{"mesh": {"dp": 1, "pp": 2, "wy": 1, "wx": 1, "sp": 2}, "ranks": [t, t], "mfu_vs_gemm": 0.5}], 0.1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("pp2xsp2")]
    assert len(lines) == 2 and lines[0].split()[-2:] == ["3.0%", "50.0%"]

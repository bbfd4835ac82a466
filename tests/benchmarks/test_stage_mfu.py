"""benchmarks/stage_mfu.py: its FLOP count against torch's own counter, and a tiny CPU run."""

import importlib.util
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from aeris.config import load_config
from aeris.model.init import materialise
from aeris.model.network import AerisNet
from swipe.context import SerialContext
from swipe.layout import WindowLayout
from swipe.pipeline import plan_stages
from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
_spec = importlib.util.spec_from_file_location("stage_mfu", REPO / "benchmarks" / "stage_mfu.py")
stage_mfu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage_mfu)


def test_stage_flops_equal_torch_flop_counter():
    """The forward matmul FLOPs the benchmark credits a middle stage with are the ones torch
    counts when the stage runs (FlopCounterMode counts every mm/bmm/SDPA)."""
    m = load_config("tiny", ["model.rope=false", "model.pole_mask=false"]).model  # no pole halves: full windows
    grid = (16, 32)
    with torch.device("meta"):
        net = AerisNet.for_data(m, 5, 2, grid)
    plans = plan_stages(net.n_blocks, 3, net.block_frame)
    st = materialise(net.stage(plans[1]), "cpu", seed=0)   # the middle stage: blocks only
    win = m.window[0] * m.window[1]
    lay = WindowLayout(*grid, *m.window)
    x = torch.randn(1, lay.n_local_windows, win, m.dim)
    # the math backend: torch's counter has no formula for the CPU's fused SDPA kernel
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        st(x, torch.rand(1), SerialContext(lay))
    want = stage_mfu.stage_flops(m, len(st.plan.blocks), grid[0] * grid[1], False, False, st.n_in, st.n_out)
    assert fc.get_total_flops() == want / 3


def test_tiny_cpu_run_writes_json(tmp_path):
    out = tmp_path / "s.json"
    rc = stage_mfu.main(["--device", "cpu", "--precision", "fp32", "--config", "tiny", "--mesh", "1,2,1,1,1",
                         "--stage", "0", "--grid", "16", "32", "--tokens", "128", "--steps", "1", "--warmup", "0",
                         "--no-compile", "--gemm-n", "256", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    (row,) = r["rows"]
    assert row["mode"] == "eager" and row["step_s"] > 0 and r["gemm_tflops"] > 0
    assert row["sdpa"] == ["flash-for-cpu"]        # the CPU's fused kernel, seen by the profiler
    assert abs(row["tflops"] - r["flops_per_step"] / row["step_s"] / 1e12) < 1e-9
    assert r["tokens"] == 128 and r["planned_step_bytes"] > 0

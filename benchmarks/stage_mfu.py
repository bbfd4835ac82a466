"""Model FLOP utilisation of ONE rank's pipeline stage on one device, eager and compiled.

    python benchmarks/stage_mfu.py --device cuda --json OUT              # 1.3B-shaped stage, bf16
    python benchmarks/stage_mfu.py --device cpu --precision fp32 --tokens 128 \
        --config tiny --stage 0 --mesh 1,2,1,1,1 --grid 16 32 --steps 2   # a quick CPU check

The stage is built the way a SWiPe rank builds it (declared on the meta device, only stage K
allocated, keyed initialisation; aeris.model.init) and trained on ``--tokens`` tokens in whole
windows on a one-rank context: the FLOPs of a rank of the 1.3B layout (pp 10 x sp 12 x window
4x4 on 720x1440: 5,400 tokens, 72 windows x 75 tokens, 1 head after Ulysses) equal those of 6
whole 30x30 windows with all 12 heads, which is what one device runs here. No communication:
this measures the compute a rank's step is made of.

Reported, per mode (eager, then ``torch.compile`` of the blocks):

* step seconds of forward + backward (with the configured block recompute) + fused AdamW;
* model TFLOP/s: the stage's matmul FLOPs, 3x forward (recompute not counted, as MFU is
  defined), by ``aeris.model.flops.forward_macs``;
* MFU against the GEMM rate measured in the same run (a square matmul in the same precision)
  and against the device's nominal dense peak (``--peak-tflops`` or the table in
  benchmarks/throughput.py);
* which SDPA kernel ran (flash / memory-efficient / cudnn / math / flash-for-cpu), from the
  profiler's operator names;
* peak device memory against the layout planner's prediction (CUDA only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aeris.config import load_config  # noqa: E402
from aeris.model.flops import forward_macs  # noqa: E402
from aeris.model.init import materialise  # noqa: E402
from aeris.model.network import AerisNet  # noqa: E402
from swipe.context import SerialContext  # noqa: E402
from swipe.layout import WindowLayout  # noqa: E402
from swipe.pipeline import plan_stages  # noqa: E402

import layout_planner  # noqa: E402
from memory import stage_mesh, write_json  # noqa: E402
from throughput import device_peak, gemm_tflops, synchronize  # noqa: E402

# aten operator of each SDPA kernel (what the profiler records on the host, whatever the device)
SDPA_KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash-for-cpu",
    "aten::_scaled_dot_product_attention_math": "math",
}


def stage_flops(m, n_blocks: int, tokens: int, first: bool, last: bool, n_in: int, n_out: int) -> float:
    """Matmul FLOPs of one training step (fwd + bwd = 3x fwd) of a stage on one micro-batch."""
    macs = forward_macs(dataclasses.replace(m, depth=n_blocks), tokens, n_in, n_out)
    if not first:
        macs.pop("embed")
    if not last:
        macs.pop("head_adaln")
        macs.pop("head")
    return 3 * 2 * float(sum(macs.values()))


def sdpa_kernel_used(fn) -> list[str]:
    """Names of the SDPA kernels that ran in ``fn()`` (profiler operator names)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = {e.key for e in prof.key_averages()}
    return sorted({v for k, v in SDPA_KERNELS.items() if k in names})


def _compile_blocks(st) -> str:
    """torch.compile each of the stage's blocks (the benchmark's own wrapping)."""
    for i in st.plan.blocks:
        st.blocks[i] = torch.compile(st.blocks[i])
    return "torch.compile(block) per block"


def measure(cfg_name: str, mesh: tuple[int, ...], stage: int, grid: tuple[int, int], tokens: int | None,
            device: str, precision: str, steps: int, warmup: int, compile_too: bool,
            n_prog: int, n_forcing: int, peak_override: float | None, gemm_n: int) -> dict:
    cfg = load_config(cfg_name)
    m = cfg.model
    dp, pp, wy, wx, sp = mesh
    lay = WindowLayout(*grid, *m.window, wpy=wy, wpx=wx, sp=sp)
    win = m.window[0] * m.window[1]
    n_win = max(1, -(-(tokens or lay.tokens_per_rank) // win))
    t = n_win * win
    dev = torch.device(device)
    amp = torch.bfloat16 if precision == "bf16" else None
    name, peak = device_peak(dev, precision, peak_override)
    gemm = gemm_tflops(dev, torch.bfloat16 if amp else torch.float32, gemm_n)
    planned = layout_planner.plan(cfg, mesh, grid, n_micro=1, n_prog=n_prog, n_forcing=n_forcing, stage=stage,
                                  tokens=t, weight_group=1, device=dev.type, act_bytes=2 if amp else 4)
    cuda = dev.type == "cuda"
    with torch.device("meta"):
        net = AerisNet.for_data(m, n_prog, n_forcing, grid)
    plans = plan_stages(net.n_blocks, pp, net.block_frame)
    st = materialise(net.stage(plans[stage]), dev, seed=0)
    # whole windows in one row: the FLOPs depend on the token count, not on where tokens lie
    st.grid = (m.window[0], m.window[1] * n_win)
    ctx = SerialContext(WindowLayout(*st.grid, *m.window))
    fused = {"fused": True} if dev.type in ("cuda", "xpu") else {"foreach": True}
    opt = torch.optim.AdamW(st.parameters(), lr=1e-4, **fused)
    g = torch.Generator(device=dev).manual_seed(0)
    width = st.n_in if st.plan.is_first else m.dim
    x = torch.randn(1, n_win, win, width, device=dev, generator=g)
    tt = torch.rand(1, device=dev, generator=g)
    flops = stage_flops(m, len(st.plan.blocks), t, st.plan.is_first, st.plan.is_last, st.n_in, st.n_out)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            y = st(x, tt, ctx)
        y.float().square().mean().backward()
        opt.step()

    def timed(mode: str) -> dict:
        t_first = time.perf_counter()
        step()
        synchronize(dev)
        first_s = time.perf_counter() - t_first
        for _ in range(warmup):
            step()
        kernels = sdpa_kernel_used(lambda: (step(), synchronize(dev)))
        synchronize(dev)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(dev)
        dt = (time.perf_counter() - t0) / steps
        tf = flops / dt / 1e12
        row = {"mode": mode, "step_s": dt, "first_step_s": first_s, "tflops": tf,
               "mfu_vs_gemm": tf / gemm, "mfu_vs_peak": tf / peak if peak else None, "sdpa": kernels}
        if cuda:
            row["peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
        return row

    rows = [timed("eager")]
    if compile_too:
        how = _compile_blocks(st)
        try:
            rows.append(timed("compiled") | {"how": how})
        except Exception as e:  # report, do not hide: a compile failure is a result here
            rows.append({"mode": "compiled", "error": f"{type(e).__name__}: {e}"[:500]})
    return {"config": cfg_name, "mesh": list(mesh), "stage": stage, "blocks": list(st.plan.blocks),
            "dim": m.dim, "heads": m.heads, "window": list(m.window), "tokens": t, "windows": n_win,
            "device": name, "precision": precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gemm_tflops": gemm, "peak_tflops": peak,
            "stage_params": int(sum(p.numel() for p in st.parameters())), "flops_per_step": flops,
            "planned_step_bytes": int(planned["memory_bytes"]["step_peak"]), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="aeris-1.3b-6h")
    p.add_argument("--mesh", default="1,10,4,4,12", help="dp,pp,wy,wx,sp (for the stage and token count)")
    p.add_argument("--stage", type=int, default=1, help="pipeline stage (default 1: a 3-block middle stage)")
    p.add_argument("--grid", type=int, nargs=2, default=(720, 1440), metavar=("H", "W"))
    p.add_argument("--tokens", type=int, help="tokens per micro-batch (default: the mesh's per rank)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--channels", type=int, default=69)
    p.add_argument("--forcings", type=int, default=4)
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--gemm-n", type=int, help="size of the square GEMM that measures the rate")
    p.add_argument("--json", help="write the result here")
    a = p.parse_args(argv)
    mesh = stage_mesh(p, a.mesh, a.stage)
    gemm_n = a.gemm_n or (8192 if a.device.startswith("cuda") else 1024)
    r = measure(a.config, mesh, a.stage, tuple(a.grid), a.tokens, a.device, a.precision, a.steps, a.warmup,
                not a.no_compile, a.channels, a.forcings, a.peak_tflops, gemm_n)
    print(f"{r['device']}  {r['precision']}  stage {r['stage']} of {r['config']} (blocks {r['blocks']}, "
          f"d {r['dim']}, {r['heads']} heads, window {r['window']}, {r['tokens']} tokens)")
    print(f"measured GEMM {r['gemm_tflops']:.3g} TFLOP/s; nominal peak {r['peak_tflops']}")
    print(f"{'mode':<10}{'step ms':>9}{'TFLOP/s':>9}{'MFU/GEMM':>10}{'MFU/peak':>10}{'peak GB':>9}{'plan GB':>9}  sdpa")
    for row in r["rows"]:
        if "error" in row:
            print(f"{row['mode']:<10} failed: {row['error']}")
            continue
        mp = f"{100 * row['mfu_vs_peak']:.1f}%" if row["mfu_vs_peak"] else "n/a"
        pk = f"{row['peak_bytes'] / 1e9:.2f}" if "peak_bytes" in row else "n/a"
        print(f"{row['mode']:<10}{1e3 * row['step_s']:>9.1f}{row['tflops']:>9.2f}{100 * row['mfu_vs_gemm']:>9.1f}%"
              f"{mp:>10}{pk:>9}{r['planned_step_bytes'] / 1e9:>9.2f}  {','.join(row['sdpa']) or '-'}")
    if a.json:
        write_json(a.json, r)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

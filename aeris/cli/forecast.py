"""`aeris forecast` (ensemble rollout -> WB2-style zarr) and `aeris forecast-stability`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from aeris.cli.common import add_config_args, load_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "forecast", help="ensemble forecast from a checkpoint into a WeatherBench2-style zarr store",
        description="Autoregressive ensemble rollout from a checkpoint (EMA weights by default) into a "
                    "WB2-style forecast zarr store (time = init, prediction_timedelta, number). Resumes a "
                    "killed run of the same request; refuses to replace a different one without "
                    "--overwrite. Under torchrun/mpiexec, members and inits are spread over the ranks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p)
    _common(p)
    p.add_argument("--out", help="output zarr store [forecast.out]")
    p.add_argument("--start", help="first init time of a range [forecast.start]")
    p.add_argument("--end", help="last init time of a range [forecast.end]")
    p.add_argument("--stride-hours", type=int, help="init stride of a range [forecast.stride_hours]")
    p.add_argument("--steps", type=int, help="model steps per forecast [forecast.steps]")
    p.add_argument("--members", type=int, help="members 0..N-1 [forecast.members]")
    p.add_argument("--member-ids", type=int, nargs="+", help="only these members (regenerate some alone)")
    p.add_argument("--batch-members", type=int, help="members sampled together [forecast.batch_members]")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")
    p.add_argument("--no-initial", action="store_true", help="do not write lead 0 (the initial condition)")
    p.set_defaults(func=run)

    s = sub.add_parser(
        "forecast-stability", help="long-rollout stability check (finite, physical bounds, drift)",
        description="Roll a checkpoint far (default 90 days) with a few members and report per channel "
                    "whether fields stay finite and within physical bounds, the first step that breaks "
                    "them and the global-mean drift; writes stability.json/.txt/.png. Exit status 0 = stable, "
                    "3 = unstable (a bound broken or a non-finite value), 1 = error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(s)
    _common(s)
    s.add_argument("--days", type=float, help="forecast length in days [forecast.stability_days]")
    s.add_argument("--members", type=int, help="members [forecast.stability_members]")
    s.add_argument("--out", help="report folder [forecast.stability_out]")
    s.set_defaults(func=run_stability)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint file or run directory [forecast.checkpoint, else train.out_dir]")
    p.add_argument("--init", nargs="+", help="initial time(s), ISO [forecast.inits]")
    p.add_argument("--seed", type=int, help="[forecast.seed]")
    p.add_argument("--sampler-steps", type=int, help="ODE sampler steps (0 = the checkpoint's) [forecast.sampler_steps]")
    p.add_argument("--churn", type=float, help="sampler churn (< 0 = the checkpoint's) [forecast.churn]")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", help="[forecast.device]")
    p.add_argument("--no-progress", action="store_true")


def _forecast_config(args: argparse.Namespace):
    """(run config, forecast config with the command-line flags applied)."""
    cfg = load_from_args(args)
    f = cfg.forecast
    flags = {
        "checkpoint": args.checkpoint, "out": getattr(args, "out", None) if args.func is run else None,
        "inits": args.init, "seed": args.seed, "sampler_steps": args.sampler_steps, "churn": args.churn,
        "device": args.device,
        "start": getattr(args, "start", None), "end": getattr(args, "end", None),
        "stride_hours": getattr(args, "stride_hours", None), "steps": getattr(args, "steps", None),
        "member_ids": getattr(args, "member_ids", None), "batch_members": getattr(args, "batch_members", None),
        "overwrite": getattr(args, "overwrite", None),
    }
    if args.func is run:
        flags["members"] = args.members
    else:
        flags["stability_members"] = args.members
        flags["stability_days"] = args.days
        flags["stability_out"] = args.out
    f = replace(f, **{k: v for k, v in flags.items() if v is not None})
    if args.no_ema:
        f = replace(f, use_ema=False)
    if args.no_progress:
        f = replace(f, progress=False)
    if getattr(args, "no_initial", False):
        f = replace(f, include_initial=False)
    if not f.checkpoint:
        f = replace(f, checkpoint=cfg.train.out_dir)
    return cfg, f


def _load(cfg, f, device, overrides=()):
    """The checkpoint's forecaster. The sampler is the checkpoint's diffusion section with
    --sampler-steps / --churn applied: a ``diffusion.*`` override on the command line whose
    value differs from it is not used, and a warning names it rather than dropping it silently
    (the demo passes its training overrides on, which the checkpoint already holds)."""
    from aeris.forecast.rollout import load_forecaster

    fc = load_forecaster(f.checkpoint, use_ema=f.use_ema, sampler_steps=f.sampler_steps, churn=f.churn,
                         device=device)
    keys = [o.split("=", 1)[0] for o in overrides]
    unused = [o for o, k in zip(overrides, keys) if k.startswith("diffusion.")
              and getattr(cfg.diffusion, k[len("diffusion."):], None) != getattr(fc.dcfg, k[len("diffusion."):], None)]
    if unused:
        print(f"aeris forecast: warning: the sampler is the checkpoint's (steps {fc.dcfg.steps}, churn "
              f"{fc.dcfg.churn}); not used: {' '.join(unused)} (--sampler-steps and --churn change a "
              f"forecast's sampler)", file=sys.stderr)
    return fc


def _fail(cmd: str, e: Exception) -> int:
    print(f"aeris {cmd}: error: {e}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from aeris.data.store import DataError
    from aeris.forecast.rollout import ForecastError, ForecastStopped, run_forecast
    from aeris.forecast.store_writer import ForecastStoreError
    from aeris.checkpoint.training import CheckpointError
    from swipe.launch import configure_threads, device_request, pick_device

    cfg, f = _forecast_config(args)
    configure_threads(f.threads)
    if cfg.swipe.world_size > 1:
        return _run_swipe(cfg, f, args.overrides)
    try:
        fc = _load(cfg, f, pick_device(0, device_request(f.device, distributed=False)), args.overrides)
        out = run_forecast(fc, f)
    except ForecastStopped as e:  # a clean stop (signal): what is written is complete
        print(f"forecast {f.out}: {e}")
        return 0
    except (ForecastError, ForecastStoreError, DataError, CheckpointError) as e:
        return _fail("forecast", e)
    print(f"forecast written to {out}")
    return 0


def _run_swipe(cfg, f, overrides=()) -> int:
    """One rank of a SWiPe forecast (started by torchrun / mpiexec / srun with swipe.* ranks)."""
    from aeris.forecast.parallel import swipe_forecaster
    from aeris.forecast.rollout import run_forecast
    from swipe.launch import device_request, init_distributed, shutdown
    from swipe.mesh import MeshError, SwipeMesh

    sw = cfg.swipe
    info = init_distributed(sw.backend, device_request(f.device, distributed=True))
    try:
        if info.world_size != sw.world_size:
            raise MeshError(f"launched {info.world_size} ranks but the mesh swipe.dp x pp x wy x wx x sp = "
                            f"{sw.world_size}: start as many ranks as the mesh has")
        mesh = SwipeMesh.build(sw.dp, sw.pp, sw.wy, sw.wx, sw.sp, device_type=info.device.type)
        fc = _load(cfg, f, info.device, overrides)
        local, stepper, role = swipe_forecaster(fc, mesh)
        out = run_forecast(local, f, stepper=stepper, role=role)
    finally:
        if info.launcher != "existing":  # only a group we started
            shutdown()
    if info.rank == 0:
        print(f"forecast written to {out}")
    return 0


def run_stability(args: argparse.Namespace) -> int:
    from aeris.data.store import DataError
    from aeris.forecast.rollout import ForecastError, resolve_inits
    from aeris.forecast.stability import format_table, run_stability as stability, write_report
    from aeris.checkpoint.training import CheckpointError
    from swipe.launch import configure_threads, device_request, pick_device

    cfg, f = _forecast_config(args)
    configure_threads(f.threads)
    try:
        inits = resolve_inits(f)
        fc = _load(cfg, f, pick_device(0, device_request(f.device, distributed=False)), args.overrides)
        report = stability(fc, inits[0], days=f.stability_days, members=f.stability_members, seed=f.seed,
                           forcing_fallback=f.forcing_fallback, progress=f.progress)
    except (ForecastError, DataError, CheckpointError) as e:
        return _fail("forecast-stability", e)
    paths = write_report(report, f.stability_out)
    print(format_table(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if report["stable"] else 3

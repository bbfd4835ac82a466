"""`aeris jobscript`: a PBS, Slurm or torchrun job script for a SWiPe mesh (aeris.distributed.jobscript)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "jobscript", help="write a PBS / Slurm / torchrun job script for a SWiPe mesh",
        description="Write the job script of `aeris train` on a mesh: node count and ranks per node from the "
                    "mesh, every sequence group (sp) on one node (refused otherwise), CPU binding, the "
                    "stop-and-resubmit pattern of long runs (PBS: train.max_wall_minutes + qsub; Slurm: "
                    "--signal=USR1 + --requeue) and train.grad_accum (default 4 x pp, a 1F1B bubble under "
                    "20 %). Trailing KEY=VALUE arguments are passed to `aeris train`.",
        epilog="example: aeris jobscript --scheduler pbs --mesh 1,10,4,4,12 --ranks-per-node 12 "
               "--config aeris-1.3b-6h --walltime 06:00:00 --cpus-per-rank 8 --out jobs/aurora.sh",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build_arguments(p)
    p.set_defaults(func=run)


def build_arguments(p: argparse.ArgumentParser) -> None:
    """The options, one per `JobSpec` field (the tests read them back from a script's header)."""
    from aeris.distributed.jobscript import SCHEDULERS, JobSpec
    d = JobSpec.__dataclass_fields__
    p.add_argument("--scheduler", required=True, choices=SCHEDULERS)
    p.add_argument("--mesh", required=True, help="dp,pp,wy,wx,sp")
    p.add_argument("--ranks-per-node", type=int, required=True, help="ranks (devices) per node")
    p.add_argument("--config", required=True, help="config of `aeris train` (a name in configs/ or a path)")
    p.add_argument("--out", default=None, help="write the script here (default: stdout); a PBS job "
                                               "resubmits itself from this path, relative to the submission directory")
    for name, kind, text in (
            ("name", str, "job name"), ("title", str, "a comment line saying what the job is"),
            ("walltime", str, "HH:MM:SS"), ("queue", str, "PBS -q / Slurm -p"),
            ("account", str, "PBS -A / Slurm -A"),
            ("pbs_resources", str, "appended to PBS select=N, e.g. system=polaris"),
            ("filesystems", str, "PBS -l filesystems="), ("gpus_per_node", int, "Slurm --gpus-per-node (0: not asked)"),
            ("cpus_per_rank", int, "cores bound to each rank (OMP_NUM_THREADS)"),
            ("net_interface", str, "SWIPE_NET_INTERFACE: the interface whose address rank 0 publishes (e.g. hsn0)"),
            ("steps", int, "train.steps (0: the config's); a PBS or Slurm job runs again until this step"),
            ("grad_accum", int, "train.grad_accum, micro-batches per step (0: 4 x pp)"),
            ("out_dir", str, "train.out_dir ('': runs/<name>)"), ("data_path", str, "data.path ('': the config's)"),
            ("venv", str, "virtual environment to activate"),
            ("wall_margin_minutes", int, "PBS: stop the run this long before the walltime"),
            ("signal_seconds", int, "Slurm: SIGUSR1 this long before the time limit")):
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=d[name].default, help=text)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more `aeris train` overrides")


def spec_from_args(args: argparse.Namespace):
    from aeris.distributed.jobscript import JobSpec, parse_mesh
    keys = [k for k in JobSpec.__dataclass_fields__ if k not in ("mesh", "script", "overrides")]
    return JobSpec(mesh=parse_mesh(args.mesh), script=args.out or "", overrides=tuple(args.overrides),
                   **{k: getattr(args, k) for k in keys})


def run(args: argparse.Namespace) -> int:
    from aeris.distributed.jobscript import JobScriptError, render
    try:
        spec = spec_from_args(args)
        text = render(spec)
    except JobScriptError as e:
        print(f"aeris jobscript: error: {e}", file=sys.stderr)
        return 2
    for w in spec.warnings():
        print(f"aeris jobscript: warning: {w}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.chmod(0o755)
        nodes, per_node = spec.layout()
        print(f"wrote {out}: {nodes} node{'s' if nodes > 1 else ''} x {per_node} ranks", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

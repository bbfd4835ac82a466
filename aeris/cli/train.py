"""`aeris train`: train the diffusion model (one process, or a SWiPe mesh under a launcher)."""

from __future__ import annotations

import argparse
import json
import sys

from aeris.cli.common import add_config_args, load_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the model (serial, or under torchrun/mpiexec with swipe.* > 1)",
        description="Train the AERIS diffusion model. With swipe.dp/pp/wy/wx/sp = 1 it runs in this "
                    "process; otherwise start it under torchrun, mpiexec or srun with as many ranks as "
                    "the mesh has (see README, 'Running on a supercomputer'). Both run the same training "
                    "loop; it resumes from the run directory's newest checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, default="tiny")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    p.add_argument("--skill", action="store_true",
                   help="after training, print the ensemble one-step RMSE vs persistence on held-out times")
    p.add_argument("--skill-members", type=int, default=4)
    p.add_argument("--skill-inits", type=int, default=4)
    p.add_argument("--device", default="auto",
                   help="auto (an accelerator if one is visible, else cpu), cpu, cuda, xpu; the same in one "
                        "process and under a mesh (each rank takes its node-local device); an index "
                        "(cuda:1) in one process only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aeris.checkpoint.training import CheckpointError
    from aeris.data.store import DataError
    from aeris.log import process_rank
    from aeris.train.guard import TooManySkips
    from aeris.train.trainer import run_training
    from swipe.launch import LaunchError
    from swipe.mesh import MeshError
    from swipe.pipeline import PipelineError

    cfg = load_from_args(args)
    try:
        last, report = run_training(cfg, resume=not args.no_resume, device=args.device,
                                    skill=(args.skill_inits, args.skill_members) if args.skill else None)
    except (MeshError, LaunchError, PipelineError, DataError, CheckpointError, TooManySkips) as e:
        # a user's error: one line (from rank 0 under a launcher), no traceback, non-zero exit
        if process_rank() == 0:
            print(f"aeris train: error: {e}", file=sys.stderr, flush=True)
        return 3 if isinstance(e, TooManySkips) else 2
    if last:
        print(json.dumps({k: v for k, v in last.items() if v is not None}), flush=True)
    if report:
        print(report, flush=True)
    return 0

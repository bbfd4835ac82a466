"""`aeris train`: train the diffusion model (one process, or a SWiPe mesh under a launcher)."""

from __future__ import annotations

import argparse
import json

from aeris.cli.common import add_config_args, load_from_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the model (serial, or under torchrun/mpiexec with swipe.* > 1)",
        description="Train the AERIS diffusion model. With swipe.dp/pp/wy/wx/sp = 1 it runs in this "
                    "process; otherwise start it under torchrun, mpiexec or srun with as many ranks as "
                    "the mesh has (see README, 'Running on a supercomputer').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, default="tiny")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if checkpoints exist")
    p.add_argument("--skill", action="store_true",
                   help="after training, print the ensemble one-step RMSE vs persistence on held-out times")
    p.add_argument("--skill-members", type=int, default=4)
    p.add_argument("--skill-inits", type=int, default=4)
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:1, xpu ... (under a SWiPe mesh a non-cpu value lets each rank pick its own device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    if cfg.swipe.world_size > 1:
        from aeris.train.swipe_trainer import run_distributed
        return run_distributed(cfg, resume=not args.no_resume,
                               device=None if args.device == "cpu" else args.device,
                               skill=(args.skill_inits, args.skill_members) if args.skill else None)
    from aeris.train.trainer import Trainer
    trainer = Trainer(cfg, resume=not args.no_resume, device=args.device)
    last = trainer.run()
    print(json.dumps({k: v for k, v in last.items() if v is not None}, indent=None))
    if args.skill:
        report_skill(trainer, args.skill_inits, args.skill_members)
    return 0


def report_skill(trainer, inits: int, members: int) -> dict:
    """Print the ensemble one-step skill of a serial Trainer (SWiPe: run_distributed(skill=...))."""
    from aeris.train.skill import format_skill_report
    s = trainer.one_step_skill(inits, members, progress=True)
    print(format_skill_report(s))
    return s

"""`aeris report`: the demo's report (report.html, report.md, summary.json) from a run's outputs."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="the one-page report and summary.json of a demo run (what `aeris demo` writes last)",
        description="Build report.html (self-contained), report.md and summary.json from the outputs of a "
                    "demo run: scores/ (aeris evaluate), tracks/ (aeris track), the training run's metrics "
                    "and checkpoints, and demo_stages.json. Prints the targets, PASS or MISS "
                    "(docs/evaluation.md, \"Demo targets\").",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="the demo's output folder (its --out)")
    p.add_argument("--train-dir", default=None, help="the training run (metrics.jsonl, checkpoints/) [--run]")
    p.add_argument("--figures", default=None,
                   help="also write the two small README figures (demo_skill.png, demo_laura.png) here, "
                        "e.g. docs/img")
    p.add_argument("--no-report", action="store_true", help="only the --figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aeris.evaluate.report import RunLayout, build_report, readme_figures
    from aeris.evaluate.skill import EvaluationError
    from aeris.evaluate.summary import target_lines
    layout = RunLayout(args.run, train=args.train_dir)
    try:
        if not args.no_report:
            out = build_report(layout)
            print("\n".join(target_lines(out["summary"])))
        if args.figures:
            for path in readme_figures(layout, args.figures):
                print(f"figure: {path}")
    except (FileNotFoundError, EvaluationError, ValueError) as e:
        print(f"aeris report: {e}", file=sys.stderr)
        return 1
    return 0

"""Job scripts for a SWiPe mesh: PBS (mpiexec), Slurm (srun) or one node (torchrun).

    spec = JobSpec("pbs", (1, 10, 4, 4, 12), ranks_per_node=12, config="aeris-1.3b-6h")
    text = render(spec)          # the script; spec.warnings() lists what deserves a look

Pure: a spec in, the script's text out (docs/architecture.md, "Launch"). What a script does:

* nodes = world / ranks per node (a world smaller than one node runs on one node); the
  launcher places ranks block-wise (consecutive ranks on one node), so with sp innermost in
  the mesh numbering (swipe.mesh) every sequence group -- an all-to-all per block -- is on one
  node exactly when the node's rank count is a multiple of sp; a mesh that would put a
  sequence group across nodes is refused;
* CPU binding: ``cpus_per_rank`` cores per rank (``mpiexec --depth C --cpu-bind depth``, Slurm
  ``--cpus-per-task C --cpu-bind=cores``) and OMP_NUM_THREADS = C;
* long runs (docs/training.md, "Long runs"): PBS sets ``train.max_wall_minutes`` to the
  walltime minus a margin (the run stops cleanly with a checkpoint) and resubmits the script;
  Slurm asks for SIGUSR1 ``signal_seconds`` before the limit (``--signal``), which the trainer
  treats the same way, and requeues the job (``--requeue``); either repeats until the metrics
  log holds the step ``train.steps``; a failing run (non-zero exit) is not resubmitted;
* ``train.grad_accum`` m defaults to 4 pp: the 1F1B bubble (pp-1)/(m+pp-1) stays below 20 %
  (`pipeline_bubble`; a larger one is a warning).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, fields

from swipe.mesh import DIMS, MeshError, MeshShape

__all__ = ["SCHEDULERS", "BUBBLE_WARN", "JobScriptError", "JobSpec", "pipeline_bubble", "render",
           "parse_mesh", "walltime_minutes"]

SCHEDULERS = ("pbs", "slurm", "torchrun")
BUBBLE_WARN = 0.20  # the bubble fraction above which a pipeline wastes more than a fifth of its devices


class JobScriptError(ValueError):
    """A job that cannot be laid out as asked (nodes, sequence groups, options)."""


def pipeline_bubble(pp: int, n_micro: int) -> float:
    """Idle fraction of a 1F1B pipeline of pp stages over m micro-batches: (pp-1)/(m+pp-1)
    (each stage is busy m of the m + pp - 1 slots of the slowest stage)."""
    if pp < 1 or n_micro < 1:
        raise ValueError(f"pp and the micro-batches must be >= 1, got pp={pp}, m={n_micro}")
    return (pp - 1) / (n_micro + pp - 1)


def parse_mesh(text: str) -> tuple[int, int, int, int, int]:
    """``"dp,pp,wy,wx,sp"`` -> a 5-tuple of positive integers."""
    parts = text.split(",")
    if len(parts) != 5 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise JobScriptError(f"mesh {text!r}: expected five positive integers dp,pp,wy,wx,sp")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def walltime_minutes(walltime: str) -> int:
    """``HH:MM:SS`` (or ``MM:SS``... as PBS and Slurm write it) -> whole minutes."""
    if not re.fullmatch(r"\d+(:\d{1,2}){0,2}", walltime):
        raise JobScriptError(f"walltime {walltime!r}: expected HH:MM:SS")
    parts = [int(p) for p in walltime.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts)
    return h * 60 + m + s // 60


@dataclass(frozen=True)
class JobSpec:
    """Everything a job script says; the defaults are those of `aeris jobscript`."""

    scheduler: str
    mesh: tuple[int, int, int, int, int]
    ranks_per_node: int
    config: str
    name: str = "aeris-swipe"
    title: str = ""                 # one comment line saying what the job is
    walltime: str = "01:00:00"
    queue: str = ""                 # PBS -q / Slurm -p
    account: str = ""               # PBS -A / Slurm -A
    pbs_resources: str = ""         # appended to select=N, e.g. system=polaris
    filesystems: str = ""           # PBS -l filesystems=
    gpus_per_node: int = 0          # Slurm --gpus-per-node (0: not asked)
    cpus_per_rank: int = 1
    net_interface: str = ""         # SWIPE_NET_INTERFACE: the MPI rendezvous address (swipe.launch)
    steps: int = 0                  # train.steps (0: the config's; a PBS/Slurm job needs it)
    grad_accum: int = 0             # 0: 4 x pp
    out_dir: str = ""               # '' = runs/<name>
    data_path: str = ""
    script: str = ""                # where the script is written: PBS resubmits it from there
    venv: str = ".venv"
    wall_margin_minutes: int = 15   # PBS: the run stops this long before the walltime
    signal_seconds: int = 120       # Slurm: SIGUSR1 this long before the time limit
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise JobScriptError(f"scheduler {self.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
        try:
            MeshShape(*self.mesh)
        except (MeshError, TypeError) as e:
            raise JobScriptError(f"mesh {self.mesh}: {e}") from None
        for k in ("ranks_per_node", "cpus_per_rank"):
            if getattr(self, k) < 1:
                raise JobScriptError(f"{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.grad_accum < 0 or self.gpus_per_node < 0 or self.steps < 0:
            raise JobScriptError("grad-accum, gpus-per-node and steps must be >= 0")
        if self.scheduler != "torchrun" and not self.steps:
            raise JobScriptError(f"a {self.scheduler} job runs again until it reaches train.steps: give --steps")
        for o in self.overrides:
            if "=" not in o or o.startswith(("swipe.", "train.grad_accum=", "train.steps=", "train.out_dir=")):
                raise JobScriptError(f"override {o!r}: give KEY=VALUE; the mesh, grad_accum, steps and "
                                     f"out_dir have their own options")
        if self.scheduler == "pbs":
            if walltime_minutes(self.walltime) <= self.wall_margin_minutes:
                raise JobScriptError(f"walltime {self.walltime} leaves no time before the "
                                     f"{self.wall_margin_minutes} min stop margin")
            if not self.script:
                raise JobScriptError("a PBS job resubmits itself: give the path the script is written to "
                                     "(--out, relative to the submission directory)")
        elif self.scheduler == "slurm":
            walltime_minutes(self.walltime)
        self.layout()  # refuses what cannot be laid out

    # ---- derived -----------------------------------------------------------------------
    @property
    def world(self) -> int:
        return MeshShape(*self.mesh).world_size

    @property
    def micro_batches(self) -> int:
        return self.grad_accum or 4 * self.mesh[1]

    @property
    def run_dir(self) -> str:
        return self.out_dir or f"runs/{self.name}"

    def layout(self) -> tuple[int, int]:
        """(nodes, ranks per node) of the job; raises JobScriptError for a sequence group that
        would span nodes, a world that does not fill its nodes or a torchrun job on many."""
        world, rpn = self.world, self.ranks_per_node
        nodes, per_node = (1, world) if world <= rpn else (world // rpn, rpn)
        if world > rpn and world % rpn:
            raise JobScriptError(f"the mesh's {world} ranks do not fill nodes of {rpn} ranks: choose a "
                                 f"mesh whose rank count is a multiple of --ranks-per-node")
        shape = MeshShape(*self.mesh)
        for g in shape.sp_groups():
            if len({r // per_node for r in g}) > 1:
                raise JobScriptError(
                    f"sp={shape.sp} does not divide the {per_node} ranks of a node: sequence group "
                    f"{g[0]}..{g[-1]} would span nodes {g[0] // per_node} and {g[-1] // per_node}, and "
                    f"its all-to-all (every block, every micro-batch) would cross the network; choose an "
                    f"sp that divides --ranks-per-node")
        if self.scheduler == "torchrun" and nodes > 1:
            raise JobScriptError(f"a torchrun job runs on one node; {world} ranks of {rpn} per node need "
                                 f"{nodes} nodes: use --scheduler pbs or slurm")
        return nodes, per_node

    def warnings(self) -> list[str]:
        pp, m = self.mesh[1], self.micro_batches
        b = pipeline_bubble(pp, m)
        if b > BUBBLE_WARN:
            return [f"pipeline bubble (pp-1)/(m+pp-1) = {b:.0%} with pp={pp} and grad_accum={m} (above "
                    f"{BUBBLE_WARN:.0%}): grad_accum >= {4 * pp} keeps it below"]
        return []

    def command(self) -> str:
        """The `aeris jobscript` command that writes this script (its header quotes it)."""
        args = ["aeris", "jobscript", "--scheduler", self.scheduler, "--mesh", ",".join(map(str, self.mesh)),
                "--ranks-per-node", str(self.ranks_per_node), "--config", self.config]
        for f in fields(self):
            if f.name in ("scheduler", "mesh", "ranks_per_node", "config", "overrides", "script"):
                continue
            if getattr(self, f.name) != f.default:
                args += [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
        if self.script:
            args += ["--out", self.script]
        return shlex.join(args + list(self.overrides))


def _train_args(spec: JobSpec, extra: list[str]) -> list[str]:
    mesh = " ".join(f"swipe.{k}={v}" for k, v in zip(DIMS, spec.mesh))
    train = [f"train.grad_accum={spec.micro_batches}"]
    lines = [mesh, " ".join(train + extra)]
    tail = ([f"data.path={spec.data_path}"] if spec.data_path else []) + list(spec.overrides)
    if tail:
        lines.append(" ".join(shlex.quote(t) for t in tail))
    return lines


def _header(spec: JobSpec, nodes: int, per_node: int) -> list[str]:
    dp, pp, wy, wx, sp = spec.mesh
    m = spec.micro_batches
    out = ["#!/bin/bash",
           "# Generated by `aeris jobscript` (aeris/distributed/jobscript.py): edit the command, not the script:"]
    out += _continued(_wrap(spec.command(), "#   ", "#       "))
    if spec.title:
        out.append(f"# {spec.title}")
    out += [f"# Mesh dp {dp} x pp {pp} x wy {wy} x wx {wx} x sp {sp} = {spec.world:,} ranks on {nodes} node"
            f"{'s' if nodes > 1 else ''} x {per_node} ranks;",
            f"# each sequence group (sp {sp}) on one node.",
            f"# 1F1B over grad_accum {m} micro-batches: pipeline bubble (pp-1)/(m+pp-1) = "
            f"{100 * pipeline_bubble(pp, m):.1f} %."]
    return out


def _long_run_lines(spec: JobSpec) -> list[str]:
    if spec.scheduler == "pbs":
        return ["# Long runs: train.max_wall_minutes stops the run cleanly (step finished, checkpoint written,",
                f"# exit 0) {spec.wall_margin_minutes} min before the walltime, and PBS's SIGTERM at the walltime "
                f"does the same;",
                "# the script then submits itself again until train.steps is reached, each run resuming from",
                "# the newest checkpoint (docs/training.md, \"Long runs\"). A failing run is not resubmitted."]
    return [f"# Long runs: {spec.signal_seconds} s before the time limit Slurm sends SIGUSR1 to every task; the",
            "# trainer finishes the step, writes a checkpoint and exits 0, and the job requeues itself until",
            "# train.steps is reached, each run resuming from the newest checkpoint",
            "# (docs/training.md, \"Long runs\"). A failing run is not requeued."]


def _until_done(again: str) -> list[str]:
    return ["# stopped before the last step: run again (it resumes from the newest checkpoint)",
            'if ! grep -q "\\"step\\": ${STEPS}," "${OUT}/metrics.jsonl"; then',
            f"    {again}",
            "fi"]


def _wrap(command: str, first: str, rest: str, width: int = 100) -> list[str]:
    """``command`` over lines of at most ~``width`` characters, cut between its words."""
    words = [shlex.quote(w) for w in shlex.split(command)]
    groups = []  # an option stays on the line of its value
    for w in words:
        if groups and groups[-1].startswith("--") and " " not in groups[-1] and not w.startswith("--"):
            groups[-1] += " " + w
        else:
            groups.append(w)
    lines, cur = [], first
    for word in groups:
        if len(cur) + len(word) + 1 > width and cur.strip("# "):
            lines.append(cur.rstrip())
            cur = rest
        cur += word + " "
    return lines + [cur.rstrip()]


def _continued(lines: list[str]) -> list[str]:
    """One shell command over several lines (a backslash ends all but the last)."""
    return [ln + " \\" for ln in lines[:-1]] + lines[-1:]


def render(spec: JobSpec) -> str:
    """The job script of ``spec`` (text ending in a newline)."""
    nodes, per_node = spec.layout()
    out = _header(spec, nodes, per_node)
    train_cmd = ["python", "-m", "aeris.cli", "train", "--config", spec.config]
    c = spec.cpus_per_rank
    if spec.scheduler == "torchrun":
        out += ["# torchrun starts the ranks; swipe.launch reads RANK/WORLD_SIZE/LOCAL_RANK (gloo on CPU,",
                "# nccl on CUDA, xccl/ccl on XPU); extra KEY=VALUE arguments are passed to `aeris train`.",
                "set -euo pipefail", f"export OMP_NUM_THREADS={c}"]
        args = _train_args(spec, ([f"train.steps={spec.steps}"] if spec.steps else [])
                           + ([f"train.out_dir={spec.out_dir}"] if spec.out_dir else []))
        out += _continued([f"torchrun --standalone --nproc-per-node={per_node} -m aeris.cli train "
                           f"--config {spec.config}", *("    " + a for a in args), '    "$@"'])
        return "\n".join(out) + "\n"
    out += _long_run_lines(spec)
    if spec.scheduler == "pbs":
        out += ["# mpiexec (PALS/MPICH): swipe.launch takes rank and size from MPI; rank 0 broadcasts the",
                "# rendezvous with mpi4py; the backend follows the device (docs/architecture.md, \"Launch\").",
                f"#PBS -N {spec.name}",
                f"#PBS -l select={nodes}{':' + spec.pbs_resources if spec.pbs_resources else ''}",
                f"#PBS -l walltime={spec.walltime}"]
        out += [f"#PBS -l filesystems={spec.filesystems}"] if spec.filesystems else []
        out += [f"#PBS -q {spec.queue}"] if spec.queue else []
        out += [f"#PBS -A {spec.account}"] if spec.account else []
        out += ["set -euo pipefail", 'cd "${PBS_O_WORKDIR}"', f"source {spec.venv}/bin/activate",
                'NNODES=$(wc -l < "${PBS_NODEFILE}")',
                f'if [ "${{NNODES}}" -ne {nodes} ]; then',
                f'    echo "this job needs {nodes} nodes for its mesh, the allocation has ${{NNODES}}" >&2; exit 2',
                "fi"]
        launch = f"mpiexec -n {spec.world} --ppn {per_node} --depth {c} --cpu-bind depth"
        wall = [f"train.max_wall_minutes={walltime_minutes(spec.walltime) - spec.wall_margin_minutes}"]
        again = f'qsub "{spec.script if spec.script.startswith("/") else "${PBS_O_WORKDIR}/" + spec.script}"'
    else:
        out += ["# srun: swipe.launch reads SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID and takes the",
                "# first host of the step's node list as the rendezvous (docs/architecture.md, \"Launch\").",
                f"#SBATCH -J {spec.name}", f"#SBATCH -N {nodes}", f"#SBATCH --ntasks-per-node={per_node}",
                f"#SBATCH --cpus-per-task={c}"]
        out += [f"#SBATCH --gpus-per-node={spec.gpus_per_node}"] if spec.gpus_per_node else []
        out += [f"#SBATCH -t {spec.walltime}", f"#SBATCH --signal=USR1@{spec.signal_seconds}",
                "#SBATCH --requeue", "#SBATCH --open-mode=append"]
        out += [f"#SBATCH -p {spec.queue}"] if spec.queue else []
        out += [f"#SBATCH -A {spec.account}"] if spec.account else []
        out += ["set -euo pipefail", f"source {spec.venv}/bin/activate"]
        launch = f"srun -n {spec.world} --distribution=block:block --cpus-per-task={c} --cpu-bind=cores"
        wall = []
        again = 'scontrol requeue "${SLURM_JOB_ID}"'
    out += [f"export OMP_NUM_THREADS={c}"]
    if spec.net_interface:
        out += [f"export SWIPE_NET_INTERFACE={spec.net_interface}   # rank 0 publishes this interface's address"]
    out += [f"OUT={spec.run_dir}", f"STEPS={spec.steps}"]
    args = _train_args(spec, ["train.steps=${STEPS}", *wall, "train.out_dir=${OUT}"])
    out += _continued([launch, "    " + " ".join(train_cmd), *("        " + a for a in args)])
    out += _until_done(again)
    return "\n".join(out) + "\n"

"""`aeris jobscript`: node counts, sequence groups kept inside a node, the stop-and-resubmit
pattern, grad_accum and the bubble warning, and the four templates in benchmarks/jobs/ equal to
what the generator writes from the command in their header."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from aeris.cli import build_parser, main
from aeris.cli.jobscript import spec_from_args
from aeris.config import load_config
from aeris.distributed.jobscript import JobScriptError, JobSpec, pipeline_bubble, render
from swipe.mesh import MeshShape
from tests.support import REPO

JOBS = REPO / "benchmarks" / "jobs"
TEMPLATES = ("aurora_pbs.sh", "polaris_pbs.sh", "slurm.sh", "single_node_torchrun.sh")


def header_command(text: str) -> list[str]:
    """The `aeris jobscript` arguments quoted in a generated script's header."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("#   aeris jobscript"))
    parts = []
    for ln in lines[start:]:
        body = ln[1:].strip()
        parts.append(body.rstrip("\\").strip())
        if not body.endswith("\\"):
            break
    words = shlex.split(" ".join(parts))
    assert words[:2] == ["aeris", "jobscript"]
    return words[1:]


def spec_of(argv: list[str]) -> JobSpec:
    return spec_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_templates_are_what_the_generator_writes(name):
    text = (JOBS / name).read_text()
    argv = header_command(text)
    assert argv[argv.index("--out") + 1] == f"benchmarks/jobs/{name}"
    assert render(spec_of(argv)) == text
    assert os.access(JOBS / name, os.X_OK)
    subprocess.run(["bash", "-n", str(JOBS / name)], check=True)   # valid shell


def test_no_other_templates():
    assert sorted(p.name for p in JOBS.iterdir()) == sorted(TEMPLATES)


def test_templates_of_the_large_meshes():
    aurora = (JOBS / "aurora_pbs.sh").read_text()
    # the original 1.3B mesh: 10 x 4 x 4 x 12 = 1,920 tiles on nodes of 12 tiles
    assert "#PBS -l select=160\n" in aurora
    assert "mpiexec -n 1920 --ppn 12 --depth 8 --cpu-bind depth" in aurora
    assert "swipe.dp=1 swipe.pp=10 swipe.wy=4 swipe.wx=4 swipe.sp=12" in aurora
    assert "train.grad_accum=40 " in aurora                             # 4 x pp
    assert "train.max_wall_minutes=345 " in aurora                      # 6 h minus 15 min
    assert 'qsub "${PBS_O_WORKDIR}/benchmarks/jobs/aurora_pbs.sh"' in aurora
    slurm = (JOBS / "slurm.sh").read_text()
    for line in ("#SBATCH -N 8", "#SBATCH --ntasks-per-node=4", "#SBATCH --signal=USR1@120", "#SBATCH --requeue"):
        assert line + "\n" in slurm
    assert "srun -n 32 --distribution=block:block --cpus-per-task=8 --cpu-bind=cores" in slurm
    assert "train.grad_accum=16 " in slurm
    for name in TEMPLATES:
        text = (JOBS / name).read_text()
        pp = int(re.search(r"swipe\.pp=(\d+)", text).group(1))
        m = int(re.search(r"train\.grad_accum=(\d+)", text).group(1))
        assert m >= 4 * pp and pipeline_bubble(pp, m) <= 0.2


@pytest.mark.parametrize("mesh, rpn, nodes, per_node", [
    ((1, 10, 4, 4, 12), 12, 160, 12),
    ((2, 4, 1, 1, 4), 4, 8, 4),
    ((1, 2, 1, 1, 2), 8, 1, 4),      # fewer ranks than a node holds: one node
    ((3, 1, 2, 2, 2), 8, 3, 8),
])
def test_node_counts(mesh, rpn, nodes, per_node):
    spec = JobSpec("slurm", mesh, rpn, "tiny", steps=10)
    assert spec.layout() == (nodes, per_node)
    text = render(spec)
    assert f"#SBATCH -N {nodes}\n" in text and f"--ntasks-per-node={per_node}\n" in text
    assert f"srun -n {nodes * per_node} " in text
    pbs = render(JobSpec("pbs", mesh, rpn, "tiny", steps=10, script="job.sh"))
    assert f"#PBS -l select={nodes}\n" in pbs and f"mpiexec -n {nodes * per_node} --ppn {per_node} " in pbs
    # every sequence group on one node under block placement (an independent check)
    for g in MeshShape(*mesh).sp_groups():
        assert len({r // per_node for r in g}) == 1


@pytest.mark.parametrize("mesh, rpn, what", [
    ((1, 2, 1, 1, 8), 4, "sp=8 does not divide the 4 ranks of a node"),
    ((4, 1, 1, 1, 3), 4, "sp=3 does not divide the 4 ranks of a node: sequence group 3..5"),
    ((1, 10, 4, 4, 12), 8, "sp=12 does not divide the 8 ranks"),
    ((1, 3, 1, 1, 2), 4, "do not fill nodes of 4 ranks"),
])
def test_a_sequence_group_across_nodes_is_refused(mesh, rpn, what):
    with pytest.raises(JobScriptError, match=re.escape(what)):
        JobSpec("pbs", mesh, rpn, "tiny", steps=10, script="job.sh")


def test_the_cli_refuses_with_one_line(capsys):
    rc = main(["jobscript", "--scheduler", "slurm", "--mesh", "1,2,1,1,8", "--ranks-per-node", "4",
               "--config", "tiny", "--steps", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "error: sp=8 does not divide" in err


def test_other_refusals():
    with pytest.raises(JobScriptError, match="one node"):
        JobSpec("torchrun", (2, 1, 1, 1, 4), 4, "tiny")
    with pytest.raises(JobScriptError, match="give --steps"):
        JobSpec("slurm", (1, 1, 1, 1, 4), 4, "tiny")
    with pytest.raises(JobScriptError, match="resubmits itself"):
        JobSpec("pbs", (1, 1, 1, 1, 4), 4, "tiny", steps=10)
    with pytest.raises(JobScriptError, match="stop margin"):
        JobSpec("pbs", (1, 1, 1, 1, 4), 4, "tiny", steps=10, script="j.sh", walltime="00:10:00")
    with pytest.raises(JobScriptError, match="own options"):
        JobSpec("slurm", (1, 1, 1, 1, 4), 4, "tiny", steps=10, overrides=("swipe.pp=2",))


def test_grad_accum_and_the_bubble_warning(capsys):
    assert pipeline_bubble(10, 4) == pytest.approx(9 / 13)            # the 69 % of issue #11
    assert pipeline_bubble(1, 1) == 0.0
    spec = JobSpec("slurm", (1, 10, 1, 1, 4), 4, "tiny", steps=10)
    assert spec.micro_batches == 40 and spec.warnings() == []
    low = JobSpec("slurm", (1, 10, 1, 1, 4), 4, "tiny", steps=10, grad_accum=35)   # 9/44 > 20 %
    assert "train.grad_accum=35 " in render(low)
    assert len(low.warnings()) == 1 and "grad_accum >= 40" in low.warnings()[0]
    assert JobSpec("slurm", (1, 10, 1, 1, 4), 4, "tiny", steps=10, grad_accum=36).warnings() == []  # 9/45
    rc = main(["jobscript", "--scheduler", "slurm", "--mesh", "1,10,1,1,4", "--ranks-per-node", "4",
               "--config", "tiny", "--steps", "10", "--grad-accum", "8"])
    out = capsys.readouterr()
    assert rc == 0 and "warning: pipeline bubble" in out.err and out.out.startswith("#!/bin/bash")


@pytest.mark.parametrize("name, pp", [("aeris-1.3b-6h", 10), ("aeris-1.3b-24h", 10), ("aeris-40b-bench", 20)])
def test_the_large_configs_fill_their_pipeline(name, pp):
    """pp of the reference layouts (docs/differences.md, "Reference layouts of the original")."""
    m = load_config(name).train.grad_accum
    assert m >= 4 * pp and pipeline_bubble(pp, m) <= 0.2


@pytest.mark.parametrize("scheduler, again", [("slurm", "scontrol"), ("pbs", "qsub")])
def test_the_job_runs_again_until_its_last_step(tmp_path, scheduler, again):
    """The script's own tail, run by bash with a stub resubmission command: a metrics log
    without the last step resubmits, one with it (as the trainer writes it) does not."""
    from aeris.train.metrics_log import MetricsLogger

    text = render(JobSpec(scheduler, (1, 1, 1, 1, 2), 2, "tiny", steps=3, script="job.sh"))
    tail = text[text.index("# stopped before the last step"):]
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / again).write_text(f"#!/bin/bash\necho {again} \"$@\" >> {tmp_path / 'called'}\n")
    (stub / again).chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SLURM_JOB_ID": "7", "PBS_O_WORKDIR": "/w"}
    script = f"set -euo pipefail\nOUT={tmp_path / 'run'}\nSTEPS=3\n{tail}"
    log = MetricsLogger(tmp_path / "run")
    for step in (1, 2):
        log.log({"step": step, "loss": 1.0})
    subprocess.run(["bash", "-c", script], env=env, check=True)
    assert (tmp_path / "called").read_text().split()[0] == again
    (tmp_path / "called").unlink()
    log.log({"step": 3, "loss": 1.0})
    subprocess.run(["bash", "-c", script], env=env, check=True)
    assert not (tmp_path / "called").exists()


def test_the_header_command_round_trips():
    spec = JobSpec("pbs", (1, 4, 2, 1, 4), 4, "aeris-1.3b-6h", title="a 'quoted' title", steps=5, script="a b.sh",
                   overrides=("train.precision=bf16",), cpus_per_rank=8)
    assert spec_of(header_command(render(spec))) == spec


def test_the_generated_script_has_the_train_command():
    text = render(JobSpec("slurm", (2, 1, 1, 1, 4), 4, "aeris-1.3b-6h", steps=5, data_path="/d/era5.zarr",
                          net_interface="ib0", cpus_per_rank=4))
    assert "export OMP_NUM_THREADS=4\n" in text and "export SWIPE_NET_INTERFACE=ib0" in text
    assert "python -m aeris.cli train --config aeris-1.3b-6h" in text
    assert "data.path=/d/era5.zarr" in text and "train.out_dir=${OUT}" in text and "OUT=runs/aeris-swipe\n" in text
    assert Path(REPO / "aeris" / "cli" / "jobscript.py").exists()

"""What DVC's run-cache keeps, which the declarations in dvc.yaml rely on (its header
comment says so): DVC saves no run of a stage with an uncached `outs:` entry to its
run-cache, while a stage whose uncached outputs are `plots:` (or `metrics:`) is saved and
comes back without running. On a toy project of two one-line stages, each like a training
stage (a DVC-cached model and a git-kept folder of history): no TensorFlow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import dvc, git, ran_stages

pytestmark = pytest.mark.slow  # real dvc repro runs, on a toy project

# Writes each file or folder named; every run writes other contents.
MAKE = """import pathlib, sys, time
for name in sys.argv[1:]:
    path = pathlib.Path(name)
    if path.suffix:
        path.write_text(str(time.time_ns()))
    else:
        path.mkdir(exist_ok=True)
        (path / "rows.csv").write_text(f"step,value\\n1,{time.time_ns()}\\n")
"""
STAGES = ("as_outs", "as_plots")  # the history folder declared as `outs:` / as `plots:`


def toy(path: Path) -> Path:
    path.mkdir()
    (path / "make.py").write_text(MAKE)

    def stage(name: str) -> dict:
        return {"cmd": f'"{sys.executable}" make.py {name}.bin {name}', "deps": ["make.py"], "outs": [f"{name}.bin"]}

    stages = {"as_outs": stage("as_outs"), "as_plots": stage("as_plots")}
    stages["as_outs"]["outs"].append({"as_outs": {"cache": False}})
    stages["as_plots"]["plots"] = [{"as_plots": {"cache": False}}]
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    git(path, "init", "-q")
    git(path, "config", "user.email", "tests@example.com")
    git(path, "config", "user.name", "tests")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "toy")
    assert sorted(ran_stages(dvc(path, "repro").stdout)) == sorted(STAGES)
    return path


def written(project: Path) -> dict[str, str]:
    return {name: (project / name / "rows.csv").read_text() + (project / f"{name}.bin").read_text() for name in STAGES}


def forget_the_run(project: Path) -> None:
    """What a fresh clone of an uncommitted run has: no outputs and no dvc.lock, only the
    DVC cache (here the project's own), so only the run-cache can bring a stage back."""
    for name in STAGES:
        shutil.rmtree(project / name)
        (project / f"{name}.bin").unlink()
    (project / "dvc.lock").unlink()


def test_the_run_cache_keeps_a_stage_with_uncached_plots_not_one_with_uncached_outs(tmp_path):
    project = toy(tmp_path / "toy")
    before = written(project)
    forget_the_run(project)
    result = dvc(project, "repro")
    assert ran_stages(result.stdout) == ["as_outs"], result.stdout
    assert "Stage 'as_plots' is cached - skipping run, checking out outputs" in result.stdout
    after = written(project)
    assert after["as_plots"] == before["as_plots"] and after["as_outs"] != before["as_outs"]


def test_dvc_commit_records_such_a_stage_in_the_run_cache(tmp_path):
    """`dvc commit -f` saves every stage to the run-cache, uncached `outs:` or not."""
    project = toy(tmp_path / "toy")
    before = written(project)
    dvc(project, "commit", "-f")
    forget_the_run(project)
    result = dvc(project, "repro")
    assert ran_stages(result.stdout) == [], result.stdout
    assert written(project) == before


def test_a_fresh_clone_of_a_committed_run_needs_dvc_checkout_before_repro(tmp_path):
    """With dvc.lock committed and the DVC cache at hand, `dvc checkout` brings every output
    back and `dvc repro` runs nothing; `dvc repro` alone reruns the stage with an uncached
    `outs:` entry (it tries the run-cache, which never saved it)."""
    project = toy(tmp_path / "toy")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the run")
    for then_repro_runs, checkout_first in ((["as_outs"], False), ([], True)):
        clone = tmp_path / f"clone-{checkout_first}"
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, capture_output=True, timeout=60)
        dvc(clone, "cache", "dir", "--local", str(project / ".dvc" / "cache"))
        if checkout_first:
            dvc(clone, "checkout")
        assert ran_stages(dvc(clone, "repro").stdout) == then_repro_runs, checkout_first

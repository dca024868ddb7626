"""The committed study belongs to this code: `dvc.lock`, `metrics/` and `plots/` are one
`dvc repro` of the code and params in this commit. Any later change to `stages/`,
`params.yaml` or `dvc.yaml` that would make the committed results describe other code
fails here, until the study is rerun (or the change reverted).

Allowed differences: the lock records where the committed run read its images and weights
(`download.source`, `download.vgg16_weights`: a local copy), and the DVC-cached data under
`data/`, which a clone does not have until `dvc pull` or `dvc repro`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

pytestmark = pytest.mark.committed_run

LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
WHERE_FROM = {"download.source", "download.vgg16_weights"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def lookup(dotted: str):
    value = PARAMS
    for part in dotted.split("."):
        value = value[part]
    return value


def numbers(value):
    """DVC writes `2e-05` in dvc.lock (YAML 1.2); PyYAML (YAML 1.1) reads that as text."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def test_every_stage_ran_with_these_params():
    stale = [f"{stage}: {key} = {value!r} in dvc.lock, {lookup(key)!r} in params.yaml"
             for stage, entry in LOCK.items()
             for key, value in entry.get("params", {}).get("params.yaml", {}).items()
             if key not in WHERE_FROM and numbers(value) != numbers(lookup(key))]
    assert not stale, "the committed run used other params; rerun the study:\n" + "\n".join(stale)


def test_every_stage_ran_this_code():
    stale = [f"{stage}: {dep['path']}" for stage, entry in LOCK.items() for dep in entry.get("deps", [])
             if dep["path"].startswith("stages/") and md5(ROOT / dep["path"]) != dep["md5"]]
    assert not stale, "code changed since the committed run; rerun the study:\n" + "\n".join(stale)
    assert set(LOCK) == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_committed_metrics_and_report_are_what_the_run_wrote():
    files = {out["path"]: out["md5"] for entry in LOCK.values()
             for kind in ("outs", "metrics", "plots") for out in entry.get(kind, [])
             if not out["path"].startswith("data/") and (ROOT / out["path"]).is_file()}
    assert "metrics/runs/evaluate.json" in files and "metrics/test/finetune.json" in files and "plots/report.md" in files
    stale = [path for path, locked in files.items() if md5(ROOT / path) != locked]
    assert not stale, f"edited after the run (or written by another run): {stale}"


def test_dvc_status_sees_nothing_else():
    """DVC's own view (folders of plots included): every difference between the lock and
    this checkout is data a clone does not have yet, or where the run read its inputs."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    unexpected = []
    for stage, changes in json.loads(result.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                unexpected.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                for path, state in paths.items():
                    if path == "params.yaml" and set(state) <= WHERE_FROM:
                        continue
                    if path.startswith("data/") and state in ("deleted", "not in cache"):
                        continue
                    unexpected.append(f"{stage}: {kind} {path}: {state}")
    assert not unexpected, "the committed run does not match this checkout:\n" + "\n".join(unexpected)


def test_readme_tables_are_the_committed_metrics():
    result = subprocess.run([sys.executable, "-m", "stages.tools.readme_table", "--check"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr


def test_the_default_seeds_record_is_the_committed_run():
    """The seed table's run at the default seed (plots/experiments/seeds, stages.tools.record_seeds)
    is this commit's run: its test metrics are the committed metrics/test files, its wall
    times the committed run records. No such record: nothing to compare, and the README's seed
    block must then say none is recorded (test_readme_tables_are_the_committed_metrics)."""
    from stages.lib.seeds import stage_record, stage_record_files
    from stages.lib.study import MODEL_NAMES, TEST_METRICS, model_scores_file, seed_record_file

    path = ROOT / seed_record_file(PARAMS["train"]["seed"])
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    for model in MODEL_NAMES:
        scores = json.loads((ROOT / model_scores_file(model)).read_text())
        assert {k: record["models"][model].get(k) for k in TEST_METRICS} == {k: scores.get(k) for k in TEST_METRICS}, \
            f"{path.relative_to(ROOT)}: {model} is not the committed run; rerun stages.tools.record_seeds"
    walls = {stage: stage_record(stage, json.loads((ROOT / p).read_text()))["wall_seconds"]
             for stage, p in stage_record_files().items()}
    assert record["wall_seconds"] == walls, f"{path.relative_to(ROOT)}: the wall times are not the committed run's"



def test_the_other_seeds_records_are_their_runs(monkeypatch):
    """Each committed seed record but the workspace's is what its run committed, read again
    now by stages.tools.record_seeds from the run's commit (kept by a tag of the record's
    name, `git tag seed-43 <commit>`): the same test metrics and wall times, params that
    differ from this commit's in train.seed alone, the code this commit's dvc.lock records."""
    from stages.lib.seeds import read_records
    from stages.tools import record_seeds

    others = [r for r in read_records(ROOT / "plots/experiments/seeds") if not r["workspace"]]
    if not others:
        return
    absent = [r["name"] for r in others if subprocess.run(["git", "cat-file", "-e", f"{r['commit']}^{{commit}}"],
                                                         cwd=ROOT, capture_output=True).returncode != 0]
    if absent:
        pytest.skip(f"the runs of {', '.join(absent)} are not in this clone: git fetch origin 'refs/tags/*:refs/tags/*'")
    monkeypatch.chdir(ROOT)
    lock = (ROOT / "dvc.lock").read_text()
    for record in others:
        again = record_seeds.seed_record(record["commit"], PARAMS, record_seeds.code_hashes(lock),
                                         record_seeds.split_data(lock))
        assert {**again, "name": record["name"]} == record, f"{record['name']}: its record is not its run's"


def test_dvc_metrics_show_of_the_committed_run_fits_a_screen():
    """`dvc metrics show` of the committed files, printed in a terminal wide enough not to
    clip: at most 160 characters a line, one row per metrics file, the five test accuracies
    in it (a run record or provenance would add columns)."""
    from stages.lib.study import MODEL_NAMES, model_scores_file

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": "1000"}
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "metrics", "show"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.rstrip().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 160, result.stdout
    for name in MODEL_NAMES:
        path = model_scores_file(name).as_posix()
        accuracy = json.loads((ROOT / path).read_text())["accuracy"]
        row = next(line for line in lines if path in line)
        assert f"{accuracy:.3f}".rstrip("0") in row, (path, row)

"""Parallel experiments with DVC's own queue: two queued learning rates, run by two queue
workers at once (their stage runs overlap in time), both listed with their metrics by
`dvc exp show`."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import dvc, git, make_project, ran_stages, start_queue, stop_queue, tiny_params, write_kaggle_folder

pytestmark = pytest.mark.slow  # a `dvc repro`, then two queued experiments

TARGET = "train_feature_clf"
RATES = (0.001, 0.0001)
QUEUE_TIMEOUT = 300  # seconds for both experiments
CLOCK = 'python -c "import time; print(\'{} at\', time.time())"'  # a time stamp in the stage's log


def clock_the_stage(project: Path) -> None:
    """TARGET's command between two time stamps it prints, so that each run's log says when
    its stage started and ended (the project's copy of dvc.yaml only)."""
    path = project / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    stage = pipeline["stages"][TARGET]
    stage["cmd"] = [CLOCK.format("started"), stage["cmd"], CLOCK.format("ended")]
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def stage_span(log: str) -> tuple[float, float]:
    """(start, end) of the stage, in seconds since the epoch, from the stamps in its log."""
    stamps = dict(m.groups() for m in re.finditer(r"^(started|ended) at ([\d.]+)$", log, re.M))
    assert stamps.keys() == {"started", "ended"}, log
    return float(stamps["started"]), float(stamps["ended"])


def experiments(shown: list) -> list[dict]:
    """The experiment revs in `dvc exp show --json` (not the workspace or the baseline)."""
    found = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            found.extend(rev for rev in exp.get("revs", []) if rev.get("data"))
    return found


def test_two_queued_experiments_run_in_parallel(tmp_path, random_vgg16_weights, monkeypatch):
    # queue workers are spawned as `dvc` from PATH: make it this environment's dvc
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    source = write_kaggle_folder(tmp_path / "images", per_class=8)
    params = tiny_params(source, random_vgg16_weights)
    params["split"].update(train_per_class=4, val_per_class=2, test_per_class=2)
    project = make_project(tmp_path / "project", params)
    clock_the_stage(project)
    dvc(project, "repro", TARGET)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "reproduced baseline (dvc.lock)")

    for rate in RATES:
        dvc(project, "exp", "run", "--queue", "-S", f"{TARGET}.learning_rate={rate}", TARGET)
    assert dvc(project, "queue", "status").stdout.count("Queued") == 2
    try:
        start_queue(project, 2)
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while True:
            status = dvc(project, "queue", "status").stdout
            assert "Failed" not in status, status
            if status.count("Success") == 2:
                break
            assert time.monotonic() < deadline, f"queue not done after {QUEUE_TIMEOUT} s:\n{status}"
            time.sleep(3)
    finally:
        stop_queue(project)

    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    exps = experiments(shown)
    rates = sorted(e["data"]["params"]["params.yaml"]["data"][TARGET]["learning_rate"] for e in exps)
    assert rates == sorted(RATES), exps
    spans = []
    for e in exps:
        metrics = e["data"]["metrics"]["metrics/train_feature_clf.json"]["data"]
        assert metrics["epochs"] == 2 and 0 <= metrics["val_accuracy"] <= 1
        # only the changed stage reran: the queued runs reused download, split and features
        log = dvc(project, "queue", "logs", e["name"]).stdout
        assert ran_stages(log) == [TARGET], log
        spans.append(stage_span(log))
    # In parallel: each run's stage started before the other's ended (one after the other,
    # the second would start after the first ended).
    starts, ends = zip(*spans)
    assert max(starts) < min(ends), f"the queued runs did not overlap: (start, end) {spans}"

"""Relative local sources in DVC's temporary workspaces: `dvc exp run
--temp` and the queue run stages in `.dvc/tmp/exps/...` of the project, where
`../images` would point nowhere; relative `download.source` and `download.vgg16_weights`
are resolved against the project's own root (DVC_ROOT), as in the workspace."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from helpers import dvc, make_project, ran_stages, start_queue, stop_queue, tiny_params, write_kaggle_folder

pytestmark = pytest.mark.slow  # `dvc exp run --temp` and the queue, each running download and split

QUEUE_TIMEOUT = 240  # seconds


def project_with_relative_sources(tmp_path: Path, weights: Path) -> Path:
    """images/ and weights/ beside project/, named in params.yaml as ../images, ../weights/..."""
    write_kaggle_folder(tmp_path / "images", per_class=8)
    (tmp_path / "weights").mkdir()
    shutil.copy(weights, tmp_path / "weights" / "vgg16.weights.h5")
    params = tiny_params(tmp_path / "images", tmp_path / "weights" / "vgg16.weights.h5")
    params["download"] = {"source": "../images", "vgg16_weights": "../weights/vgg16.weights.h5"}
    params["split"].update(train_per_class=4, val_per_class=2, test_per_class=2)
    return make_project(tmp_path / "project", params)


def test_relative_sources_in_a_temp_workspace(tmp_path, random_vgg16_weights):
    project = project_with_relative_sources(tmp_path, random_vgg16_weights)
    result = dvc(project, "exp", "run", "--temp", "split")
    assert ran_stages(result.stdout) == ["download", "split"], result.stdout
    assert "download: 16 images kept, 0 rejected" in result.stdout, result.stdout
    # The same params still work in the workspace itself.
    assert ran_stages(dvc(project, "repro", "--force", "download").stdout) == ["download"]
    assert len(list((project / "data" / "raw" / "images").iterdir())) == 16


def test_relative_sources_in_the_queue(tmp_path, random_vgg16_weights, monkeypatch):
    # queue workers are spawned as `dvc` from PATH: make it this environment's dvc
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    project = project_with_relative_sources(tmp_path, random_vgg16_weights)
    dvc(project, "exp", "run", "--queue", "-S", "split.seed=7", "split")
    try:
        start_queue(project, 1)
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while True:
            status = dvc(project, "queue", "status").stdout
            if "Success" in status or "Failed" in status:
                break
            assert time.monotonic() < deadline, f"queue not done after {QUEUE_TIMEOUT} s:\n{status}"
            time.sleep(2)
    finally:
        stop_queue(project)
    name = next(line.split()[0] for line in status.splitlines() if "Success" in line or "Failed" in line)
    log = dvc(project, "queue", "logs", name, check=False).stdout
    assert "Success" in status, f"{status}\n{log}"
    assert ran_stages(log) == ["download", "split"], log
    assert "does not exist" not in log

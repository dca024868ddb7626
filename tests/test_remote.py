"""DVC remote round trip: push a reproduced tiny pipeline to a local-directory remote,
clone the git repo elsewhere, pull, and find everything up to date without retraining."""

from __future__ import annotations

import subprocess

import pytest

from helpers import dvc, git, make_project, ran_stages, tiny_params, write_kaggle_folder

pytestmark = pytest.mark.slow  # a `dvc repro` up to train_feature_clf, push, clone, pull

TARGET = "train_feature_clf"  # download -> split -> extract_features -> train_feature_clf
OUTPUTS = (
    "data/raw/manifest.csv",
    "data/weights/vgg16_notop.weights.h5",
    "data/split/arrays/train.npz",
    "data/features/train.npz",
    "data/models/train_feature_clf.keras",
    "metrics/train_feature_clf.json",
)


def test_push_clone_pull_is_up_to_date(tmp_path, random_vgg16_weights):
    source = write_kaggle_folder(tmp_path / "images", per_class=8)
    params = tiny_params(source, random_vgg16_weights)
    params["split"].update(train_per_class=4, val_per_class=2, test_per_class=2)
    project = make_project(tmp_path / "project", params)
    result = dvc(project, "repro", TARGET)
    assert sorted(ran_stages(result.stdout)) == sorted(["download", "split", "extract_features", TARGET]), result.stdout

    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "storage", str(remote))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "reproduced, with a remote")
    pushed = dvc(project, "push")
    assert any(remote.rglob("*")), pushed.stdout

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, capture_output=True, timeout=60)
    assert not (clone / "data").exists()  # outputs travel through the remote, not git
    assert "storage" in dvc(clone, "remote", "list").stdout  # .dvc/config is in git
    dvc(clone, "pull", "--with-deps", TARGET)
    for name in OUTPUTS:
        assert (clone / name).is_file(), name
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name

    status = dvc(clone, "status", "--with-deps", TARGET)
    assert "up to date" in status.stdout.lower(), status.stdout
    repro = dvc(clone, "repro", TARGET)
    assert ran_stages(repro.stdout) == [], repro.stdout
    assert "Running stage" not in repro.stdout

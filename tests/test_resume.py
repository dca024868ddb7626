"""Interrupted training never loses work: `dvc repro train_custom` killed with SIGKILL after
a few epochs resumes from its last completed epoch when rerun with the same params and
inputs, and starts afresh after a param change. Real dvc, real stage, tiny data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import ROOT, dvc, make_project, ran_stages, run_stage_process, tiny_params, write_kaggle_folder
from stages.lib.study import read_history

EPOCHS = 6
STATE = Path("data/checkpoints/train_custom/state.json")
CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")


def completed_epochs(project: Path) -> int:
    try:
        return len(json.loads((project / STATE).read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def kill_after(project: Path, epochs: int, timeout: float = 240) -> tuple[int, str]:
    """Start `dvc repro train_custom`, SIGKILL its whole process group once the checkpoint
    holds `epochs` completed epochs; return (epochs in the checkpoint after the kill, output)."""
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "PYTHONPATH": str(project), "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = project.parent / "killed_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "repro", "train_custom"], cwd=project, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while completed_epochs(project) < epochs:
                assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no checkpoint after {timeout} s:\n{log.read_text()}"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()  # reaped: dvc's lock sees the pid gone
    return completed_epochs(project), log.read_text()


def curve_steps(project: Path) -> dict[str, list[int]]:
    history = read_history(project / "plots/train_custom/history.json")
    return {name: [row["epoch"] for row in history if name in row] for name in CURVES}


def set_params(project: Path, **train_custom) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train_custom"].update(train_custom)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def killed(tmp_path_factory, random_vgg16_weights):
    """A project whose train_custom run was SIGKILLed after >= 2 epochs, and a copy of the
    checkpoint that the kill left."""
    root = tmp_path_factory.mktemp("resume")
    source = write_kaggle_folder(root / "images", per_class=24)
    params = tiny_params(source, random_vgg16_weights)
    params["train_custom"]["epochs"] = EPOCHS
    project = make_project(root / "project", params)
    dvc(project, "repro", "split")
    done, log = kill_after(project, 2)
    assert 2 <= done < EPOCHS, f"killed after {done} epochs; the test needs an unfinished run:\n{log}"
    assert not (project / "metrics/train_custom.json").exists(), "the killed run did not finish"
    assert (project / "data/checkpoints/train_custom/model.keras").is_file()
    saved = root / "checkpoint_after_kill"
    shutil.copytree(project / "data/checkpoints/train_custom", saved)
    return project, done, saved


@pytest.fixture(scope="module")
def resumed(killed):
    project, done, _ = killed
    result = dvc(project, "repro", "train_custom")
    return project, done, result.stdout + result.stderr


@pytest.mark.slow
def test_rerun_resumes_after_last_completed_epoch(resumed):
    project, done, output = resumed
    assert f"resuming from data/checkpoints/train_custom after epoch {done}" in output, output
    assert "starting fresh" not in output
    metrics = json.loads((project / "metrics/train_custom.json").read_text())
    assert metrics["epochs"] == EPOCHS
    assert 1 <= metrics["kept_epoch"] <= EPOCHS


@pytest.mark.slow
def test_curves_have_every_epoch_once(resumed):
    project, _, _ = resumed
    for name, steps in curve_steps(project).items():
        assert steps == list(range(1, EPOCHS + 1)), f"{name}: {steps}"


@pytest.mark.slow
def test_resumed_model_loads_and_checkpoint_is_gone(resumed):
    project, _, _ = resumed
    import keras

    import stages.lib.models  # noqa: F401  (registers the project's layers)

    model = keras.models.load_model(project / "data/models/train_custom.keras", safe_mode=True)
    with np.load(project / "data/split/arrays/validation.npz", allow_pickle=False) as v:
        p = model.predict(v["images"][:4].astype("float32"), verbose=0)
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))
    assert not (project / "data/checkpoints/train_custom").exists(), "checkpoint removed after success"
    assert dvc(project, "status", "train_custom").stdout.strip().endswith("up to date.") or ran_stages(
        dvc(project, "repro", "train_custom").stdout) == [], "dvc sees the resumed run as complete"


@pytest.mark.slow
def test_param_change_after_kill_starts_fresh(resumed, killed):
    project, _, saved = killed
    # The state a kill leaves, then a different learning rate: that checkpoint is not this run's.
    shutil.copytree(saved, project / "data/checkpoints/train_custom", dirs_exist_ok=True)
    set_params(project, epochs=3, learning_rate=2.0e-4)
    result = dvc(project, "repro", "train_custom")
    output = result.stdout + result.stderr
    assert "checkpoint in data/checkpoints/train_custom is for other params or inputs: starting fresh" in output, output
    assert "resuming" not in output
    assert json.loads((project / "metrics/train_custom.json").read_text())["epochs"] == 3
    assert all(steps == [1, 2, 3] for steps in curve_steps(project).values())
    assert not (project / "data/checkpoints/train_custom").exists()


def test_unreadable_checkpoint_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    """A checkpoint that cannot be read (disk full, a copy gone wrong) is said and ignored."""
    from stages.lib import training

    monkeypatch.chdir(tmp_path)
    checkpoint = training.Checkpoint("train_custom", "key", [])
    assert checkpoint.restore() == (None, [])
    assert capsys.readouterr().out == "", "no checkpoint: nothing to say"
    checkpoint.dir.mkdir(parents=True)
    (checkpoint.dir / "state.json").write_text(json.dumps({"key": "key", "history": [{"epoch": 1}]}))
    (checkpoint.dir / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    assert checkpoint.restore() == (None, [])
    out = capsys.readouterr().out
    assert out.startswith("checkpoint in data/checkpoints/train_custom is unreadable (ValueError: ") and out.rstrip().endswith("starting fresh"), out
    assert not checkpoint.dir.exists() and (checkpoint.dir.parent / "train_custom.unreadable/model.keras").is_file(), \
        "set aside, so the next run neither trips over it nor loses it"
    checkpoint.dir.mkdir(parents=True)
    (checkpoint.dir / "state.json").write_text("{truncated")
    assert checkpoint.restore() == (None, [])
    assert "is unreadable (JSONDecodeError" in capsys.readouterr().out


@pytest.mark.slow
def test_damaged_checkpoint_of_a_killed_run_does_not_block_the_stage(resumed, killed):
    """Issue repro: kill after 2 epochs, flip bytes in the middle of model.keras, rerun:
    the stage says so, sets the checkpoint aside, trains from scratch and succeeds."""
    project, _, saved = killed
    original = yaml.safe_load((ROOT / "params.yaml").read_text())["train_custom"]
    set_params(project, epochs=EPOCHS, learning_rate=original["learning_rate"])  # the killed run's params
    target = project / "data/checkpoints/train_custom"
    shutil.copytree(saved, target, dirs_exist_ok=True)
    model_bytes = bytearray((target / "model.keras").read_bytes())
    middle = len(model_bytes) // 2
    model_bytes[middle:middle + 4000] = bytes(b ^ 0xFF for b in model_bytes[middle:middle + 4000])
    (target / "model.keras").write_bytes(bytes(model_bytes))
    # --no-run-cache: should an earlier finished run of these params be in the run-cache (none
    # is, since train_custom writes a git-kept folder: dvc.yaml), DVC would restore it
    result = dvc(project, "repro", "--no-run-cache", "train_custom")
    output = result.stdout + result.stderr
    assert "checkpoint in data/checkpoints/train_custom is unreadable" in output and "starting fresh" in output, output
    assert "resuming" not in output
    assert json.loads((project / "metrics/train_custom.json").read_text())["epochs"] == EPOCHS
    assert (project / "data/checkpoints/train_custom.unreadable").is_dir()


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_and_the_run_resumes(tmp_path, random_vgg16_weights):
    """Ctrl-C in a training stage run by hand: one line, exit 130, no traceback; the epochs
    it finished stay in its checkpoint, and the next run goes on from there. (Download's
    Ctrl-C: tests/test_hostile_download.py; every stage stops through params.run_stage.)"""
    source = write_kaggle_folder(tmp_path / "images", per_class=24)
    params = tiny_params(source, random_vgg16_weights)
    params["train_custom"]["epochs"] = 40
    project = make_project(tmp_path / "project", params)
    dvc(project, "repro", "split")
    stage = run_stage_process("stages.train_custom", project)
    try:
        deadline = time.monotonic() + 120
        while completed_epochs(project) < 2:
            assert stage.poll() is None, stage.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        stage.send_signal(signal.SIGINT)
        out, err = stage.communicate(timeout=60)
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode == 128 + signal.SIGINT, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: train_custom stopped by Ctrl-C (SIGINT); its temporary files were removed, rerun it "
                      "to finish"], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    done = completed_epochs(project)
    assert 2 <= done < 40
    out, err = run_stage_process("stages.train_custom", project).communicate(timeout=300)
    assert f"resuming from data/checkpoints/train_custom after epoch {done}" in out, out + err
    assert json.loads((project / "metrics/train_custom.json").read_text())["epochs"] == 40
    assert curve_steps(project)["loss"] == list(range(1, 41))

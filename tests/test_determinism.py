"""Same params and data, same outputs: `split` run twice from scratch writes byte-identical
arrays and index; `train_custom` run twice with the same seed reproduces its metrics (to
TOL; on CPU they came out bit-identical without tf.config.experimental.enable_op_determinism,
which is therefore not switched on). And outputs are atomic: a failing stage leaves the
old output or none, and no temporary files."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import run_module, tiny_params, write_kaggle_folder
from stages import split
from stages.lib import outputs
from stages.download import scan
from stages.lib.study import read_history

TOL = 1e-5  # metrics of two same-seed runs on CPU (observed: bit-identical)
TIMING_KEYS = {"seconds_per_epoch", "train_images_per_second", "wall_seconds"}


def make_raw(project: Path, source: Path, params: dict) -> Path:
    """data/raw as the download stage writes it (without the VGG16 weights it also fetches)."""
    manifest, rejected = scan(source)
    images = project / "data/raw/images"
    images.mkdir(parents=True)
    for src, name in zip(manifest["path"], manifest["file"]):
        shutil.copyfile(source / src, images / name)
    manifest.rename(columns={"path": "source_path"}).to_csv(project / "data/raw/manifest.csv", index=False)
    rejected.to_csv(project / "data/raw/rejected.csv", index=False)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    source = write_kaggle_folder(root / "images", per_class=24)
    params = tiny_params(source, Path("unused.h5"))
    return make_raw(root / "raw", source, params), params


@pytest.fixture(scope="module")
def twice(raw, tmp_path_factory):
    """Two fresh copies of the project that each ran split then train_custom."""
    template, _ = raw
    runs = []
    for name in ("a", "b"):
        project = tmp_path_factory.mktemp(f"run_{name}")
        shutil.copytree(template, project, dirs_exist_ok=True)
        for module in ("stages.split", "stages.train_custom"):
            result = run_module(module, project, timeout=600)
            assert result.returncode == 0, f"{module}:\n{result.stdout}\n{result.stderr}"
        runs.append(project)
        time.sleep(1.1)  # the second run's files get other timestamps
    return runs


@pytest.mark.slow
def test_split_is_byte_identical(twice):
    a, b = twice
    names = sorted(p.name for p in (a / "data/split/arrays").iterdir())
    assert names == ["extended.npz", "test.npz", "train.npz", "validation.npz"]
    for name in [*(f"arrays/{n}" for n in names), "index.csv", "duplicates.csv"]:
        assert (a / "data/split" / name).read_bytes() == (b / "data/split" / name).read_bytes(), name
    with np.load(a / "data/split/arrays/train.npz", allow_pickle=False) as arrays:
        assert arrays["images"].shape == (24, 48, 48, 3) and arrays["files"][0] == "cat.0.jpg"


@pytest.mark.slow
def test_training_is_reproducible(twice):
    a, b = twice
    ma, mb = (json.loads((p / "metrics/train_custom.json").read_text()) for p in twice)
    assert ma.keys() == mb.keys() and ma["epochs"] == 2
    for key in sorted(ma.keys() - TIMING_KEYS):
        assert ma[key] == pytest.approx(mb[key], abs=TOL), key
    ha, hb = (read_history(p / "plots/train_custom/history.json") for p in twice)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb] == [1, 2]
    for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert np.allclose([r[name] for r in ha], [r[name] for r in hb], rtol=0, atol=TOL), name


def test_split_and_report_import_no_tensorflow():
    """`split` (and its figures) must not pay TensorFlow's import time."""
    code = "import sys, stages.split, stages.figures.report; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=split.__file__.rsplit("/stages/", 1)[0]).returncode == 0


# ---------------------------------------------------------------- atomic outputs

def leftovers(folder: Path) -> list[str]:
    """Temporary names the atomic writers use: .<target>.<random>[.suffix]."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if not p.name.startswith(".dvc"))


def test_failing_split_leaves_no_partial_output(raw, tmp_path):
    template, params = raw
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    bad = copy.deepcopy(params)
    bad["split"]["train_per_class"] = 20  # 20 + 6 + 6 > 24 images per class
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    result = run_module("stages.split", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "error: split needs 32 cat images (20 train + 6 validation + 6 test), 24 valid found (per class: cat 24, "
        "dog 24); 0 files rejected, see data/raw/rejected.csv; fewer per class, or fractions of each class "
        "(e.g. split.train_per_class: 0.5), fit any size"
    )
    assert not (tmp_path / "data/split").exists() and not (tmp_path / "metrics").exists()
    assert leftovers(tmp_path) == []


def test_split_failing_midway_keeps_the_old_output(raw, tmp_path, monkeypatch):
    template, _ = raw
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    old = tmp_path / "data/split"
    (old / "arrays").mkdir(parents=True)
    (old / "index.csv").write_text("the previous output\n")
    monkeypatch.chdir(tmp_path)
    calls = []

    def decode_then_crash(paths, size):
        calls.append(len(paths))
        if len(calls) == 2:
            raise RuntimeError("disk full (simulated)")
        return np.zeros((len(paths), size, size, 3), np.uint8)

    monkeypatch.setattr(split, "decode_all", decode_then_crash)
    with pytest.raises(RuntimeError, match="simulated"):
        split.main()
    assert calls == [24, 12], "it failed after writing part of the new output"
    assert (old / "index.csv").read_text() == "the previous output\n"
    assert sorted(p.name for p in old.iterdir()) == ["arrays", "index.csv"]
    assert leftovers(tmp_path) == []


def test_atomic_path_and_dir_on_failure(tmp_path):
    target = tmp_path / "out.json"
    outputs.write_json(target, {"v": 1})
    with pytest.raises(ValueError):
        with outputs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("crash")
    assert json.loads(target.read_text()) == {"v": 1}
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a").write_text("old")
    with pytest.raises(ValueError):
        with outputs.atomic_dir(folder) as tmp:
            (tmp / "b").write_text("new")
            raise ValueError("crash")
    assert [p.name for p in folder.iterdir()] == ["a"]
    with outputs.atomic_dir(folder) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["b"]
    assert leftovers(tmp_path) == []


def test_save_npz_is_reproducible_and_pickle_free(tmp_path, monkeypatch):
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), "files": np.array(["cat.0.jpg", "dog.0.jpg"])}
    outputs.save_npz(tmp_path / "a.npz", **arrays)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # another day
    outputs.save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "b.npz", allow_pickle=False) as loaded:
        assert sorted(loaded.files) == ["files", "images"]
        assert (loaded["images"] == arrays["images"]).all() and loaded["files"].tolist() == ["cat.0.jpg", "dog.0.jpg"]
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    assert leftovers(tmp_path) == []

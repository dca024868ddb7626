"""Shared fixtures: tiny synthetic data sets and a throw-away copy of the project as a
git + DVC repository, so tests run the real `dvc repro` without touching this checkout."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from stages.lib.study import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_IMAGES = SHARED / "datasets" / "dogs-vs-cats" / "train"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"
PROJECT_FILES = ("stages", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
TRAINING_STAGES = MODEL_NAMES
needs_shared = pytest.mark.skipif(
    not (SHARED_IMAGES.is_dir() and SHARED_WEIGHTS.is_file()),
    reason=f"real images and weights not found at {SHARED} (they sit beside the project in CI)",
)


def synthetic_image(label: str, index: int, size: int = 48) -> Image.Image:
    """A class-dependent pattern: cats get horizontal stripes, dogs vertical, with noise,
    random phase and colour, so that a tiny convnet can learn them in an epoch or two."""
    rng = np.random.default_rng(index * 2 + (label == "dog"))
    y, x = np.mgrid[0:size, 0:size]
    period = rng.uniform(4, 8)
    wave = np.sin(2 * np.pi * ((y if label == "cat" else x) / period + rng.uniform()))
    colour = rng.uniform(0.3, 1.0, 3)
    pixels = 127.5 + 100 * wave[..., None] * colour + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_kaggle_folder(folder: Path, per_class: int, size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for label in ("cat", "dog"):
        for i in range(per_class):
            synthetic_image(label, i, size).save(folder / f"{label}.{i}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def random_vgg16_weights(tmp_path_factory) -> Path:
    """A random-init VGG16 notop weights file in Keras 3 format (real ones are in ../shared)."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "vgg16_random.weights.h5"
    keras.utils.set_random_seed(0)
    keras.applications.VGG16(weights=None, include_top=False).save_weights(str(path))
    return path


def tiny_params(source: Path, weights: Path) -> dict:
    """The real params.yaml with a small data set, small images and 1-2 epochs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"] = {"source": str(source), "vgg16_weights": str(weights)}
    params["split"].update(train_per_class=12, val_per_class=6, test_per_class=6, image_size=48)
    params["train"]["precision"] = "float32"
    for stage in TRAINING_STAGES:
        params[stage].update(epochs=2, batch_size=8)
    params["vgg16"]["augment_bank"] = 2
    return params


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the dvc CLI of this interpreter's environment in cwd; fail with its output."""
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_project(path: Path, params: dict) -> Path:
    """Copy the project into `path` as a fresh git + DVC repo with `params`, committed."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(path, "init", "-q")
    git(path, "config", "user.email", "tests@example.com")
    git(path, "config", "user.name", "tests")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    # the plots page: its Vega-Lite template (dvc.yaml names it) and offline HTML template
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")
    dvc(path, "config", "plots.html_template", "plots/page.html")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "project under test")
    return path


def ran_stages(output: str) -> list[str]:
    """Stage names that a dvc repro / exp run actually executed, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@contextlib.contextmanager
def local_http_server(handler):
    """An HTTP server on 127.0.0.1 (a free port) running `handler` in a thread; yields its
    base URL and shuts it down after. Tests reach no other address."""
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True  # a handler the client gave up on never blocks the shutdown
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

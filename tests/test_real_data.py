"""Smoke test on real Kaggle photos and the real ImageNet VGG16 weights (from ../shared):
`dvc repro split` runs download and split for real on 40 images in a temporary project;
then `python -m stages.tools.predict` on a few of those photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import SHARED_IMAGES, SHARED_WEIGHTS, dvc, make_project, ran_stages, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.real_data]  # a real `dvc repro split`; skipped without ../shared

PER_CLASS = 20


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    source = root / "train"
    source.mkdir()
    for label in ("cat", "dog"):
        for i in range(PER_CLASS):
            shutil.copyfile(SHARED_IMAGES / f"{label}.{i}.jpg", source / f"{label}.{i}.jpg")
    params = tiny_params(source, SHARED_WEIGHTS)  # read in place, never copied into the repo
    params["split"].update(train_per_class=10, val_per_class=5, test_per_class=5, image_size=150)
    path = make_project(root / "project", params)
    result = dvc(path, "repro", "split")
    assert ran_stages(result.stdout) == ["download", "split"], result.stdout
    return path


def test_download_keeps_every_real_photo(project):
    manifest = pd.read_csv(project / "data/raw/manifest.csv")
    assert len(manifest) == 2 * PER_CLASS
    assert pd.read_csv(project / "data/raw/rejected.csv").empty
    assert (manifest["format"] == "JPEG").all() and (manifest["mode"] == "RGB").all()
    for row in manifest.itertuples():
        copied = project / "data/raw/images" / row.file
        assert copied.read_bytes() == (SHARED_IMAGES / row.file).read_bytes(), "bytes unchanged"
    metrics = json.loads((project / "data/raw/summary.json").read_text())
    assert metrics["images"] == {"cat": 20, "dog": 20} and metrics["rejected"] == 0


def test_split_of_real_photos(project):
    index = pd.read_csv(project / "data/split/index.csv")
    counts = index.groupby(["split", "label"]).size().to_dict()
    assert counts == {(s, c): n for s, n in (("train", 10), ("validation", 5), ("test", 5)) for c in ("cat", "dog")}
    with np.load(project / "data/split/arrays/train.npz", allow_pickle=False) as arrays:
        images = arrays["images"]
        assert images.shape == (20, 150, 150, 3) and images.dtype == np.uint8
        assert images.std() > 20, "real photos, not blank arrays"
    metrics = json.loads((project / "metrics/runs/split.json").read_text())
    assert metrics["train"] == {"cat": 10, "dog": 10} and metrics["test"] == {"cat": 5, "dog": 5}


def test_real_weights_converted_and_loadable(project):
    import keras

    weights = project / "data/weights/vgg16_notop.weights.h5"
    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(150, 150, 3))
    conv_base.load_weights(str(weights))
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(150, 150, 3))
    reference.load_weights(str(SHARED_WEIGHTS))
    for layer in ("block1_conv1", "block5_conv3"):
        got, want = conv_base.get_layer(layer).get_weights(), reference.get_layer(layer).get_weights()
        assert all(np.array_equal(g, w) for g, w in zip(got, want)), f"{layer}: the ImageNet weights, unchanged"
    assert not (project / "data/weights").is_symlink() and SHARED_WEIGHTS.is_file()


def test_predict_on_real_photos(project):
    """`python -m stages.tools.predict` on real JPEGs, end to end (decoding, model loading, output),
    with a random-init network: only the path is exercised, its answers mean nothing. They
    must be that network's answers on the images exactly as `split` decoded them."""
    import keras

    from stages.lib import models

    keras.utils.set_random_seed(0)
    model = models.custom_convnet(150, 0.5)
    (project / "data/models").mkdir(parents=True, exist_ok=True)
    model.save(project / "data/models/train_custom.keras")
    test_images = project / "data/split/images/test"
    photos = sorted((test_images / "cats").glob("*.jpg"))[:3] + sorted((test_images / "dogs").glob("*.jpg"))[:3]
    env = {**os.environ, "PYTHONPATH": str(project), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "stages.tools.predict", *map(str, photos), "--model", "train_custom",
                             "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["file"] for a in answers] == [str(p) for p in photos]
    assert all(a["model"] == "train_custom" and a["error"] is None for a in answers)
    with np.load(project / "data/split/arrays/test.npz", allow_pickle=False) as test:
        position = {f: i for i, f in enumerate(test["files"])}
        images = test["images"][[position[p.name] for p in photos]]
    expected = model.predict(images.astype(np.float32), verbose=0).reshape(-1)
    np.testing.assert_allclose([a["p_positive"] for a in answers], expected, atol=2e-6)
    assert all(a["positive_class"] == "dog" for a in answers)
    assert [a["label"] for a in answers] == ["dog" if p >= 0.5 else "cat" for p in expected]

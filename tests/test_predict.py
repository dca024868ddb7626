"""`python -m stages.tools.predict` in a project folder holding trained models: one line per file,
JSON Lines, the default model chosen on validation, the pipeline's decoding, the class names
from data/split/classes.json, exit codes and the messages for missing and unknown models and
a missing classes file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from keras import layers
from PIL import Image

from helpers import ROOT
from stages.lib.models import OUTPUT_LAYER
from stages.lib.study import CLASSES_FILE, MODEL_NAMES, classes_record

SIZE = 48


def brightness_model(sign: float) -> keras.Model:
    """P(positive) = sigmoid(sign * 10 * (mean brightness - 0.5)): a model whose answer is known."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255)(inputs))
    head = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)
    model = keras.Model(inputs, head(x))
    head.set_weights([np.full((3, 1), sign * 10 / 3, np.float32), np.array([-sign * 5], np.float32)])
    return model


def project(root: Path, models: dict[str, keras.Model] | None = None, metrics: dict[str, dict] | None = None,
            classes: tuple[str, str] | None = ("cat", "dog")) -> Path:
    """A project folder as `dvc repro` leaves it: params.yaml, data/split/classes.json (unless
    classes is None), data/models/, metrics/."""
    root.mkdir(parents=True, exist_ok=True)
    if classes is not None:
        (root / CLASSES_FILE).parent.mkdir(parents=True)
        (root / CLASSES_FILE).write_text(json.dumps(classes_record(classes)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["image_size"] = SIZE
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for name, model in (models or {}).items():
        (root / "data" / "models").mkdir(parents=True, exist_ok=True)
        model.save(root / "data" / "models" / f"{name}.keras")
    for name, values in (metrics or {}).items():
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / f"{name}.json").write_text(json.dumps(values))
    return root


def predict(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "stages.tools.predict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two models that disagree: train_custom says bright = dog, finetune says bright = cat.
    finetune kept its epoch 3, whose validation accuracy (0.95) beats train_custom's 0.50. The test split favours train_custom: ignored."""
    root = project(
        tmp_path_factory.mktemp("project"),
        models={"train_custom": brightness_model(+1), "finetune": brightness_model(-1)},
        metrics={
            "train_custom": {"epochs": 2, "kept_epoch": 2, "val_accuracy": 0.50},
            "finetune": {"epochs": 5, "kept_epoch": 3, "val_accuracy": 0.95},
            "evaluate": {"train_custom": {"accuracy": 0.99}, "finetune": {"accuracy": 0.51}},
        },
    )
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 40), (220, 220, 220)).save(photos / "bright.png")
    Image.new("RGB", (30, 50), (30, 30, 30)).save(photos / "sub" / "dark.jpg")
    # Fully transparent black: the pipeline composites alpha on white, so this is bright.
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(photos / "transparent.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (photos / "notes.txt").write_text("not an image, skipped by name in a folder")
    (photos / "._bright.png").write_bytes(b"macOS resource fork, hidden")
    return root


def test_folder_default_model_and_failures(trained):
    run = predict(trained, "photos", "missing.jpg", "photos/notes.txt")
    assert run.returncode == 1, run.stderr
    rows = [line.split("\t") for line in run.stdout.splitlines()]
    assert [r[0] for r in rows] == ["photos/bright.png", "photos/broken.jpg", "photos/sub/dark.jpg",
                                    "photos/transparent.png", "missing.jpg", "photos/notes.txt"]
    by_file = {r[0]: r[1:] for r in rows}
    # finetune is the default (validation, restored epoch): bright = cat for it.
    assert "model: finetune (best validation accuracy 0.950" in run.stderr
    assert by_file["photos/bright.png"][1] == "cat" and float(by_file["photos/bright.png"][0]) < 0.1
    assert by_file["photos/sub/dark.jpg"][1] == "dog" and float(by_file["photos/sub/dark.jpg"][0]) > 0.9
    assert by_file["photos/transparent.png"][1] == "cat"  # alpha on white, as in the pipeline
    assert by_file["photos/broken.jpg"][0] == "-" and by_file["photos/broken.jpg"][1].startswith("error: ")
    assert by_file["missing.jpg"] == ["-", "error: no such file"]
    assert by_file["photos/notes.txt"] == ["-", "error: not an image (Pillow cannot identify it)"]
    assert "skipped 1 file(s) in folders that are not images by name, e.g. photos/notes.txt" in run.stderr
    assert "3 of 6 file(s) could not be read" in run.stderr
    assert "Traceback" not in run.stderr


def test_json_lines_with_a_named_model(trained):
    run = predict(trained, "photos/bright.png", "photos/sub/dark.jpg", "--json", "--model", "train_custom")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [list(r) for r in records] == [["file", "model", "positive_class", "p_positive", "label", "error"]] * 2
    assert [(r["file"], r["model"], r["positive_class"], r["label"], r["error"]) for r in records] == [
        ("photos/bright.png", "train_custom", "dog", "dog", None),
        ("photos/sub/dark.jpg", "train_custom", "dog", "cat", None),
    ]
    # The brightness model's exact answer on the decoded images: 220/255 and 30/255.
    expected = 1 / (1 + np.exp(-10 * (np.array([220, 30]) / 255 - 0.5)))
    np.testing.assert_allclose([r["p_positive"] for r in records], expected, atol=1e-5)
    assert "model: train_custom (chosen with --model); columns: file, P(dog), label (dog when P >= 0.5, else cat)" \
        in run.stderr
    run = predict(trained, "missing.jpg", "--json", "--model", "train_custom")
    assert run.returncode == 1
    assert json.loads(run.stdout) == {"file": "missing.jpg", "model": "train_custom", "positive_class": "dog",
                                      "p_positive": None, "label": None, "error": "no such file"}


def test_the_labels_are_the_studys_class_names(tmp_path):
    """Any two classes: the words, the positive class and P come from data/split/classes.json."""
    root = project(tmp_path / "p", models={"train_custom": brightness_model(+1)}, classes=("night", "day"))
    Image.new("RGB", (20, 20), (220, 220, 220)).save(root / "bright.png")
    Image.new("RGB", (20, 20), (30, 30, 30)).save(root / "dark.png")
    run = predict(root, "bright.png", "dark.png", "--model", "train_custom")
    assert run.returncode == 0, run.stderr
    assert [row.split("\t")[::2] for row in run.stdout.splitlines()] == [["bright.png", "day"], ["dark.png", "night"]]
    assert "columns: file, P(day), label (day when P >= 0.5, else night)" in run.stderr
    run = predict(root, "bright.png", "--model", "train_custom", "--json")
    assert json.loads(run.stdout)["positive_class"] == "day" and json.loads(run.stdout)["label"] == "day"


def test_a_missing_classes_file_says_how_to_get_it(tmp_path):
    root = project(tmp_path / "p", models={"train_custom": brightness_model(+1)}, classes=None)
    Image.new("RGB", (20, 20)).save(root / "img.png")
    run = predict(root, "img.png", "--model", "train_custom")
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: data/split/classes.json not found (it names the two classes): "
                                  "run `dvc pull` or `dvc repro split`")
    assert run.stdout == ""
    (root / CLASSES_FILE).parent.mkdir(parents=True)
    (root / CLASSES_FILE).write_text('{"classes": ["cat"]}')
    run = predict(root, "img.png", "--model", "train_custom")
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: data/split/classes.json: 'classes' is ['cat'], two different class names "
                                  "are needed [negative, positive]: it is written by the split stage; rerun it "
                                  "(dvc repro --force split)")
    for damaged in ('{"classes": ["cat", "cat"]}', '["cat", "dog"]', "{not json"):
        (root / CLASSES_FILE).write_text(damaged)
        run = predict(root, "img.png", "--model", "train_custom")
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("error: data/split/classes.json") and "split" in run.stderr


def test_unknown_model_is_a_usage_error(trained):
    run = predict(trained, "photos", "--model", "vgg19")
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: --model 'vgg19' is not one of the study's models: {', '.join(MODEL_NAMES)}"
    assert run.stdout == ""


def test_missing_models_say_how_to_get_them(trained, tmp_path):
    run = predict(trained, "photos", "--model", "train_feature_clf")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: data/models/train_feature_clf.keras not found: run `dvc repro` or `dvc pull`"
    empty = project(tmp_path / "fresh_clone")
    run = predict(empty, str(trained / "photos"))
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: data/models/finetune.keras not found (nor any other trained model): "
                                  "run `dvc repro` or `dvc pull`")


def test_models_without_metrics_cannot_be_ranked(tmp_path):
    root = project(tmp_path / "p", models={"train_custom": brightness_model(+1)})
    (root / "img.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (20, 20)).save(root / "img.png")
    run = predict(root, "img.png")
    assert run.returncode == 2
    assert "error: metrics/train_custom.json not found, so no model can be chosen by validation accuracy" in run.stderr
    run = predict(root, "img.png", "--model", "train_custom")  # naming it needs no metrics
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "img.png\t0.0067\tcat"


def test_a_model_trained_at_another_size_is_refused(tmp_path, trained):
    root = project(tmp_path / "p", models={"train_custom": brightness_model(+1)})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["split"]["image_size"] = 64
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run = predict(root, str(trained / "photos" / "bright.png"), "--model", "train_custom")
    assert run.returncode == 2
    assert "takes images of shape (48, 48, 3) but params.yaml split.image_size is 64" in run.stderr


def test_special_files_urls_and_heic_each_get_a_line(trained, tmp_path):
    """A FIFO or a link to /dev/zero is never opened (one blocks, the other never ends): in a
    folder it is counted on stderr, named it gets "not a regular file"; a URL is said to be
    one (not "no such file: https:/..."); a HEIC photo is named as HEIC, with what to do."""
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.new("RGB", (40, 40), (220, 220, 220)).save(odd / "bright.jpg")
    os.mkfifo(odd / "pipe.jpg")
    (odd / "zero.jpg").symlink_to("/dev/zero")
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    url = "https://example.com/cat.jpg"
    run = predict(trained, str(odd), str(odd / "pipe.jpg"), str(odd / "zero.jpg"), url, str(heic))
    assert run.returncode == 1, run.stderr
    assert "skipped 2 file(s) in folders that are not regular files (a pipe, socket or device, or a link to one)" \
        in run.stderr
    rows = {r.split("\t")[0]: r.split("\t")[1:] for r in run.stdout.splitlines()}
    assert rows[str(odd / "bright.jpg")][1] in ("cat", "dog")
    assert rows[str(odd / "pipe.jpg")] == ["-", "error: not a regular file (a pipe, socket or device)"]
    assert rows[str(odd / "zero.jpg")] == ["-", "error: not a regular file (a pipe, socket or device)"]
    assert rows[url] == ["-", "error: a URL: predict reads local files; download the image first (e.g. curl -O URL)"]
    assert rows[str(heic)] == ["-", "error: unsupported format HEIC: convert it to JPEG or PNG"]
    assert "4 of 5 file(s) could not be read" in run.stderr and "Traceback" not in run.stderr


def test_names_the_terminal_cannot_show_are_printed_escaped(trained, tmp_path):
    """A name that is not UTF-8 (a Latin-1 é from an old archive) and one the locale cannot
    encode (猫 under ASCII) each get their line, escaped, in text and JSON: no crash half-way."""
    folder = tmp_path / "odd"
    folder.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.png")
    for name in (latin1, "猫.png"):
        Image.new("RGB", (20, 20), (220, 220, 220)).save(folder / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONIOENCODING": "ascii"}
    for as_json in ([], ["--json"]):
        run = subprocess.run([sys.executable, "-m", "stages.tools.predict", str(folder), "--model", "train_custom",
                              *as_json], cwd=trained, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert len(lines) == 2 and "Traceback" not in run.stderr, run.stdout + run.stderr
        if as_json:
            assert {os.fsencode(json.loads(line)["file"]) for line in lines} == {
                os.fsencode(folder / latin1), os.fsencode(folder / "猫.png")}
        else:
            assert {line.split("\t")[0] for line in lines} == {f"{folder}/caf\\xe9.png", f"{folder}/\\u732b.png"}
            assert all(line.endswith("\tdog") for line in lines)

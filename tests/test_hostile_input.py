"""Hostile input, round two: nonsense params refused, images that phones and
scanners really write, symbolic links in a source folder, and outputs readable by the
user's teammates (umask modes)."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import ROOT, synthetic_image
from stages.lib.params import ParamError, SCHEMA, load_params, validate_section
from stages.download import inspect, scan
from stages.lib.images import check_image, decode_resized
from stages.lib.outputs import atomic_dir, atomic_path, save_npz, write_csv, write_json

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())
DROPOUT_SECTIONS = [s for s, spec in SCHEMA.items() if "dropout" in spec]


# ---------------------------------------------------------------- params


@pytest.mark.parametrize("section", DROPOUT_SECTIONS)
def test_dropout_of_one_is_refused(section):
    assert len(DROPOUT_SECTIONS) == 4
    values = {**REAL[section], "dropout": 1.0}
    with pytest.raises(ParamError) as err:
        validate_section(section, values)
    assert str(err.value) == f"{section}.dropout must be a number in [0, 1), got 1.0"
    assert validate_section(section, {**REAL[section], "dropout": 0.999})["dropout"] == 0.999
    assert validate_section(section, {**REAL[section], "dropout": 0})["dropout"] == 0


def write_params(folder: Path, params: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_misspelt_section_is_refused_with_a_suggestion(tmp_path):
    params = copy.deepcopy(REAL)
    params["train_custm"] = {"epochs": 5}  # meant train_custom.epochs: would be ignored
    path = write_params(tmp_path, params)
    with pytest.raises(ParamError) as err:
        load_params("split", path=path)
    assert str(err.value) == (
        f"{path}: 'train_custm' is not a known section (did you mean 'train_custom'?); the sections are: "
        + ", ".join(SCHEMA)
    )
    params = copy.deepcopy(REAL)
    params["notes"] = "mine"
    with pytest.raises(ParamError, match=r"'notes' is not a known section; the sections are: download, split"):
        load_params("split", path=write_params(tmp_path, params))


def test_misspelt_section_stops_a_stage_process_with_one_line(tmp_path):
    params = copy.deepcopy(REAL)
    params["splt"] = {"seed": 1}
    write_params(tmp_path, params)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.split"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "error: params.yaml: 'splt' is not a known section (did you mean 'split'?); the sections are: "
        + ", ".join(SCHEMA)
    )


@pytest.mark.parametrize(
    "source, problem",
    [
        (["https://example.org/a.zip", "kaggle", "/data/mirror/train"], None),
        ("kaggle", None),
        ([], "download.source must be a source (path, URL or kaggle) or a non-empty list of them, got []"),
        (["kaggle", ""], "download.source must be a source (path, URL or kaggle) or a non-empty list of them, got ['kaggle', '']"),
        ([["nested"]], "download.source must be a source (path, URL or kaggle) or a non-empty list of them, got [['nested']]"),
    ],
    ids=["list", "string", "empty-list", "empty-item", "nested-list"],
)
def test_source_may_be_a_list(source, problem):
    values = {**REAL["download"], "source": source}
    if problem is None:
        assert validate_section("download", values)["source"] == source
    else:
        with pytest.raises(ParamError) as err:
            validate_section("download", values)
        assert str(err.value) == problem


# ---------------------------------------------------------------- images


def mpo_bytes(first: tuple, second: tuple) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), first).save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", (24, 16), second)])
    return buf.getvalue()


def test_mpo_from_a_phone_camera_is_accepted_as_its_first_frame(tmp_path):
    path = tmp_path / "cat.1.jpg"
    path.write_bytes(mpo_bytes((220, 30, 30), (30, 30, 220)))
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
    row = inspect(path)
    assert "reason" not in row, row
    assert row["format"] == "MPO" and row["file"] == "cat.1.jpg"
    pixels = decode_resized(path, 16).astype(int)
    assert np.abs(pixels - (220, 30, 30)).max() < 16, "the first (red) frame, not the second (blue)"


def sixteen_bit_png(path: Path, value: int) -> Path:
    Image.fromarray(np.full((16, 16), value, np.uint16)).save(path, "PNG")
    return path


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0), (255, 0), (256, 1), (32768, 128), (65535, 255)],
    ids=["black", "255-below-the-old-edge", "256-above-it", "half", "white"],
)
def test_16_bit_grayscale_scales_by_its_bit_depth(tmp_path, value, expected):
    """One rule, the high byte (65535 -> 255), as for 16-bit RGB (test_hostile_round3):
    never clipped at 255 (255 used to give 255 and 256 give 1)."""
    path = sixteen_bit_png(tmp_path / "cat.1.png", value)
    info, reason = check_image(path)
    assert reason is None and info.mode == "I;16"
    assert np.all(decode_resized(path, 8) == expected), np.unique(decode_resized(path, 8))


def write_image(path: Path, label: str = "cat", i: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_image(label, i, 16).save(path, "JPEG")
    return path


def test_symbolic_links_and_special_files_each_get_a_line(tmp_path):
    source = tmp_path / "source"
    outside = write_image(tmp_path / "elsewhere" / "photo.jpg", "dog", 5)
    write_image(source / "cat.1.jpg")
    (source / "dog.5.jpg").symlink_to(outside)  # a link to a file outside: followed
    (source / "cat.2.jpg").symlink_to(tmp_path / "deleted.jpg")  # dangling
    (source / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a folder: not followed
    os.mkfifo(source / "cat.3.jpg")  # would block a reader forever
    manifest, rejected = scan(source)
    assert list(manifest["path"]) == ["cat.1.jpg", "dog.5.jpg"]
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons == {
        "cat.2.jpg": f"broken symbolic link (to {tmp_path / 'deleted.jpg'})",
        "more": "symbolic link to a folder, not followed",
        "cat.3.jpg": "not a regular file (a pipe, socket or device)",
    }
    assert "elsewhere" not in " ".join(manifest["path"]), "nothing under the linked folder was read"


# ---------------------------------------------------------------- file modes


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask-022", "umask-002", "umask-077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_outputs_get_the_mode_of_a_normal_file(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the user's umask gives any new file
    (tmp_path / "plain_dir").mkdir()
    assert mode(plain) == 0o666 & ~umask
    write_json(tmp_path / "metrics" / "runs" / "split.json", {"a": 1})
    write_csv(tmp_path / "index.csv", pd.DataFrame({"a": [1]}))
    save_npz(tmp_path / "train.npz", labels=np.zeros(3, np.uint8))
    with atomic_path(tmp_path / "model.keras", suffix=".keras") as tmp:
        tmp.write_bytes(b"model")
    with atomic_dir(tmp_path / "split") as out:
        (out / "arrays").mkdir()
    for name in ("metrics/runs/split.json", "index.csv", "train.npz", "model.keras"):
        assert mode(tmp_path / name) == mode(plain), (name, oct(mode(tmp_path / name)))
    assert mode(tmp_path / "split") == mode(tmp_path / "plain_dir") == 0o777 & ~umask


def test_unfreeze_accepts_only_layers_with_weights():
    """`unfreeze: [block5_pool]` used to unfreeze nothing without a word."""
    import keras

    from stages.lib import models
    from stages.lib.params import UserError

    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(48, 48, 3))
    model = models.vgg16_with_head(conv_base, "imagenet", dense_units=4, dropout=0.0)
    with pytest.raises(UserError, match=r"finetune.unfreeze: layer 'block5_pool' has no weights \(nothing to train\); "
                                        r"layers with weights are block1_conv1, .*block5_conv3"):
        models.unfreeze(model, ["block5_pool"])
    with pytest.raises(UserError, match="finetune.unfreeze: layer 'block6_conv1' does not exist"):
        models.unfreeze(model, ["block6_conv1"])
    # The preprocessing is a Conv2D with weights (the fixed BGR flip and mean): never trained.
    with pytest.raises(UserError, match="finetune.unfreeze: layer 'vgg16_preprocessing' is the fixed preprocessing"):
        models.unfreeze(model, ["vgg16_preprocessing"])
    models.unfreeze(model, ["block5_conv3"])
    assert [layer.name for layer in model.layers if layer.trainable and layer.weights] == ["block5_conv3", "dense", models.OUTPUT_LAYER]

"""params.yaml is checked against the schema before a stage does any work; a bad value stops
the stage with one `error: ...` line naming the key, the value and what is allowed, exit 2,
and no traceback."""

from __future__ import annotations

import copy
import math
import subprocess

import pytest
import yaml

from helpers import ROOT, run_module
from stages.lib.params import ParamError, SCHEMA, load_params, validate_section

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(section: str, key: str, value) -> dict:
    values = copy.deepcopy(REAL[section])
    values[key] = value
    return values


def test_shipped_params_are_valid():
    for section in SCHEMA:
        assert validate_section(section, REAL[section]) == REAL[section]
    assert set(load_params(*SCHEMA, path=ROOT / "params.yaml")) == set(SCHEMA)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train_custom", "epochs", -3, "train_custom.epochs must be a positive integer, got -3"),
        ("train_custom", "epochs", 0, "train_custom.epochs must be a positive integer, got 0"),
        ("train_custom", "epochs", 2.5, "train_custom.epochs must be a positive integer, got 2.5"),
        ("train_custom", "epochs", True, "train_custom.epochs must be a positive integer, got True"),
        ("train_custom", "epochs", "30", "train_custom.epochs must be a positive integer, got '30'"),
        ("train_custom", "batch_size", 0, "train_custom.batch_size must be an integer in [1, 4096], got 0"),
        ("train_custom", "learning_rate", 0, "train_custom.learning_rate must be a number in (0, 1], got 0"),
        ("train_custom", "learning_rate", 3.0, "train_custom.learning_rate must be a number in (0, 1], got 3.0"),
        ("train_custom", "learning_rate", math.nan, "train_custom.learning_rate must be a number in (0, 1], got nan"),
        ("train_custom", "learning_rate", "1e-4",
         "train_custom.learning_rate must be a number in (0, 1] (text, not a number: write it with a dot, "
         "e.g. 1.0e-4), got '1e-4'"),
        ("train_custom", "dropout", 1.5, "train_custom.dropout must be a number in [0, 1), got 1.5"),
        ("train_custom", "augment", "true", "train_custom.augment must be true or false, got 'true'"),
        ("train_custom", "early_stopping", -1, "train_custom.early_stopping must be an integer >= 0, got -1"),
        ("split", "order", "random", "split.order must be one of id, shuffle, got 'random'"),
        ("split", "image_size", 32, "split.image_size must be an integer in [48, 1024], got 32"),
        ("split", "train_per_class", None, "split.train_per_class must be a count of images per class (an integer "
         ">= 1) or a fraction of each class (a number in (0, 1)), got None"),
        ("split", "val_per_class", 1.0, "split.val_per_class must be a count of images per class (an integer "
         ">= 1) or a fraction of each class (a number in (0, 1)), got 1.0"),
        ("split", "test_per_class", 0, "split.test_per_class must be a count of images per class (an integer "
         ">= 1) or a fraction of each class (a number in (0, 1)), got 0"),
        ("split", "classes", ["ants"], "split.classes must be null (the data's classes, sorted) or a list of two "
         "distinct class names, negative first, got ['ants']"),
        ("split", "classes", ["a", "a"], "split.classes must be null (the data's classes, sorted) or a list of two "
         "distinct class names, negative first, got ['a', 'a']"),
        ("augmentation", "fill_mode", "mirror",
         "augmentation.fill_mode must be one of nearest, reflect, wrap, constant, got 'mirror'"),
        ("augmentation", "rotation", 400, "augmentation.rotation must be a number in [0, 180], got 400"),
        ("train", "precision", "fp16",
         "train.precision must be one of auto, float32, mixed_bfloat16, mixed_float16, got 'fp16'"),
        ("vgg16", "preprocessing", "caffe", "vgg16.preprocessing must be one of imagenet, rescale, got 'caffe'"),
        ("finetune", "unfreeze", [], "finetune.unfreeze must be a non-empty list of layer names, got []"),
        ("finetune", "unfreeze", "block5_conv1",
         "finetune.unfreeze must be a non-empty list of layer names, got 'block5_conv1'"),
        ("download", "source", "  ",
         "download.source must be a source (path, URL or kaggle) or a non-empty list of them, got '  '"),
    ],
)
def test_bad_value_names_key_value_and_allowed(section, key, value, message):
    with pytest.raises(ParamError) as err:
        validate_section(section, with_value(section, key, value))
    assert str(err.value) == message


def test_unknown_key_suggests_the_right_one():
    values = copy.deepcopy(REAL["train_custom"])
    values["epoch"] = values.pop("epochs")
    with pytest.raises(ParamError) as err:
        validate_section("train_custom", values)
    assert str(err.value) == (
        "train_custom.epoch is not a known param (did you mean train_custom.epochs?); "
        "train_custom takes: batch_size, epochs, learning_rate, lr_decay, early_stopping, restore_best, dropout, augment"
    )


def test_missing_key_and_non_mapping_section():
    values = copy.deepcopy(REAL["train_custom"])
    del values["dropout"]
    with pytest.raises(ParamError, match=r"^train_custom\.dropout is missing from params\.yaml$"):
        validate_section("train_custom", values)
    with pytest.raises(ParamError, match=r"^train_custom must be a mapping of keys to values, got 5$"):
        validate_section("train_custom", 5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("split: [1, 2\n", r"^.*params\.yaml is not valid YAML: "),
        ("split:\n  seed: 1\n\tbad: tab\n", r"^.*params\.yaml is not valid YAML: "),
        ("- split\n- train\n", r"^.*params\.yaml must be a mapping of sections \(download:, split:, \.\.\.\), got list$"),
        ("train: {seed: 1, precision: auto}\n", r"^.*params\.yaml has no section 'split'$"),
        ("", r"^.*params\.yaml has no section 'split'$"),
    ],
    ids=["unclosed", "tab", "list", "no-section", "empty"],
)
def test_bad_file(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamError, match=message):
        load_params("split", path=path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamError, match=r"params\.yaml not found: run stages from the project root"):
        load_params("split", path=tmp_path / "params.yaml")


# ---------------------------------------------------------------- real stage processes

def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == f"error: {expected}", errors[0]


@pytest.mark.parametrize(
    "module, section, key, value, expected",
    [
        ("stages.train_custom", "train_custom", "epochs", -3, "train_custom.epochs must be a positive integer, got -3"),
        ("stages.train_custom_aug", "augmentation", "zoom", 2, "augmentation.zoom must be a number in [0, 0.9], got 2"),
        ("stages.split", "split", "order", "sorted", "split.order must be one of id, shuffle, got 'sorted'"),
    ],
)
def test_stage_process_stops_with_one_error_line(tmp_path, module, section, key, value, expected):
    params = copy.deepcopy(REAL)
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert_one_error_line(run_module(module, tmp_path), expected)
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists(), "no work started"


def test_stage_process_with_broken_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("train_custom:\n  epochs: [3\n")
    result = run_module("stages.train_custom", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: params.yaml is not valid YAML: "), result.stderr


def test_split_without_download_says_what_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(REAL, sort_keys=False))
    result = run_module("stages.split", tmp_path)
    assert_one_error_line(result, "data/raw/manifest.csv not found: run the download stage first (dvc repro download)")


def test_download_from_missing_folder_names_the_param(tmp_path):
    params = copy.deepcopy(REAL)
    params["download"]["source"] = str(tmp_path / "no-such-folder")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_module("stages.download", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: download.source: {tmp_path / 'no-such-folder'} does not exist. To run offline")
    assert not (tmp_path / "data" / "raw").exists()
    leftovers = list((tmp_path / "data").iterdir()) if (tmp_path / "data").exists() else []
    assert leftovers == [], "no temporary folder left behind"

"""Any two classes, not only cats and dogs: `dvc repro split` (download + split) in temporary
projects on synthetic image folders laid out as image_dataset_from_directory and the
PyTorch transfer-learning tutorial expect them, and the one-line errors for what cannot
be read as two classes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import dvc, make_project, synthetic_image, tiny_params

pytestmark = pytest.mark.slow  # each test runs a real `dvc repro`


def write_class(folder, pattern: str, n: int, start: int = 0) -> None:
    """n synthetic images in `folder` with awkward names: `.jpeg`, upper case, none."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["photo {}.jpeg", "IMG_{}.JPG", "img{}"]
    for i in range(start, start + n):
        synthetic_image(pattern, i).save(folder / names[i % 3].format(i), format="JPEG", quality=90)


def run_split(tmp_path, source, weights, **split):
    params = tiny_params(source, weights)
    params["split"].update(extended_per_class=100, **split)
    project = make_project(tmp_path / "project", params)
    dvc(project, "repro", "split")
    return project


def read(project, name):
    return json.loads((project / name).read_text())


def arrays(project, split):
    with np.load(project / f"data/split/arrays/{split}.npz", allow_pickle=False) as a:
        return a["labels"], a["files"]


def test_two_class_folders_with_any_names(tmp_path, random_vgg16_weights):
    source = tmp_path / "zip-like" / "my data"  # a lone wrapper folder around the classes
    write_class(source / "Große Ameise", "cat", 20)
    write_class(source / "bees and wasps", "dog", 22)
    (source / "README.txt").write_text("not an image")
    project = run_split(tmp_path, source.parent, random_vgg16_weights, train_per_class=8, val_per_class=4,
                        test_per_class=4)
    assert read(project, "data/split/classes.json") == {"classes": ["Große Ameise", "bees and wasps"],
                                                        "positive": "bees and wasps"}
    manifest = pd.read_csv(project / "data/raw/manifest.csv")
    assert len(manifest) == 42 and "source_split" not in manifest
    names = sorted(p.name for p in (project / "data/raw/images").iterdir())
    assert all(n.isascii() and " " not in n for n in names), names  # raw names are safe, whatever the class
    assert {n.split(".")[0] for n in names} == {"Groe_Ameise", "bees_and_wasps"}
    # ids: each class's rank by path, so the same folder gives the same split
    ants = manifest[manifest.label == "Große Ameise"].sort_values("id")
    assert ants.id.tolist() == list(range(20)) and ants.source_path.is_monotonic_increasing
    assert read(project, "data/raw/summary.json") == {
        "images": {"Große Ameise": 20, "bees and wasps": 22}, "rejected": 1, "bytes": int(manifest.bytes.sum())}
    split = read(project, "metrics/runs/split.json")
    assert split["train"] == {"Große Ameise": 8, "bees and wasps": 8} and split["test"]["bees and wasps"] == 4
    assert split["extended"] == {"Große Ameise": 4, "bees and wasps": 6}
    for name in ("Große Ameise", "bees and wasps"):
        assert len(list((project / "data/split/images/train" / name).iterdir())) == 8
    labels, files = arrays(project, "train")
    assert labels.tolist() == [0] * 8 + [1] * 8 and files[-1].startswith("bees_and_wasps.")


def test_train_val_source_keeps_its_split_val_is_test(tmp_path, random_vgg16_weights):
    source = tmp_path / "src" / "hymenoptera_data"  # a lone wrapper folder around the splits
    write_class(source / "train" / "ants", "cat", 15)
    write_class(source / "train" / "bees", "dog", 12)
    write_class(source / "val" / "ants", "cat", 7, start=100)
    write_class(source / "val" / "bees", "dog", 9, start=100)
    project = run_split(tmp_path, tmp_path / "src", random_vgg16_weights, train_per_class=0.5, val_per_class=0.25,
                        test_per_class=3)
    manifest = pd.read_csv(project / "data/raw/manifest.csv")
    assert manifest.groupby(["source_split", "label"]).size().to_dict() == {
        ("train", "ants"): 15, ("train", "bees"): 12, ("val", "ants"): 7, ("val", "bees"): 9}
    split = read(project, "metrics/runs/split.json")
    # test is val/ whole (test_per_class does not apply); train and validation come out of train/
    assert split["test"] == {"ants": 7, "bees": 9}
    assert split["train"] == {"ants": 7, "bees": 6} and split["validation"] == {"ants": 3, "bees": 3}
    assert split["extended"] == {"ants": 5, "bees": 3}  # train/'s leftovers
    index = pd.read_csv(project / "data/split/index.csv").merge(manifest[["file", "source_split"]], on="file")
    assert set(index[index.split == "test"].source_split) == {"val"}
    assert set(index[index.split != "test"].source_split) == {"train"}


def test_train_val_test_source_maps_one_to_one(tmp_path, random_vgg16_weights):
    for folder, n, start in (("train", 10, 0), ("validation", 4, 100), ("test", 5, 200)):
        write_class(tmp_path / "src" / folder / "normal", "cat", n, start)
        write_class(tmp_path / "src" / folder / "pneumonia", "dog", n + 1, start)
    project = run_split(tmp_path, tmp_path / "src", random_vgg16_weights, train_per_class=10)
    split = read(project, "metrics/runs/split.json")
    assert split["train"] == {"normal": 10, "pneumonia": 10}
    assert split["validation"] == {"normal": 4, "pneumonia": 5} and split["test"] == {"normal": 5, "pneumonia": 6}
    assert split["extended"] == {"normal": 0, "pneumonia": 1}


def test_fractions_keep_a_one_to_four_ratio_in_every_split(tmp_path, random_vgg16_weights):
    write_class(tmp_path / "src" / "rare", "cat", 20)
    write_class(tmp_path / "src" / "common", "dog", 80)
    project = run_split(tmp_path, tmp_path / "src", random_vgg16_weights, train_per_class=0.6, val_per_class=0.2,
                        test_per_class=0.2, order="shuffle")
    split = read(project, "metrics/runs/split.json")
    for name in ("train", "validation", "test"):
        assert split[name]["common"] == 4 * split[name]["rare"], (name, split[name])
    assert split["train"] == {"common": 48, "rare": 12} and split["extended"] == {"common": 0, "rare": 0}
    with np.load(project / "data/split/arrays/extended.npz") as a:
        assert a["images"].shape == (0, 48, 48, 3)


def test_split_classes_reversed_flips_the_labels(tmp_path, random_vgg16_weights):
    write_class(tmp_path / "src" / "ants", "cat", 12)
    write_class(tmp_path / "src" / "bees", "dog", 12)
    project = run_split(tmp_path, tmp_path / "src", random_vgg16_weights, train_per_class=6, val_per_class=3,
                        test_per_class=3, classes=["bees", "ants"])
    assert read(project, "data/split/classes.json") == {"classes": ["bees", "ants"], "positive": "ants"}
    labels, files = arrays(project, "train")
    assert {f.split(".")[0]: int(v) for f, v in zip(files, labels)} == {"bees": 0, "ants": 1}


@pytest.fixture(scope="module")
def failing_project(tmp_path_factory, random_vgg16_weights):
    root = tmp_path_factory.mktemp("own_errors")
    return make_project(root / "project", tiny_params(root / "none", random_vgg16_weights))


def layout(root, folders: dict[str, int]):
    shutil.rmtree(root, ignore_errors=True)
    for n, (folder, count) in enumerate(folders.items()):
        write_class(root / folder, "cat" if n % 2 else "dog", count)
    return root


@pytest.mark.parametrize(
    "folders, split, expected",
    [
        ({"a": 3, "b": 3, "c b": 3}, {},
         "download.source: found 3 class folders (a, b, c b) in {src}, and no Kaggle (cat.N.jpg) or PetImages "
         "(Cat/N.jpg) names; the study needs exactly two classes, one folder each"),
        ({"only/x": 3}, {},  # a lone wrapper around one class: one class
         "download.source: found 1 class folder (x) in {src} (under only), and no Kaggle (cat.N.jpg) or PetImages "
         "(Cat/N.jpg) names; the study needs exactly two classes, one folder each"),
        ({"train/ants": 3, "train/bees": 3, "val/ants": 2, "val/wasps": 2}, {},
         "download.source: the class folders differ between splits in {src}: train/ has ants, bees; "
         "val/ has ants, wasps"),
        ({"train/ants": 3, "train/bees": 3, "val/ants": 2, "val/bees": 2, "ants": 2}, {},
         "download.source: split folders (train, val) beside other folders (ants) in {src}: use either class "
         "folders or split folders holding them"),
        ({"train/a": 3, "train/b": 3, "val/a": 2, "val/b": 2, "validation/a": 2, "validation/b": 2}, {},
         "download.source: split folders train, val, validation in {src} name one split twice; keep one of them"),
        ({"a": 30, "b": 5}, {"train_per_class": 4, "val_per_class": 1, "test_per_class": 1},
         "split needs 6 b images (4 train + 1 validation + 1 test), 5 valid found (per class: a 30, b 5); "
         "0 files rejected, see data/raw/rejected.csv; fewer per class, or fractions of each class "
         "(e.g. split.train_per_class: 0.5), fit any size"),
        ({"a": 6, "b": 6}, {"classes": ["a", "c"]},
         "split.classes ['a', 'c'] must name the data's two classes, 'a' and 'b', in either order "
         "(negative first), or be null"),
        ({"Ants": 6, "ants": 6}, {},
         "data/raw/manifest.csv: the classes 'Ants' and 'ants' would share the folder 'Ants' under "
         "data/split/images/<split>/ (on a case-insensitive disk too): rename one of the class folders in "
         "download.source"),
    ],
)
def test_what_cannot_be_two_classes_stops_with_one_line(failing_project, folders, split, expected):
    src = layout(failing_project.parent / "src", folders)
    params = yaml.safe_load((failing_project / "params.yaml").read_text())
    params["download"]["source"] = str(src)
    params["split"].update({"train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "classes": None, **split})
    (failing_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # --force: the source folder is the same path in every case, and DVC does not hash a source
    # folder (download's deps are its code and params), so a case after one that got past
    # download would otherwise split the earlier case's images
    result = dvc(failing_project, "repro", "split", "--force", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors[0] == "error: " + expected.format(src=src), output


def test_file_names_that_are_not_utf8_are_kept_and_escaped(tmp_path, random_vgg16_weights):
    """A Latin-1 byte in a file name (a camera card, an old archive): the image is kept and
    its name written with the byte escaped; a class folder named so is refused in one line."""
    import os

    source = tmp_path / "src"
    write_class(source / "ants", "cat", 12)
    write_class(source / "bees", "dog", 12)
    latin1 = os.path.join(os.fsencode(source / "ants"), b"caf\xe9 ant.jpg")
    synthetic_image("cat", 99).save(os.fsdecode(latin1), format="JPEG")
    project = run_split(tmp_path, source, random_vgg16_weights, train_per_class=6, val_per_class=3, test_per_class=3)
    manifest = pd.read_csv(project / "data/raw/manifest.csv")
    assert "ants/caf\\xe9 ant.jpg" in manifest["source_path"].tolist()
    assert read(project, "data/raw/summary.json")["images"] == {"ants": 13, "bees": 12}

    bad = tmp_path / "bad"
    write_class(bad / "bees", "dog", 12)
    os.makedirs(os.path.join(os.fsencode(bad), b"fourmis-\xe9"))
    write_class(bad / os.fsdecode(b"fourmis-\xe9"), "cat", 12)
    params = tiny_params(bad, random_vgg16_weights)
    project = make_project(tmp_path / "refused", params)
    result = dvc(project, "repro", "download", check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: download.source")]
    assert lines == [f"error: download.source: class folder name fourmis-\\xe9 in {bad} is not UTF-8: rename it "
                     "(its name is the class name)"], result.stderr
    assert "Traceback" not in result.stderr


def test_numbered_files_in_other_class_folders_are_not_petimages(tmp_path, random_vgg16_weights):
    """`dog/1.jpg` beside `wolf/1.jpg` is a dog-vs-wolf set, not PetImages: both folders are
    classes (PetImages means its two folders are Cat and Dog)."""
    for label, pattern in (("dog", "dog"), ("wolf", "cat")):
        folder = tmp_path / "src" / label
        folder.mkdir(parents=True)
        for i in range(10):
            synthetic_image(pattern, i).save(folder / f"{i}.jpg", format="JPEG", quality=90)
    project = run_split(tmp_path, tmp_path / "src", random_vgg16_weights, train_per_class=6, val_per_class=2,
                        test_per_class=2)
    assert read(project, "data/split/classes.json")["classes"] == ["dog", "wolf"]
    assert read(project, "data/raw/summary.json")["images"] == {"dog": 10, "wolf": 10}

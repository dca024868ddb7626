"""Stage `split`: Chollet's train/validation/test split of data/raw, browsable folders for
`keras.utils.image_dataset_from_directory`, and every image decoded and resized once into
uint8 arrays that all training stages read (no JPEG is decoded per epoch).

The classes: the data's two labels, sorted (as image_dataset_from_directory sorts its
folders), unless `split.classes` names them; the second is the positive class, label 1 in
the arrays. They are written to data/split/classes.json (study.read_classes). The folders
are data/split/images/<split>/<class name>/ (`cats/` and `dogs/` for cat and dog, the
study's names before other classes).

How many images per class: each `split.*_per_class` is a count (int >= 1) or a fraction of
the class (float in (0, 1), rounded down), so the split is stratified: every split keeps the
class ratio. Images are taken per class in the split's order (ids, or the seeded shuffle,
seed + class index): train first, then validation, then test. A source with its own split
(download records `source_split`) keeps it: its test/ folder, or val/ when it has no test/,
is the test split, whole (results then compare with what its publishers report) and
test_per_class does not apply; beside a test/ folder, val/ is the validation split, whole,
and val_per_class does not apply; train and (without test/) validation are drawn from train/
as above, counts or fractions of train/'s class. Asking for more images than a class has
stops the stage with one line giving the counts per class.

It also writes the extended test set, data/split/arrays/extended.npz: the usable images
left over after the three splits (after the duplicate rule), at most
`split.extended_per_class` per class, taken in the split's order (the next ids, or the
next of the seeded shuffle); from a source with its own split, what train/ has left. Only
`evaluate` reads it, to score the models on more images than the test split holds; it is
never used for any choice. It is written even when empty (shape (0, S, S, 3)), so the path
`evaluate` depends on always exists."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from stages.lib.params import UserError, load_params, run_stage
from stages.lib.images import decode_resized
from stages.lib.outputs import atomic_dir, remove_leftovers, save_npz, write_csv, write_json
from stages.lib.study import CLASSES_FILE, DATA_PLOTS_DIR, RAW_DIR, SPLIT_DIR, SPLITS, classes_record, run_file

RECORD_FILE = run_file("split")  # images per split and class: a record, not a DVC metric
# The class folders of the first study, cats vs. dogs: its committed data/split keeps them.
CLASS_FOLDERS = {"cat": "cats", "dog": "dogs"}


def class_folder(label: str) -> str:
    """The folder of a class under data/split/images/<split>/: its name (a folder name in the
    source already, so a valid one), `cats`/`dogs` for cat and dog."""
    return CLASS_FOLDERS.get(label, label)


def study_classes(manifest: pd.DataFrame, cfg: dict) -> tuple[str, str]:
    """(negative, positive): the data's two labels sorted, or `split.classes` if given."""
    found = sorted(manifest["label"].astype(str).unique())
    if len(found) != 2:
        raise UserError(f"{RAW_DIR}/manifest.csv has {len(found)} class{'es' * (len(found) != 1)} ({', '.join(found) or 'no images'}); "
                        "the study needs exactly two: check download.source (see data/raw/summary.json)")
    if class_folder(found[0]).casefold() == class_folder(found[1]).casefold():
        raise UserError(f"{RAW_DIR}/manifest.csv: the classes {found[0]!r} and {found[1]!r} would share the folder "
                        f"{class_folder(found[0])!r} under {SPLIT_DIR}/images/<split>/ (on a case-insensitive disk too): "
                        "rename one of the class folders in download.source")
    named = cfg["classes"]
    if named is None:
        return found[0], found[1]
    if sorted(named) != found:
        raise UserError(f"split.classes {named!r} must name the data's two classes, {found[0]!r} and {found[1]!r}, "
                        "in either order (negative first), or be null")
    return named[0], named[1]


def deduplicate(manifest: pd.DataFrame, classes: tuple[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one file per content hash, deterministically.

    Within a class the lowest id is kept; a hash found under both labels is dropped
    entirely (its label is ambiguous). Returns (kept, dropped with reasons).
    """
    manifest = manifest.sort_values(["label", "id"])
    labels_per_hash = manifest.groupby("sha256")["label"].nunique()
    ambiguous = manifest["sha256"].map(labels_per_hash) > 1
    repeat = manifest.duplicated("sha256", keep="first") & ~ambiguous
    dropped = pd.concat(
        [
            manifest[ambiguous].assign(reason=f"same bytes filed as both {classes[0]} and {classes[1]}"),
            manifest[repeat].assign(reason="same bytes as a lower id of the same class"),
        ]
    )
    return manifest[~ambiguous & ~repeat], dropped


def class_order(rows: pd.DataFrame, classes: tuple[str, str], label: str, cfg: dict) -> pd.DataFrame:
    """The rows of one class in the order the split takes them: by id, or seeded shuffle."""
    rows = rows[rows["label"] == label].sort_values("id")
    if cfg["order"] == "shuffle":
        rows = rows.sample(frac=1.0, random_state=(cfg["seed"] + classes.index(label)) % 2**32)  # stays a 32-bit seed
    return rows


KEYS = {"train": "train_per_class", "validation": "val_per_class", "test": "test_per_class"}


def per_class(cfg: dict, name: str, available: int) -> int:
    """Images of one class in split `name`: the count, or the fraction of `available`."""
    value = cfg[KEYS[name]]
    return value if isinstance(value, int) else math.floor(value * available + 1e-9)


def source_splits(manifest: pd.DataFrame) -> set[str]:
    return set(manifest["source_split"]) if "source_split" in manifest else set()


def plan(manifest: pd.DataFrame, classes: tuple[str, str], cfg: dict, rejected: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, extended): the manifest rows of train, validation and test with a `split`
    column, and the extended test set, the leftovers in the split's order, at most
    `extended_per_class` per class."""
    given = source_splits(manifest)
    # Where each split comes from: the pool it is drawn from, and whether it takes it whole.
    if not given:
        drawn, whole = ["train", "validation", "test"], {}
    else:
        whole = {"test": "test" if "test" in given else "val"}
        if "test" in given and "val" in given:
            whole["validation"] = "val"
        drawn = [name for name in SPLITS if name not in whole]
    parts, leftovers, sizes = [], [], {}
    for label in classes:
        pool = manifest[manifest["source_split"] == "train"] if given else manifest
        rows = class_order(pool, classes, label, cfg)
        sizes[label] = {name: per_class(cfg, name, len(rows)) for name in drawn}
        need(sizes[label], label, len(rows), manifest, classes, cfg, given, rejected)
        bounds = np.cumsum([0, *sizes[label].values()])
        for name, lo, hi in zip(drawn, bounds[:-1], bounds[1:]):
            parts.append(rows.iloc[lo:hi].assign(split=name))
        leftovers.append(rows.iloc[bounds[-1]:bounds[-1] + cfg["extended_per_class"]])
        for name, folder in whole.items():
            taken = class_order(manifest[manifest["source_split"] == folder], classes, label, cfg)
            if taken.empty:
                raise UserError(f"split: the source's {folder}/ folder has no usable {label} images; "
                                f"it is the {name} split, which needs some")
            parts.append(taken.assign(split=name))
    return pd.concat(parts).reset_index(drop=True), pd.concat(leftovers).reset_index(drop=True)


def need(sizes: dict[str, int], label: str, available: int, manifest: pd.DataFrame, classes: tuple[str, str],
         cfg: dict, given: set[str], rejected: int) -> None:
    """One line when a class cannot fill its splits: the counts per class, and the way out."""
    pool = "of the source's train/ folder " if given else ""
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise UserError(f"split.{KEYS[empty[0]]} {cfg[KEYS[empty[0]]]} of the {available} {label} images {pool}"
                        "is 0 images; every split needs at least one per class: use a larger fraction")
    if sum(sizes.values()) <= available:
        return
    rows = manifest[manifest["source_split"] == "train"] if given else manifest
    counts = ", ".join(f"{c} {int((rows['label'] == c).sum())}" for c in classes)
    asked = " + ".join(f"{n} {name}" for name, n in sizes.items())
    raise UserError(f"split needs {sum(sizes.values())} {label} images {pool}({asked}), {available} valid found "
                    f"(per class: {counts}); {rejected} files rejected, see {RAW_DIR}/rejected.csv; "
                    "fewer per class, or fractions of each class (e.g. split.train_per_class: 0.5), fit any size")


def decode_all(paths: list[Path], size: int) -> np.ndarray:
    if not paths:  # np.stack of nothing fails; an empty split keeps its image shape
        return np.zeros((0, size, size, 3), np.uint8)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        return np.stack(list(pool.map(partial(decode_resized, size=size), paths, chunksize=32)))


def save_arrays(rows: pd.DataFrame, classes: tuple[str, str], size: int, path: Path) -> None:
    """The images of `rows`, decoded and resized, with their labels (1: the positive class)
    and file names."""
    images = decode_all([RAW_DIR / "images" / f for f in rows["file"]], size)
    labels = (rows["label"] == classes[1]).to_numpy(np.uint8)
    save_npz(path, images=images, labels=labels, files=rows["file"].to_numpy(str))


def write_split(index: pd.DataFrame, classes: tuple[str, str], size: int, out: Path) -> None:
    """Folders per split and class (copies of the raw bytes) and one .npz per split."""
    (out / "arrays").mkdir()
    for name in SPLITS:
        rows = index[index["split"] == name]
        for label in classes:
            (out / "images" / name / class_folder(label)).mkdir(parents=True)
        sources = [RAW_DIR / "images" / f for f in rows["file"]]
        for src, label in zip(sources, rows["label"]):
            shutil.copyfile(src, out / "images" / name / class_folder(label) / src.name)
        save_arrays(rows, classes, size, out / "arrays" / f"{name}.npz")
    write_csv(out / "index.csv", index[["file", "label", "id", "split", "sha256", "width", "height"]])


def main() -> None:
    cfg = load_params("split")["split"]
    # A SIGKILLed run leaves its temporaries (data/.split.XXXX, ...) beside the outputs.
    removed = remove_leftovers(SPLIT_DIR, DATA_PLOTS_DIR, RECORD_FILE)
    if removed:
        print(f"split: removed what an interrupted run left: {', '.join(map(str, removed))}")
    try:
        # A class named 1, NA or null stays a name, not a number or a missing value.
        manifest = pd.read_csv(RAW_DIR / "manifest.csv", dtype={"label": str}, keep_default_na=False)
        rejected = len(pd.read_csv(RAW_DIR / "rejected.csv"))
    except FileNotFoundError as e:
        raise UserError(f"{e.filename} not found: run the download stage first (dvc repro download)") from None
    classes = study_classes(manifest, cfg)
    kept, dropped = deduplicate(manifest, classes)
    index, extra = plan(kept, classes, cfg, rejected)
    missing = [f for f in pd.concat([index["file"], extra["file"]]) if not (RAW_DIR / "images" / f).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} images listed in {RAW_DIR}/manifest.csv are missing from {RAW_DIR}/images "
            f"(first: {missing[0]}): rerun the download stage (dvc repro download --force)"
        )
    with atomic_dir(SPLIT_DIR) as out:
        write_split(index, classes, cfg["image_size"], out)
        save_arrays(extra, classes, cfg["image_size"], out / "arrays" / "extended.npz")
        write_csv(out / "duplicates.csv", dropped[["file", "label", "id", "sha256", "reason"]])
        write_json(out / CLASSES_FILE.relative_to(SPLIT_DIR), classes_record(classes))

    from stages.figures.data import data_figures  # matplotlib: only when needed

    data_figures(index, classes, SPLIT_DIR, DATA_PLOTS_DIR, {c: class_folder(c) for c in classes})
    counts = pd.concat([index, extra.assign(split="extended")]).groupby(["split", "label"]).size()
    write_json(
        RECORD_FILE,
        {
            **{s: {c: int(counts.get((s, c), 0)) for c in classes} for s in (*SPLITS, "extended")},
            "duplicates_dropped": int(len(dropped)),
            "unused_images": int(len(kept) - len(index)),  # not in train, validation or test
        },
    )
    print(f"split: {len(index)} images in {SPLIT_DIR}, {len(extra)} in the extended test set; "
          f"{len(dropped)} duplicates dropped")


if __name__ == "__main__":
    run_stage(main, clean_up_on_sigterm=True)

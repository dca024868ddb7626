"""Stage `split`: Chollet's train/validation/test split of data/raw, browsable folders for
`keras.utils.image_dataset_from_directory`, and every image decoded and resized once into
uint8 arrays that all training stages read (no JPEG is decoded per epoch).

It also writes the extended test set, data/split/arrays/extended.npz: the usable images
left over after the three splits (after the duplicate rule), at most
`split.extended_per_class` per class, taken in the split's order (the next ids, or the
next of the seeded shuffle). Only `evaluate` reads it, to score the models on more
images than the test split holds; it is never used for any choice. It is written even
when empty (shape (0, S, S, 3)), so the path `evaluate` depends on always exists."""

from __future__ import annotations

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
from stages.lib.study import CLASSES, DATA_PLOTS_DIR, RAW_DIR, SPLIT_DIR, SPLITS, metrics_file

METRICS_FILE = metrics_file("split")


def deduplicate(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
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
            manifest[ambiguous].assign(reason="same bytes filed as both cat and dog"),
            manifest[repeat].assign(reason="same bytes as a lower id of the same class"),
        ]
    )
    return manifest[~ambiguous & ~repeat], dropped


def class_order(manifest: pd.DataFrame, label: str, cfg: dict) -> pd.DataFrame:
    """The rows of one class in the order the split takes them: by id, or seeded shuffle."""
    rows = manifest[manifest["label"] == label].sort_values("id")
    if cfg["order"] == "shuffle":
        rows = rows.sample(frac=1.0, random_state=cfg["seed"] + CLASSES.index(label))
    return rows


def split_sizes(cfg: dict) -> dict[str, int]:
    return {"train": cfg["train_per_class"], "validation": cfg["val_per_class"], "test": cfg["test_per_class"]}


def assign(manifest: pd.DataFrame, cfg: dict, rejected: int) -> pd.DataFrame:
    """The index: manifest rows with a `split` column, per class in id (or seeded) order."""
    sizes = split_sizes(cfg)
    needed = sum(sizes.values())
    parts = []
    for label in CLASSES:
        rows = class_order(manifest, label, cfg)
        if len(rows) < needed:
            raise UserError(
                f"split needs {needed} {label}s ({sizes['train']} train + {sizes['validation']} validation "
                f"+ {sizes['test']} test), {len(rows)} valid found; {rejected} files rejected, "
                f"see {RAW_DIR}/rejected.csv"
            )
        bounds = np.cumsum([0, *sizes.values()])
        for name, lo, hi in zip(sizes, bounds[:-1], bounds[1:]):
            parts.append(rows.iloc[lo:hi].assign(split=name))
    return pd.concat(parts).reset_index(drop=True)


def extended(manifest: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The extended test set: per class the rows of `manifest` (deduplicated) that follow
    the train, validation and test images in the split's order, at most
    `extended_per_class` of them (0: none)."""
    start = sum(split_sizes(cfg).values())
    cap = cfg["extended_per_class"]
    parts = [class_order(manifest, label, cfg).iloc[start:start + cap] for label in CLASSES]
    return pd.concat(parts).reset_index(drop=True)


def decode_all(paths: list[Path], size: int) -> np.ndarray:
    if not paths:  # np.stack of nothing fails; an empty split keeps its image shape
        return np.zeros((0, size, size, 3), np.uint8)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        return np.stack(list(pool.map(partial(decode_resized, size=size), paths, chunksize=32)))


def save_arrays(rows: pd.DataFrame, size: int, path: Path) -> None:
    """The images of `rows`, decoded and resized, with their labels and file names."""
    images = decode_all([RAW_DIR / "images" / f for f in rows["file"]], size)
    labels = (rows["label"] == "dog").to_numpy(np.uint8)
    save_npz(path, images=images, labels=labels, files=rows["file"].to_numpy(str))


def write_split(index: pd.DataFrame, size: int, out: Path) -> None:
    """Folders per split and class (copies of the raw bytes) and one .npz per split."""
    (out / "arrays").mkdir()
    for name in SPLITS:
        rows = index[index["split"] == name]
        for label in CLASSES:
            (out / "images" / name / f"{label}s").mkdir(parents=True)
        sources = [RAW_DIR / "images" / f for f in rows["file"]]
        for src, label in zip(sources, rows["label"]):
            shutil.copyfile(src, out / "images" / name / f"{label}s" / src.name)
        save_arrays(rows, size, out / "arrays" / f"{name}.npz")
    write_csv(out / "index.csv", index[["file", "label", "id", "split", "sha256", "width", "height"]])


def main() -> None:
    cfg = load_params("split")["split"]
    # A SIGKILLed run leaves its temporaries (data/.split.XXXX, ...) beside the outputs.
    removed = remove_leftovers(SPLIT_DIR, DATA_PLOTS_DIR, METRICS_FILE)
    if removed:
        print(f"split: removed what an interrupted run left: {', '.join(map(str, removed))}")
    try:
        manifest = pd.read_csv(RAW_DIR / "manifest.csv")
        rejected = len(pd.read_csv(RAW_DIR / "rejected.csv"))
    except FileNotFoundError as e:
        raise UserError(f"{e.filename} not found: run the download stage first (dvc repro download)") from None
    kept, dropped = deduplicate(manifest)
    index = assign(kept, cfg, rejected)
    extra = extended(kept, cfg)
    missing = [f for f in pd.concat([index["file"], extra["file"]]) if not (RAW_DIR / "images" / f).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} images listed in {RAW_DIR}/manifest.csv are missing from {RAW_DIR}/images "
            f"(first: {missing[0]}): rerun the download stage (dvc repro download --force)"
        )
    with atomic_dir(SPLIT_DIR) as out:
        write_split(index, cfg["image_size"], out)
        save_arrays(extra, cfg["image_size"], out / "arrays" / "extended.npz")
        write_csv(out / "duplicates.csv", dropped[["file", "label", "id", "sha256", "reason"]])

    from stages.figures.data import data_figures  # matplotlib: only when needed

    data_figures(index, SPLIT_DIR, DATA_PLOTS_DIR)
    counts = index.groupby(["split", "label"]).size()
    write_json(
        METRICS_FILE,
        {
            **{f"{s}_{c}s": int(counts.get((s, c), 0)) for s in SPLITS for c in CLASSES},
            "duplicates_dropped": int(len(dropped)),
            "unused_images": int(len(kept) - len(index)),  # not in train, validation or test
            "extended_images": int(len(extra)),  # of those, in the extended test set
        },
    )
    print(f"split: {len(index)} images in {SPLIT_DIR}, {len(extra)} in the extended test set; "
          f"{len(dropped)} duplicates dropped")


if __name__ == "__main__":
    run_stage(main, clean_up_on_sigterm=True)

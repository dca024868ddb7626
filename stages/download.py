"""Stage `download`: fetch the images and the VGG16 weights, check every image, and write
`data/raw/` (normalised names, bytes unchanged), its manifest and rejected list, and
`data/weights/vgg16_notop.weights.h5`. The only stage that may touch the network.

Layouts, read in this order:
- Kaggle names (`cat.12.jpg`) or PetImages folders (`Cat/12.jpg`) anywhere in the tree: the
  labels are cat and dog, the ids come from the names (exactly as before other classes).
- Otherwise, after descending through a lone wrapper folder (`hymenoptera_data/`): two class
  folders with any names (label = folder name), or split folders `train/`, `val/` or
  `validation/` and optionally `test/`, each holding the same two class folders (the manifest
  then records each image's `source_split`). Files may have any name and extension, or none:
  content decides. Ids are each class's rank by relative path, so `split.order: id` is
  deterministic; raw files are named `<stem>.<id><ext>` with a stem safe on any file system
  (images.file_stems). Three classes, one, class folders that differ between splits, or split
  folders beside other folders stop the stage with one line.

`download.source` may list several sources: they are tried in order and the first that
yields usable images wins. Work happens in `data/.download-*`, removed on success, failure,
Ctrl-C and SIGTERM; a rerun removes what a killed (SIGKILL) run left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from stages.lib.params import UserError, load_params, printable, run_stage
from stages.lib.images import FORMATS, are_cat_and_dog_folders, check_image, file_stems, is_kaggle_name, parse_name, sha256_file
from stages.lib.outputs import atomic_dir, atomic_path, remove_leftovers, write_csv, write_json
from stages.lib.sources import OFFLINE_HINT, convert_vgg16_weights, materialize_images, materialize_weights
from stages.lib.study import RAW_DIR, WEIGHTS_FILE

# Images kept per class, files rejected, bytes: inside data/raw (a record that travels with the
# images it counts, no DVC metric; an uncached outs: would cost this stage its run-cache, and a
# rerun downloads the images again).
RECORD_FILE = RAW_DIR / "summary.json"
WORK_PREFIX = ".download-"  # data/.download-XXXX: this stage's temporary folder
SYSTEM_FILES = {"Thumbs.db", ".DS_Store", "desktop.ini"}
# A source's own split folders (lower-cased) and the split each one is read as by `split`:
# val/ is "val" whatever `split` later makes of it (test, or validation beside a test/).
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
COLUMNS = ["path", "file", "label", "id", "sha256", "format", "mode", "width", "height", "bytes"]


def inspect(path: Path) -> dict:
    """One row of the manifest or of the rejected list for `path`."""
    if path.name in SYSTEM_FILES or path.name.startswith("._"):
        return {"path": str(path), "reason": "system file, not an image"}
    labelled = parse_name(path)
    if labelled is None:
        return {"path": str(path), "reason": "name is neither cat.N.jpg / dog.N.jpg nor Cat/N.jpg / Dog/N.jpg"}
    info, reason = check_image(path)
    if reason:
        return {"path": str(path), "reason": reason}
    return {
        "path": str(path),
        "file": f"{labelled.label}.{labelled.id}{FORMATS[info.format]}",
        "label": labelled.label,
        "id": labelled.id,
        "sha256": sha256_file(path),
        "format": info.format,
        "mode": info.mode,
        "width": info.width,
        "height": info.height,
        "bytes": path.stat().st_size,
    }


def inspect_labelled(path: Path) -> dict:
    """inspect() for a file whose label its class folder gives: only the content is checked."""
    if path.name in SYSTEM_FILES or path.name.startswith("._"):
        return {"path": str(path), "reason": "system file, not an image"}
    info, reason = check_image(path)
    if reason:
        return {"path": str(path), "reason": reason}
    return {"path": str(path), "sha256": sha256_file(path), "format": info.format, "mode": info.mode,
            "width": info.width, "height": info.height, "bytes": path.stat().st_size}


def list_files(root: Path) -> tuple[list[Path], list[dict]]:
    """The files under root to inspect, and rejected rows for what cannot be one.

    Symbolic links to files are followed wherever they point: the folder is the user's
    own (archives cannot hold links, see sources.check_zip), linking a curated set into a
    photo library is common, and the bytes are copied into data/raw, not the link. Links to
    folders are not followed (loops, and a whole other tree joining the data unseen), and
    broken links and non-regular files (a FIFO would block the reader) are listed.
    """
    files, rejected = [], []
    for folder, dirs, names in os.walk(root):  # followlinks=False: a linked folder is not entered
        folder = Path(folder)
        dirs[:] = sorted(d for d in dirs if d != "__MACOSX")  # macOS zip resource forks
        for name in dirs:
            if (folder / name).is_symlink():
                rejected.append({"path": str(folder / name), "reason": "symbolic link to a folder, not followed"})
        for name in sorted(names):
            path = folder / name
            if path.is_symlink() and not path.exists():
                rejected.append({"path": str(path), "reason": f"broken symbolic link (to {os.readlink(path)})"})
            elif path.is_file():
                files.append(path)
            else:
                rejected.append({"path": str(path), "reason": "not a regular file (a pipe, socket or device)"})
    return sorted(files), rejected  # by path: which of two files for one id is kept must not depend on the walk


def scan(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file under root; return (accepted, rejected) tables."""
    files, unreadable = list_files(root)
    # Kaggle's names (cat.12.jpg, anywhere) or PetImages' Cat/ and Dog/ folders: the labels and
    # ids come from the names, exactly as the study always read them. Any other two folders
    # are classes named by the folders, even when their files are numbered (dog/1.jpg beside
    # wolf/1.jpg is not PetImages).
    if any(is_kaggle_name(f.name) for f in files) or are_cat_and_dog_folders(subfolders(image_root(root))):
        manifest, rejected = scan_named(files, unreadable)
    else:
        manifest, rejected = scan_class_folders(root, files, unreadable)
    rejected = pd.DataFrame(rejected, columns=["path", "reason"]).sort_values("path")
    for table in (manifest, rejected):
        table["path"] = table["path"].map(lambda p: os.path.relpath(p, root))
    return manifest, rejected


def scan_named(files: list[Path], rejected: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """Kaggle and PetImages names: label and id from each name."""
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(inspect, files, chunksize=64))
    accepted = [r for r in rows if "reason" not in r]
    rejected = rejected + [r for r in rows if "reason" in r]
    # Two files for one (label, id), e.g. cat.1.jpg beside Cat/1.jpg: keep the first by path.
    seen: set[tuple[str, int]] = set()
    unique = []
    for r in accepted:
        key = (r["label"], r["id"])
        if key in seen:
            rejected.append({"path": r["path"], "reason": f"second file for {r['label']} id {r['id']}"})
        else:
            seen.add(key)
            unique.append(r)
    manifest = pd.DataFrame(unique, columns=COLUMNS)
    return manifest.sort_values(["label", "id"]).reset_index(drop=True), rejected


def subfolders(folder: Path) -> list[str]:
    """The folders in `folder` that can be a class or a split (hidden ones and macOS's
    __MACOSX cannot), sorted."""
    return sorted(d.name for d in folder.iterdir()
                  if d.is_dir() and not d.is_symlink() and not d.name.startswith(".") and d.name != "__MACOSX")


def image_root(root: Path) -> Path:
    """root, or the folder inside a chain of lone wrapper folders (a zip often holds one).
    A lone folder without folders in it is a class (one too few), not a wrapper."""
    while (len(folders := subfolders(root)) == 1 and folders[0].lower() not in SPLIT_FOLDERS
           and subfolders(root / folders[0])):
        root = root / folders[0]
    return root


def class_layout(root: Path, source: Path) -> dict[Path, tuple[str, str | None]]:
    """{class folder: (label, source split or None)}; a UserError names what cannot be read."""
    folders = subfolders(root)
    splits = [f for f in folders if f.lower() in SPLIT_FOLDERS]
    where = f"in {source}" if root == source else f"in {source} (under {root.relative_to(source)})"
    if not folders:  # no folders at all: every file is rejected and the source yields no images
        return {}
    if not splits:
        two_classes(folders, where)
        return {root / f: (unicodedata.normalize("NFC", f), None) for f in folders}
    others = [f for f in folders if f not in splits]
    if others:
        raise UserError(f"download.source: split folders ({', '.join(splits)}) beside other folders "
                        f"({', '.join(others)}) {where}: use either class folders or split folders holding them")
    kinds = [SPLIT_FOLDERS[f.lower()] for f in splits]
    if len(set(kinds)) < len(kinds):
        raise UserError(f"download.source: split folders {', '.join(splits)} {where} name one split twice; keep one of them")
    if "train" not in kinds or len(kinds) < 2:
        raise UserError(f"download.source: split folders {', '.join(splits)} {where}: a source's own split needs "
                        "train/ and val/ (or validation/ or test/) beside it")
    classes = {f: subfolders(root / f) for f in splits}
    if len({tuple(c) for c in classes.values()}) > 1:
        found = "; ".join(f"{f}/ has {', '.join(c) or 'none'}" for f, c in classes.items())
        raise UserError(f"download.source: the class folders differ between splits {where}: {found}")
    two_classes(classes[splits[0]], where)
    return {root / s / f: (unicodedata.normalize("NFC", f), SPLIT_FOLDERS[s.lower()]) for s in splits for f in classes[s]}


def two_classes(folders: list[str], where: str) -> None:
    for name in folders:
        if printable(name) != name:  # its label would be written to CSV, JSON and figures
            raise UserError(f"download.source: class folder name {printable(name)} {printable(where)} is not UTF-8: "
                            "rename it (its name is the class name)")
    if len(folders) != 2:
        found = f"{len(folders)} class folder{'s' * (len(folders) > 1)} ({', '.join(folders)})"
        raise UserError(f"download.source: found {found} {where}, and no Kaggle (cat.N.jpg) or PetImages "
                        "(Cat/N.jpg) names; the study needs exactly two classes, one folder each")


def scan_class_folders(source: Path, files: list[Path], rejected: list[dict]) -> tuple[pd.DataFrame, list[dict]]:
    """Class folders (perhaps inside split folders): label from the folder, id by path."""
    layout = class_layout(image_root(source), source)
    labelled, where = [], []
    for f in files:
        found = next(((folder, *v) for folder, v in layout.items() if f.is_relative_to(folder)), None)
        if found is None:
            reason = ("outside the class folders" if layout else
                      "name is neither cat.N.jpg / dog.N.jpg nor Cat/N.jpg / Dog/N.jpg, and not in a class folder")
            rejected.append({"path": str(f), "reason": reason})
        else:
            labelled.append(f)
            where.append(found)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(inspect_labelled, labelled, chunksize=64))
    stems = file_stems({label for label, _ in layout.values()})
    accepted = []
    for row, (_, label, split) in zip(rows, where):
        if "reason" in row:
            rejected.append(row)
        else:
            accepted.append({**row, "label": label, **({"source_split": split} if split else {}),
                             "rank_key": os.path.relpath(row["path"], source)})
    columns = COLUMNS + (["source_split"] if any(split for _, split in layout.values()) else [])
    manifest = pd.DataFrame(accepted, columns=columns + ["rank_key"])
    manifest = manifest.sort_values(["label", "rank_key"]).reset_index(drop=True)
    manifest["id"] = manifest.groupby("label").cumcount()
    manifest["file"] = [f"{stems[label]}.{i}{FORMATS[fmt]}" for label, i, fmt in
                        zip(manifest["label"], manifest["id"], manifest["format"])]
    return manifest[columns], rejected


def remove_leftovers_of_killed_runs() -> None:
    """A SIGKILL leaves no chance to clean up: the next run does it."""
    removed = remove_leftovers(RAW_DIR, WEIGHTS_FILE)
    for work in sorted(RAW_DIR.parent.glob(f"{WORK_PREFIX}*")):
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    if removed:
        print(f"download: removed what an interrupted run left: {', '.join(map(str, removed))}")


def first_usable_source(sources: list[str], work: Path) -> tuple[str, Path, pd.DataFrame, pd.DataFrame]:
    """(source, image folder, manifest, rejected) of the first source that yields images."""
    failures = []
    for n, source in enumerate(sources, 1):
        try:
            image_root = materialize_images(source, work / f"source-{n}")
            manifest, rejected = scan(image_root)
            if manifest.empty:
                raise UserError(
                    f"download.source: no usable images found in {source} ({len(rejected)} files rejected)"
                )
            if len(sources) > 1:
                print(f"download: using source {n} of {len(sources)}: {source}")
            return source, image_root, manifest, rejected
        except UserError as e:
            if len(sources) == 1:
                raise
            problem = str(e).replace(f" {OFFLINE_HINT}", "")
            failures.append(f"({n}) {problem}")
            then = "; trying the next" if n < len(sources) else ""
            print(f"download: source {n} of {len(sources)} failed: {problem}{then}", flush=True)
            shutil.rmtree(work / f"source-{n}", ignore_errors=True)
    raise UserError(f"download.source: none of the {len(sources)} sources worked: {' '.join(failures)}")


def main() -> None:
    cfg = load_params("download")["download"]
    sources = cfg["source"] if isinstance(cfg["source"], list) else [cfg["source"]]
    remove_leftovers_of_killed_runs()
    RAW_DIR.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RAW_DIR.parent, prefix=WORK_PREFIX) as work:
        work = Path(work)
        _, image_root, manifest, rejected = first_usable_source(sources, work)
        with atomic_dir(RAW_DIR) as out:
            (out / "images").mkdir()
            for src, name in zip(manifest["path"], manifest["file"]):
                shutil.copyfile(image_root / src, out / "images" / name)
            # A file name that is not UTF-8 (a Latin-1 byte) is kept, and listed with the byte escaped.
            write_csv(out / "manifest.csv", manifest.rename(columns={"path": "source_path"})
                      .assign(source_path=lambda t: t["source_path"].map(printable)))
            write_csv(out / "rejected.csv", rejected.assign(path=rejected["path"].map(printable),
                                                            reason=rejected["reason"].map(printable)))
            counts = manifest["label"].value_counts()
            write_json(out / RECORD_FILE.name, {"images": {label: int(counts[label]) for label in sorted(counts.index)},
                                                "rejected": int(len(rejected)), "bytes": int(manifest["bytes"].sum())})

        weights_src = materialize_weights(cfg["vgg16_weights"], work)
        with atomic_path(WEIGHTS_FILE, suffix=".weights.h5") as tmp:
            convert_vgg16_weights(weights_src, tmp)

    print(f"download: {len(manifest)} images kept, {len(rejected)} rejected (see {RAW_DIR}/rejected.csv)")
    if len(rejected):
        print(printable(rejected.groupby("reason").size().to_string()))


if __name__ == "__main__":
    run_stage(main, clean_up_on_sigterm=True)

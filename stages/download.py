"""Stage `download`: fetch the images and the VGG16 weights, check every image, and write
`data/raw/` (normalised names, bytes unchanged), its manifest and rejected list, and
`data/weights/vgg16_notop.weights.h5`. The only stage that may touch the network.

`download.source` may list several sources: they are tried in order and the first that
yields usable images wins. Work happens in `data/.download-*`, removed on success, failure,
Ctrl-C and SIGTERM; a rerun removes what a killed (SIGKILL) run left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from stages.lib.params import UserError, load_params, run_stage
from stages.lib.images import FORMATS, check_image, parse_name, sha256_file
from stages.lib.outputs import atomic_dir, atomic_path, remove_leftovers, write_csv, write_json
from stages.lib.sources import OFFLINE_HINT, convert_vgg16_weights, materialize_images, materialize_weights
from stages.lib.study import RAW_DIR, WEIGHTS_FILE, metrics_file

METRICS_FILE = metrics_file("download")
WORK_PREFIX = ".download-"  # data/.download-XXXX: this stage's temporary folder
SYSTEM_FILES = {"Thumbs.db", ".DS_Store", "desktop.ini"}


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
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(inspect, files, chunksize=64))
    accepted = [r for r in rows if "reason" not in r]
    rejected = unreadable + [r for r in rows if "reason" in r]
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
    manifest = pd.DataFrame(unique, columns=["path", "file", "label", "id", "sha256", "format", "mode", "width", "height", "bytes"])
    manifest = manifest.sort_values(["label", "id"]).reset_index(drop=True)
    rejected = pd.DataFrame(rejected, columns=["path", "reason"]).sort_values("path")
    for table in (manifest, rejected):
        table["path"] = table["path"].map(lambda p: os.path.relpath(p, root))
    return manifest, rejected


def remove_leftovers_of_killed_runs() -> None:
    """A SIGKILL leaves no chance to clean up: the next run does it."""
    removed = remove_leftovers(RAW_DIR, WEIGHTS_FILE, METRICS_FILE)
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
                    f"download.source: no usable cat/dog images found in {source} ({len(rejected)} files rejected)"
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
            write_csv(out / "manifest.csv", manifest.rename(columns={"path": "source_path"}))
            write_csv(out / "rejected.csv", rejected)

        weights_src = materialize_weights(cfg["vgg16_weights"], work)
        with atomic_path(WEIGHTS_FILE, suffix=".weights.h5") as tmp:
            convert_vgg16_weights(weights_src, tmp)

    counts = manifest["label"].value_counts()
    write_json(
        METRICS_FILE,
        {
            "images": int(len(manifest)),
            "cats": int(counts.get("cat", 0)),
            "dogs": int(counts.get("dog", 0)),
            "rejected": int(len(rejected)),
            "bytes": int(manifest["bytes"].sum()),
        },
    )
    print(f"download: {len(manifest)} images kept, {len(rejected)} rejected (see {RAW_DIR}/rejected.csv)")
    if len(rejected):
        print(rejected.groupby("reason").size().to_string())


if __name__ == "__main__":
    run_stage(main, clean_up_on_sigterm=True)

"""Stage `download`: fetch the images and the VGG16 weights, check every image, and write
`data/raw/` (normalised names, bytes unchanged), its manifest and rejected list, and
`data/weights/vgg16_notop.weights.h5`. The only stage that may touch the network."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from stages import params as P
from stages.images import FORMATS, check_image, parse_name, sha256_file
from stages.outputs import atomic_dir, atomic_path, write_csv, write_json
from stages.sources import materialize_images, materialize_weights

RAW_DIR = Path("data/raw")
WEIGHTS_FILE = Path("data/weights/vgg16_notop.weights.h5")
METRICS_FILE = Path("metrics/download.json")
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


def scan(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file under root; return (accepted, rejected) tables."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__MACOSX" not in p.parts)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(inspect, files, chunksize=64))
    accepted = [r for r in rows if "reason" not in r]
    rejected = [r for r in rows if "reason" in r]
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


def main() -> None:
    cfg = P.load("download")["download"]
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="data", prefix=".download-") as work:
        work = Path(work)
        image_root = materialize_images(cfg["source"], work)
        manifest, rejected = scan(image_root)
        if manifest.empty:
            raise P.UserError(
                f"download.source: no usable cat/dog images found in {cfg['source']} "
                f"({len(rejected)} files rejected)"
            )
        with atomic_dir(RAW_DIR) as out:
            (out / "images").mkdir()
            for src, name in zip(manifest["path"], manifest["file"]):
                shutil.copyfile(image_root / src, out / "images" / name)
            write_csv(out / "manifest.csv", manifest.rename(columns={"path": "source_path"}))
            write_csv(out / "rejected.csv", rejected)

        from stages.models import convert_vgg16_weights  # imports TensorFlow: only now

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
    P.run_stage(main)

"""Which of the study's two classes is it? The trained models on your own photos.

    python -m stages.tools.predict PATH... [--model NAME] [--json]

PATH: image files, or folders searched recursively for image files by name (.jpg, .png,
...; hidden files such as macOS `._x.jpg` are skipped). One line per file on stdout:

    photos/tom.jpg	0.0213	cat
    photos/notes.txt	-	error: not an image (Pillow cannot identify it)

tab-separated: the file, P(positive class) and the label (the positive class when
P >= 0.5, as `evaluate` counts, else the negative one), or `-` and why the file could not
be read. The class names are the study's, from data/split/classes.json (negative, positive;
above: cat, dog), and stderr names the column, e.g. `P(dog)`. With --json, one JSON object
per line (JSON Lines) with the keys, always all and in this order, file, model,
positive_class, p_positive, label, error (null where not applicable).

Each image is decoded exactly as the pipeline decodes its data (stages/lib/images.py: EXIF
rotation, alpha on white, CMYK and 16-bit to 8-bit RGB, resized to params.yaml
`split.image_size`), so a photo gets the input its model was trained and tested on.

The default model is the one with the best validation accuracy in metrics/<stage>.json
(at the restored epoch when the stage kept its best epoch): chosen on validation, never on
the test split, like any other choice in the study. Run from the project root, after
`dvc repro` or `dvc pull`; nothing is downloaded.

Exit code: 0 when every file was read, 1 when any was not, 2 for a usage error (no trained
models, unknown --model, no data/split/classes.json, bad params.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from stages.lib.params import UserError, load_params, printable, run_stage
from stages.lib.images import FORMATS, check_image, decode_resized
from stages.lib.metrics import predicted_labels
from stages.lib.study import CLASSES_FILE, MODEL_NAMES, THRESHOLD, metrics_file, model_file, read_classes

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # http://, https://, s3://...: not a local file
CHUNK = 64  # images decoded and predicted at a time: bounded memory for large folders
# File names a folder search takes: those Pillow reads in a format the pipeline accepts.
IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS)
NOT_FOUND_HINT = "run `dvc repro` or `dvc pull`"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.tools.predict",
        description="P(positive class) of image files with one of the study's trained models.",
    )
    # str, not Path: Path("https://x/a.jpg") would become https:/x/a.jpg and hide that it is a URL
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    parser.add_argument("--model", help=f"one of {', '.join(MODEL_NAMES)} (default: best validation accuracy)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- which model


def validation_accuracy(stage: str) -> float | None:
    """The stage's validation accuracy of the weights it saved, or None without metrics: its
    DVC metric `val_accuracy`, of the epoch it kept (training.kept_metrics)."""
    path = metrics_file(stage)
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["val_accuracy"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} has no readable validation accuracy ({type(e).__name__}: {e}); {NOT_FOUND_HINT}") from None


def best_on_validation(scored: list[tuple[float, str]]) -> tuple[float, str]:
    """The (validation accuracy, model name) to use by default among `scored`, in
    MODEL_NAMES order: the highest accuracy; max() keeps the first of equals, so ties go to
    the earlier, simpler model."""
    return max(scored, key=lambda pair: pair[0])


def choose_model(requested: str | None) -> tuple[str, str]:
    """(model name, why it was chosen), or UserError when there is none to use."""
    if requested is not None:
        if requested not in MODEL_NAMES:
            raise UserError(f"--model {requested!r} is not one of the study's models: {', '.join(MODEL_NAMES)}")
        if not model_file(requested).is_file():
            raise UserError(f"{model_file(requested)} not found: {NOT_FOUND_HINT}")
        return requested, "chosen with --model"
    present = [name for name in MODEL_NAMES if model_file(name).is_file()]
    if not present:
        raise UserError(f"{model_file(MODEL_NAMES[-1])} not found (nor any other trained model): {NOT_FOUND_HINT}")
    scored = [(accuracy, name) for name in present if (accuracy := validation_accuracy(name)) is not None]
    if not scored:
        raise UserError(f"{metrics_file(present[0])} not found, so no model can be chosen by validation accuracy: "
                        f"{NOT_FOUND_HINT}, or name one with --model")
    accuracy, name = best_on_validation(scored)
    return name, f"best validation accuracy {accuracy:.3f} ({metrics_file(name)}); --model to choose another"


def class_names() -> tuple[str, str]:
    """(negative, positive): the study's classes, as `split` wrote them."""
    try:
        negative, positive = read_classes(CLASSES_FILE)
    except FileNotFoundError:
        raise UserError(f"{CLASSES_FILE} not found (it names the two classes): run `dvc pull` or "
                        "`dvc repro split`") from None
    return negative, positive


# ---------------------------------------------------------------- which files


def image_files(paths: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(files to predict, files skipped in folders as not images by name, special files
    skipped in folders: pipes, sockets, devices, links to them). A named file is always
    tried, so it gets a line even if it is not an image; a folder contributes its image
    files by name."""
    files, skipped, special = [], [], []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in found.relative_to(path).parts) or found.is_dir():
                continue
            if not found.is_file():  # never opened: reading a FIFO blocks, /dev/zero never ends
                special.append(found)
            else:
                (files if found.suffix.lower() in IMAGE_SUFFIXES else skipped).append(found)
    return files, skipped, special


def read_image(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    """(image (size, size, 3) uint8, None) or (None, why it cannot be used)."""
    if not path.exists():
        return None, "no such file"
    if path.is_dir():
        return None, "a folder (search it by naming the folder itself)"
    if not path.is_file():  # checked before opening: a FIFO blocks, a device never ends
        return None, "not a regular file (a pipe, socket or device)"
    try:
        info, reason = check_image(path)
        return (decode_resized(path, size), None) if info else (None, reason)
    except OSError as e:  # unreadable (permissions), vanished meanwhile
        return None, f"cannot read: {e.strerror or e}"


def chunks(files: list[Path], size: int) -> Iterator[list[tuple[Path, np.ndarray | None, str | None]]]:
    for start in range(0, len(files), CHUNK):
        yield [(path, *read_image(path, size)) for path in files[start:start + CHUNK]]


# ---------------------------------------------------------------- the run


def load_predictor(name: str, image_size: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter short
    from stages.lib import models

    path = model_file(name)
    model = models.load(path)  # a damaged file: one UserError line
    if tuple(model.input_shape[1:]) != (image_size, image_size, 3):
        raise UserError(f"{path} takes images of shape {tuple(model.input_shape[1:])} but params.yaml "
                        f"split.image_size is {image_size}: {NOT_FOUND_HINT} to retrain with it")
    return model


def line(path: Path, model: str, classes: tuple[str, str], p_positive: float | None, error: str | None,
         as_json: bool) -> str:
    label = None if p_positive is None else classes[int(predicted_labels(p_positive))]
    if as_json:  # json.dumps escapes a non-UTF-8 name's bytes (\udcXX), so a reader can get them back
        p = None if p_positive is None else round(p_positive, 6)
        return json.dumps({"file": str(path), "model": model, "positive_class": classes[1], "p_positive": p,
                           "label": label, "error": error})
    if error is not None:
        return f"{printable(str(path))}\t-\terror: {error}"
    return f"{printable(str(path))}\t{p_positive:.4f}\t{label}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A file name the terminal's encoding cannot show (猫.jpg under a Latin-1 or ASCII
    # locale) is written escaped, never a UnicodeEncodeError half-way through the files.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    name, why = choose_model(args.model)
    classes = class_names()
    image_size = load_params("split")["split"]["image_size"]
    urls = [p for p in args.paths if URL.match(p)]
    files, skipped, special = image_files([Path(p) for p in args.paths if p not in urls])
    if skipped:
        print(f"skipped {len(skipped)} file(s) in folders that are not images by name, e.g. {printable(str(skipped[0]))}; "
              "name a file to try it anyway", file=sys.stderr)
    if special:
        print(f"skipped {len(special)} file(s) in folders that are not regular files (a pipe, socket or device, "
              f"or a link to one), e.g. {printable(str(special[0]))}", file=sys.stderr)
    if not files and not urls:
        raise UserError(f"no image files in {', '.join(args.paths)}")
    model = load_predictor(name, image_size)
    print(f"model: {name} ({why}); columns: file, P({classes[1]}), label ({classes[1]} when P >= {THRESHOLD}, "
          f"else {classes[0]})", file=sys.stderr)

    failed = len(urls)
    for url in urls:
        print(line(url, name, classes, None, "a URL: predict reads local files; download the image first "
                   "(e.g. curl -O URL)", args.json), flush=True)
    for chunk in chunks(files, image_size):
        readable = [image for _, image, _ in chunk if image is not None]
        p_positive = iter(model.predict(np.stack(readable), verbose=0).reshape(-1).tolist() if readable else [])
        for path, image, error in chunk:
            failed += error is not None
            print(line(path, name, classes, None if error else next(p_positive), error, args.json), flush=True)
    if failed:
        print(f"{failed} of {len(files) + len(urls)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run_stage(lambda: sys.exit(main()))

"""Getting the raw images and the VGG16 weights from wherever the user points:
a local folder or file, a zip, an http(s) URL, or Kaggle.

Downloads go to a temporary file and are size- and hash-checked before use; archives are
unpacked only after every entry has been checked (no absolute paths, no `..`, no symlinks,
no zip bombs). This is the only module that touches the network.
"""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from stages.params import UserError

# Keras' own published hash of its notop VGG16 file (keras/src/applications/vgg16.py).
KERAS_VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KNOWN_MD5 = {KERAS_VGG16_NOTOP_URL: "6d6bbae143d832006294945121d1f1fc"}

MAX_ZIP_TOTAL = 20 * 2**30  # 20 GiB unpacked: the Kaggle archive is under 1 GiB
MAX_ZIP_RATIO = 200  # JPEGs barely compress; a 1000:1 entry is a bomb
MAX_ZIP_SMALL_TOTAL = 64 * 2**20  # above this, the whole archive must not expand MAX_ZIP_RATIO:1 either
OFFLINE_HINT = (
    "To run offline, point the pipeline at a local copy, e.g. "
    "`dvc exp run -S download.source=PATH/TO/train -S download.vgg16_weights=PATH/TO/weights.h5`."
)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60) -> Path:
    """Stream `url` into `dest` via a temporary file; check length and md5 when known."""
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            received = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                received += len(block)
        if expected is not None and received != int(expected):
            raise UserError(f"download of {url} is incomplete: {received} of {expected} bytes")
        if md5 and digest.hexdigest() != md5:
            raise UserError(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise UserError(f"could not download {url}: {e}. {OFFLINE_HINT}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def check_zip(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse an archive with an unsafe entry before anything is unpacked."""
    total = packed = 0
    for info in archive.infolist():
        path = info.filename
        parts = Path(path.replace("\\", "/")).parts  # a Windows-made `..\\x` climbs too
        if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":") or ".." in parts:
            raise UserError(f"{name}: refusing entry '{path}' that would unpack outside its folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{name}: refusing symbolic link entry '{path}'")
        total += info.file_size
        packed += info.compress_size
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 2**20:
            raise UserError(
                f"{name}: entry '{path}' expands {info.file_size // info.compress_size}:1, "
                "refusing a likely zip bomb"
            )
    if total > MAX_ZIP_SMALL_TOTAL and total / max(packed, 1) > MAX_ZIP_RATIO:
        # Many entries, each under the per-entry floor (or overlapping ones): still a bomb.
        raise UserError(
            f"{name}: {len(archive.infolist())} entries expand {total // max(packed, 1)}:1 to {total} bytes, "
            "refusing a likely zip bomb"
        )
    if total > MAX_ZIP_TOTAL:
        raise UserError(f"{name}: unpacks to {total} bytes, over the {MAX_ZIP_TOTAL} byte limit")


def unpack_zip(zip_path: Path, dest: Path) -> None:
    """Unpack a checked zip into dest; a Kaggle `train.zip` inside is unpacked too."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            check_zip(archive, str(zip_path))
            archive.extractall(dest)
    except zipfile.BadZipFile as e:
        raise UserError(f"{zip_path} is not a valid zip archive: {e}") from None
    # Kaggle's dogs-vs-cats.zip holds train.zip (labelled) and test1.zip (unlabelled).
    for inner in sorted(dest.rglob("train.zip")):
        unpack_zip(inner, inner.with_suffix(""))
        inner.unlink()


def fetch_kaggle(dest: Path) -> Path:
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise UserError("download.source=kaggle needs the kaggle package: pip install kaggle") from None
    api = KaggleApi()
    try:
        api.authenticate()  # reads ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY
        api.competition_download_files("dogs-vs-cats", path=str(dest), quiet=False)
    except Exception as e:  # the client raises many types; never echo credentials
        raise UserError(
            f"Kaggle download failed ({type(e).__name__}); check your credentials and that you "
            f"accepted the competition rules. {OFFLINE_HINT}"
        ) from None
    return dest / "dogs-vs-cats.zip"


def materialize_images(source: str, workdir: Path) -> Path:
    """Return a local folder holding the source's images (unpacked into workdir if needed)."""
    if source == "kaggle":
        archive = fetch_kaggle(workdir)
    elif is_url(source):
        archive = download(source, workdir / "source.zip")
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"download.source: {path} does not exist. {OFFLINE_HINT}")
        if path.is_dir():
            return path
        archive = path
    if not zipfile.is_zipfile(archive):
        raise UserError(f"download.source: {archive} is neither a folder nor a zip archive")
    unpacked = workdir / "unpacked"
    unpack_zip(archive, unpacked)
    return unpacked


def materialize_weights(source: str, workdir: Path) -> Path:
    """Return a local path of the weights file (downloaded into workdir if a URL)."""
    if is_url(source):
        name = source.rsplit("/", 1)[-1] or "weights.h5"
        return download(source, workdir / name, md5=KNOWN_MD5.get(source))
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"download.vgg16_weights: {path} is not a file. {OFFLINE_HINT}")
    if path.suffix != ".h5":
        raise UserError(f"download.vgg16_weights: {path} is not an .h5 weights file")
    return path

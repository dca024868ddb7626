"""Image files: recognising labelled names, checking that each file is a usable image,
and decoding it once to a fixed-size RGB array.

Real collections are dirty (the PetImages archive holds zero-byte files, non-JPEGs,
`Thumbs.db`, truncated JPEGs), so `check_image` decodes every file fully and says why a file
is rejected instead of letting TensorFlow die on it mid-epoch.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# MPO is what many phone cameras write: a JPEG followed by more frames (a second lens, a
# depth preview); every JPEG reader shows the first frame, and so does `decode_resized`.
FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes of 16-bit grayscale
MAX_PIXELS = 50_000_000  # decompression-bomb guard: the largest Kaggle photo has 0.8 Mpx
MIN_SIDE = 8  # smaller than this carries no class information

_KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.[A-Za-z]+$", re.IGNORECASE)
_NUMBERED_NAME = re.compile(r"^(\d+)\.[A-Za-z]+$")
_CLASS_FOLDERS = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}


@dataclass(frozen=True)
class Labelled:
    label: str  # "cat" or "dog"
    id: int


def is_kaggle_name(name: str) -> bool:
    """A name of Kaggle's competition files, `cat.12.jpg` or `dog.7.jpg`."""
    return bool(_KAGGLE_NAME.match(name))


def are_cat_and_dog_folders(names: list[str]) -> bool:
    """Two folder names that are PetImages' classes: `Cat` and `Dog` (or cats, dogs, any case)."""
    return sorted(str(_CLASS_FOLDERS.get(n.lower())) for n in names) == ["cat", "dog"]


def parse_name(path: Path) -> Labelled | None:
    """Label and id from a Kaggle name (`cat.12.jpg`) or a class folder (`Cat/12.jpg`)."""
    m = _KAGGLE_NAME.match(path.name)
    if m:
        return Labelled(m.group(1).lower(), int(m.group(2)))
    m = _NUMBERED_NAME.match(path.name)
    folder = _CLASS_FOLDERS.get(path.parent.name.lower())
    if m and folder:
        return Labelled(folder, int(m.group(1)))
    return None


def file_stems(labels) -> dict[str, str]:
    """A file-name stem per class name, safe on any file system and in any shell: ASCII
    letters, digits, `_` and `-` (`Große Ameise` -> `Groe_Ameise`, `蜂` -> `class`);
    two classes whose stems would clash, even only in case, get `-1`, `-2`.
    `cat` and `dog` stay themselves, so Kaggle and PetImages files keep their names."""
    labels = sorted(labels)
    stems = {}
    for label in labels:
        ascii_name = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
        stems[label] = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_name).strip("_-") or "class"
    if len({stem.casefold() for stem in stems.values()}) < len(stems):
        stems = {label: f"{stem}-{n}" for n, (label, stem) in enumerate(stems.items(), 1)}
    return stems


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    width: int
    height: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_image(path: Path) -> tuple[ImageInfo | None, str | None]:
    """Decode `path` fully; return (info, None) if usable, else (None, reason)."""
    if path.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt, mode, (w, h) = im.format, im.mode, im.size
                if fmt not in FORMATS:
                    return None, f"unsupported image format {fmt}"
                if w * h > MAX_PIXELS:
                    return None, f"too large: {w}x{h} pixels (limit {MAX_PIXELS})"
                if min(w, h) < MIN_SIDE:
                    return None, f"too small: {w}x{h} pixels (minimum side {MIN_SIDE})"
                im.load()
    except UnidentifiedImageError:
        known = unsupported_format(path)
        return None, (f"unsupported format {known}: convert it to JPEG or PNG" if known
                      else "not an image (Pillow cannot identify it)")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"decompression bomb: {e}"
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"corrupt or truncated image: {e}"
    return ImageInfo(fmt, mode, w, h), None


# Formats phones and browsers write that Pillow cannot read without plugins, by their ISO
# base media file brand (bytes 8-12, after the `ftyp` box type at 4-8).
_ISOBMFF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                   b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def unsupported_format(path: Path) -> str | None:
    """The name of a well-known image format that Pillow cannot decode here (HEIC, HEIF,
    AVIF, JPEG XL), from the file's first bytes; None for anything else."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] == b"ftyp":
        return _ISOBMFF_BRANDS.get(head[8:12])
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB: EXIF orientation applied, alpha composited on white."""
    im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT_MODES:
        # 16-bit grayscale (the only source of these modes among FORMATS): keep the high
        # byte, v // 256, instead of letting convert() clip at 255. That is the rule Pillow
        # applies itself to every other 16-bit PNG (RGB, RGBA, gray + alpha: it hands over
        # only their high bytes), so all 16-bit images decode alike. The file's depth
        # decides, never its content: a dark 16-bit image (all values <= 255) stays dark.
        a = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray((a >> 8).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB")


def decode_resized(path: Path, size: int) -> np.ndarray:
    """The image at `path` as a (size, size, 3) uint8 array (bilinear, aspect not kept,
    as Keras' image loaders do)."""
    with Image.open(path) as im:
        rgb = to_rgb(im)
        return np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)

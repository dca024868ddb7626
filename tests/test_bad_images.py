"""Dirty image collections through the real download code (`stages.download.scan` /
`inspect`, `stages.images.decode_resized` / `to_rgb`): every file is either used correctly,
as 3-channel uint8 RGB, or listed in the rejected table with a reason. Unit level, no dvc."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, features

from helpers import synthetic_image
from stages import split
from stages.download import inspect, scan
from stages.lib.images import check_image, decode_resized, to_rgb
from stages.lib.params import UserError

SIZE = 32


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(i: int = 0, size: int = 24) -> Image.Image:
    return synthetic_image("cat", i, size)


def exif_rotated() -> bytes:
    """20x10 stored, left half red, right half blue, EXIF orientation 6 (display rotated 90 CW)."""
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = (255, 0, 0)
    a[:, 10:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    return encoded(im, "JPEG", quality=95, exif=exif.tobytes())


# name -> (bytes, expected reason regex or None when accepted, expected stored file name)
CASES: dict[str, tuple[bytes, str | None]] = {
    "cat.0.jpg": (b"", r"^empty file \(0 bytes\)$"),
    "cat.1.jpg": (encoded(photo(1), "JPEG")[:300], r"(?i)^corrupt or truncated image: .*truncated"),
    "cat.2.jpg": (random.Random(2).randbytes(5000), r"^not an image \(Pillow cannot identify it\)$"),
    "cat.3.jpg": (encoded(photo(3), "PNG"), None),  # a PNG named .jpg
    "cat.4.jpg": (encoded(photo(4).convert("P"), "GIF"), None),
    "cat.5.jpg": (encoded(photo(5), "WEBP"), None),
    "cat.6.jpg": (encoded(photo(6).convert("CMYK"), "JPEG"), None),
    "cat.7.jpg": (encoded(photo(7).convert("L"), "JPEG"), None),
    "cat.8.jpg": (encoded(Image.fromarray(np.full((16, 16), 40000, np.uint16)), "PNG"), None),  # 16-bit gray
    "cat.9.jpg": (encoded(photo(9).convert("RGBA"), "PNG"), None),
    "cat.10.jpg": (encoded(Image.new("RGB", (1, 1), "red"), "JPEG"), r"^too small: 1x1 pixels \(minimum side 8\)$"),
    "cat.11.jpg": (png_claiming(9000, 9000), r"^too large: 9000x9000 pixels \(limit 50000000\)$"),
    "cat.12.jpg": (png_claiming(100_000, 100_000), r"^decompression bomb: .*10000000000 pixels"),
    "cat.13.jpg": (exif_rotated(), None),
    "cat.14.jpg": (encoded(photo(14), "TIFF"), r"^unsupported image format TIFF$"),
    "cat.15.jpg": (encoded(photo(15), "BMP"), None),
    "Thumbs.db": (b"\xd0\xcf\x11\xe0" + bytes(500), r"^system file, not an image$"),
    ".DS_Store": (b"\0\0\0\1Bud1" + bytes(100), r"^system file, not an image$"),
    "._cat.16.jpg": (b"\0\5\x16\7" + bytes(100), r"^system file, not an image$"),
    "kitten.jpg": (encoded(photo(17), "JPEG"), r"^name is neither cat\.N\.jpg"),
    "cat_18.jpg": (encoded(photo(18), "JPEG"), r"^name is neither cat\.N\.jpg"),
    "cat.19.jpg.bak": (encoded(photo(19), "JPEG"), r"^name is neither cat\.N\.jpg"),
    "dog.x.jpg": (encoded(photo(20), "JPEG"), r"^name is neither cat\.N\.jpg"),
    "Dog.20.JPG": (encoded(synthetic_image("dog", 20, 24), "JPEG"), None),  # case-insensitive
    "cat.40.jpg": (encoded(photo(40), "JPEG"), r"^second file for cat id 40$"),  # Cat/40.jpg sorts first
}
FORMAT_OF = {"cat.3.jpg": "PNG", "cat.4.jpg": "GIF", "cat.5.jpg": "WEBP", "cat.6.jpg": "JPEG",
             "cat.8.jpg": "PNG", "cat.9.jpg": "PNG", "cat.15.jpg": "BMP"}
STORED_AS = {"cat.3.jpg": "cat.3.png", "cat.4.jpg": "cat.4.gif", "cat.5.jpg": "cat.5.webp",
             "cat.8.jpg": "cat.8.png", "cat.9.jpg": "cat.9.png", "cat.15.jpg": "cat.15.bmp",
             "Dog.20.JPG": "dog.20.jpg"}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> Path:
    assert features.check("webp"), "Pillow without WebP support"
    root = tmp_path_factory.mktemp("dirty")
    for name, (data, _) in CASES.items():
        (root / name).write_bytes(data)
    # PetImages layout beside the Kaggle names: Cat/ holds one image, Dog/ is empty.
    (root / "Cat").mkdir()
    (root / "Dog").mkdir()
    (root / "Cat" / "30.jpg").write_bytes(encoded(photo(30), "JPEG"))
    (root / "Cat" / "40.jpg").write_bytes(encoded(photo(31), "JPEG"))  # and cat.40.jpg: two files, one id
    return root


@pytest.fixture(scope="module")
def scanned(dirty):
    return scan(dirty)


def test_every_file_is_accepted_or_rejected_with_reason(dirty, scanned):
    manifest, rejected = scanned
    files = sorted(str(p.relative_to(dirty)) for p in dirty.rglob("*") if p.is_file())
    listed = sorted([*manifest["path"], *rejected["path"]])
    assert listed == files, "each file appears in exactly one table"
    assert rejected["reason"].str.len().gt(10).all()
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    for name, (_, expected) in CASES.items():
        if expected is None:
            assert name in set(manifest["path"]), f"{name} should be usable: {reasons.get(name)}"
        else:
            assert name in reasons, f"{name} should be rejected"
            assert pd.Series([reasons[name]]).str.contains(expected, regex=True).all(), (name, reasons[name])


def test_accepted_files_are_stored_under_their_real_format(scanned):
    manifest, _ = scanned
    by_path = manifest.set_index("path")
    for name, fmt in FORMAT_OF.items():
        assert by_path.loc[name, "format"] == fmt
    for name, stored in STORED_AS.items():
        assert by_path.loc[name, "file"] == stored
    assert by_path.loc["cat.8.jpg", "mode"] == "I;16"
    assert by_path.loc["cat.6.jpg", "mode"] == "CMYK"
    assert by_path.loc["Cat/30.jpg", "file"] == "cat.30.jpg"


def test_accepted_files_decode_to_rgb_uint8(dirty, scanned):
    manifest, _ = scanned
    for name in manifest["path"]:
        a = decode_resized(dirty / name, SIZE)
        assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8, name
        assert a.std() > 0 or name == "cat.8.jpg", f"{name} decoded to a flat image"


def test_grayscale_and_16_bit_become_three_equal_channels(dirty):
    gray = decode_resized(dirty / "cat.7.jpg", SIZE)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    sixteen = decode_resized(dirty / "cat.8.jpg", SIZE)
    # 40000 / 65535 of full scale, not clipped to 255
    assert np.all(sixteen == round(40000 / 65535 * 255))


def test_cmyk_colours_survive(tmp_path):
    rgb = Image.new("RGB", (16, 16), (200, 40, 30))
    path = tmp_path / "cat.1.jpg"
    path.write_bytes(encoded(rgb.convert("CMYK"), "JPEG", quality=100))
    assert check_image(path)[0].mode == "CMYK"
    a = decode_resized(path, 16).astype(int)
    assert np.abs(a - (200, 40, 30)).max() < 12


def test_alpha_is_composited_on_white():
    a = np.zeros((10, 10, 4), np.uint8)
    a[:5] = (255, 0, 0, 255)  # opaque red on top, fully transparent (black) below
    out = np.asarray(to_rgb(Image.fromarray(a, "RGBA")))
    assert out.shape == (10, 10, 3)
    assert (out[:5] == (255, 0, 0)).all() and (out[5:] == 255).all()
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 255, 0])
    p.info["transparency"] = 0
    assert (np.asarray(to_rgb(p)) == 255).all(), "palette transparency also becomes white"


def test_exif_orientation_is_applied(dirty):
    with Image.open(dirty / "cat.13.jpg") as im:
        assert im.size == (20, 10)
        upright = np.asarray(to_rgb(im)).astype(int)
    assert upright.shape == (20, 10, 3), "rotated to portrait"
    top, bottom = upright[:8].mean(axis=(0, 1)), upright[12:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, f"left (red) half is now on top: {top}"
    assert bottom[2] > 200 and bottom[0] < 60, f"right (blue) half is now at the bottom: {bottom}"


def test_inspect_row_for_a_good_file(dirty):
    row = inspect(dirty / "cat.7.jpg")
    assert row["file"] == "cat.7.jpg" and row["label"] == "cat" and row["id"] == 7
    assert row["mode"] == "L" and (row["width"], row["height"]) == (24, 24) and len(row["sha256"]) == 64


def test_random_corruption_never_escapes_check_image(tmp_path):
    """Bit flips and truncations of every format: a reason or a decodable image, never a crash."""
    base = photo(0, 40)
    outcomes = {"accepted": 0, "rejected": 0}
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP"):
        data = encoded(base, fmt)
        for i in range(24):
            r = random.Random(i)
            x = bytearray(data)
            if i % 3 == 0:
                x = x[: r.randrange(1, len(x))]
            else:
                for _ in range(r.randrange(1, 12)):
                    x[r.randrange(len(x))] = r.randrange(256)
            path = tmp_path / f"cat.{i}.jpg"
            path.write_bytes(bytes(x))
            info, reason = check_image(path)
            if info is None:
                assert reason, (fmt, i)
                outcomes["rejected"] += 1
            else:
                assert decode_resized(path, 16).shape == (16, 16, 3), (fmt, i)
                outcomes["accepted"] += 1
    assert outcomes["rejected"] > 20, outcomes


def test_too_few_valid_images_stops_split_with_counts(dirty, scanned):
    manifest, rejected = scanned
    classes = ("cat", "dog")
    kept, _ = split.deduplicate(manifest, classes)
    cfg = {"train_per_class": 1000, "val_per_class": 500, "test_per_class": 500, "order": "id", "seed": 0,
           "extended_per_class": 0}
    with pytest.raises(UserError) as err:
        split.plan(kept, classes, cfg, len(rejected))
    n_cats, n_dogs = (int((kept["label"] == c).sum()) for c in classes)
    assert str(err.value) == (
        f"split needs 2000 cat images (1000 train + 500 validation + 500 test), {n_cats} valid found "
        f"(per class: cat {n_cats}, dog {n_dogs}); {len(rejected)} files rejected, see data/raw/rejected.csv; "
        "fewer per class, or fractions of each class (e.g. split.train_per_class: 0.5), fit any size"
    )
    # The empty Dog/ folder: enough cats asked for, too few dogs found.
    small = {**cfg, "train_per_class": 1, "val_per_class": 1, "test_per_class": 1}
    with pytest.raises(UserError, match=r"^split needs 3 dog images \(1 train \+ 1 validation \+ 1 test\), 1 valid found"):
        split.plan(kept, classes, small, len(rejected))

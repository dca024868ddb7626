"""Hostile input, round three: servers that send their headers slowly or a malformed
Content-Length, full disks (small tmpfs mounts, or skipped where mounting is not allowed),
archives nested side by side and folders named like archives, messages that name what the
user wrote instead of deleted temporaries, a source that is the project itself,
bounds of params, broken params files and environment variables, arrays files that do not
fit together, and 16-bit images. Only 127.0.0.1 servers started here are contacted."""

from __future__ import annotations

import contextlib
import copy
import io
import subprocess
import time
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, jpeg_bytes, local_http_server, run_stage_process, write_kaggle_folder
from stages.lib import sources
from stages.lib.params import UserError

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


def zip_bytes(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buf.getvalue()


IMAGES = [(f"{label}.{i}.jpg", jpeg_bytes(label, i)) for label in ("cat", "dog") for i in range(3)]
GOOD_ZIP = zip_bytes(IMAGES)
PAYLOAD = bytes(range(256)) * 800  # 200 KiB
DRIP_BYTES = 60  # the slow servers stop after this many bytes, whatever happens
requests: dict[str, int] = {}


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at path (root only): a disk that really fills up."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def write_params(folder: Path, **sections) -> None:
    params = copy.deepcopy(REAL)
    for name, values in sections.items():
        params[name].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(sources, "BACKOFF_S", 0.01)
    requests.clear()


# ---------------------------------------------------------------- servers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):  # noqa: N802
        name = self.path.split("?")[0]
        requests[name] = requests.get(name, 0) + 1
        self.close_connection = True
        try:
            if name == "/slow-headers.zip":  # the server: a header, one byte at a time
                self.raw(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(DRIP_BYTES):
                    self.raw(b"x")
                    time.sleep(0.1)
            elif name == "/slow-status.zip":  # not even the status line
                for byte in b"HTTP/1.1 200 OK"[:DRIP_BYTES]:
                    self.raw(bytes([byte]))
                    time.sleep(0.2)
            elif name in ("/length-abc.bin", "/length-negative.bin"):
                length = b"abc" if name == "/length-abc.bin" else b"-5"
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\nConnection: close\r\n\r\n" + PAYLOAD)
            elif name == "/drip.zip":  # promises a zip, sends a byte every 50 ms
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(GOOD_ZIP))
                for i in range(DRIP_BYTES * 10):
                    self.raw(GOOD_ZIP[i : i + 1])
                    time.sleep(0.05)
            elif name == "/big.bin":
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAYLOAD) + PAYLOAD)
            elif name == "/page.h5":  # a login page where the weights were
                page = b"<!DOCTYPE html><html><body>Sign in</body></html>"
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page) + page)
            elif name == "/nested-bad.zip":  # a train.zip inside that is not a zip
                body = zip_bytes([("a/train.zip", b"not a zip at all")])
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: that is the point


@pytest.fixture(scope="module")
def server():
    with local_http_server(Handler) as url:
        yield url


@pytest.mark.network
@pytest.mark.parametrize("path", ["/slow-headers.zip", "/slow-status.zip"])
def test_headers_sent_slowly_stall_out(server, tmp_path, monkeypatch, path):
    """The read timeout restarts with every byte; the stall rule covers the headers."""
    monkeypatch.setattr(sources, "STALL_WINDOW_S", 0.5)
    monkeypatch.setattr(sources, "ATTEMPTS", 2)
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        sources.download(f"{server}{path}", tmp_path / "file.zip", timeout=5)
    assert time.monotonic() - started < 4
    assert str(err.value).startswith(
        f"could not download {server}{path}: stalled: no complete response (status line and headers) within 0.5 s "
        "of connecting (tried 2 times)"
    ), err.value
    assert requests[path] == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_headers_sent_slowly_hit_the_deadline(server, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MIN_BYTES_PER_S", 0)  # only the overall deadline applies
    monkeypatch.setattr(sources, "DEADLINE_S", 0.6)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"download of .*/slow-headers\.zip not finished after 0\.6 s \(0 bytes received\)"):
        sources.download(f"{server}/slow-headers.zip", tmp_path / "file.zip", timeout=5)
    assert time.monotonic() - started < 3
    assert requests["/slow-headers.zip"] == 1, "a missed deadline is not retried"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
@pytest.mark.parametrize("path", ["/length-abc.bin", "/length-negative.bin"])
def test_malformed_content_length_is_ignored_and_the_body_read_to_the_end(server, tmp_path, path):
    got = sources.download(f"{server}{path}", tmp_path / "file.bin", timeout=5)
    assert got.path.read_bytes() == PAYLOAD and got.size == len(PAYLOAD)
    assert requests[path] == 1, "a complete body is not retried"


@pytest.mark.network
def test_download_onto_a_full_disk_is_one_line_without_retry(server, tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        with pytest.raises(UserError) as err:
            sources.download(f"{server}/big.bin", disk / "file.bin", timeout=5)
        message = str(err.value)
        assert message.startswith(f"download of {server}/big.bin: no space left on the disk that holds {disk}/ ("), message
        assert f"{len(PAYLOAD)} bytes needed" in message and "\n" not in message
        assert "offline" not in message and "tried" not in message
        assert requests["/big.bin"] == 1, "a full disk is not the network: no retry"
        assert list(disk.iterdir()) == [], "no .part left"


@pytest.mark.network
def test_messages_name_the_url_not_the_temporary_folder(server, tmp_path):
    (tmp_path / "work").mkdir()
    with pytest.raises(UserError) as err:
        sources.materialize_weights(f"{server}/page.h5", tmp_path / "work")
    assert str(err.value) == (
        f"download.vgg16_weights: {server}/page.h5 returned text/html, 48 bytes (an HTML page), which is not an "
        "HDF5 (.h5) weights file; check the URL or use another download.vgg16_weights"
    )
    with pytest.raises(UserError) as err:
        sources.materialize_images(f"{server}/nested-bad.zip", tmp_path / "work")
    assert str(err.value).startswith(f"{server}/nested-bad.zip -> a/train.zip is not a valid zip archive"), err.value
    assert str(tmp_path) not in str(err.value)


def test_environment_limits_are_checked_in_one_line(tmp_path):
    write_params(tmp_path, download={"source": "http://127.0.0.1:9/none.zip"})
    for name, value, said in [
        ("CATSDOGS_DOWNLOAD_ATTEMPTS", "0", "must be an integer >= 1 (unset it for the default, 4)"),
        ("CATSDOGS_DOWNLOAD_ATTEMPTS", "2.5", "must be an integer >= 1"),
        ("CATSDOGS_DOWNLOAD_DEADLINE_S", "soon", "must be a number > 0 (unset it for the default, 10800)"),
        ("CATSDOGS_DOWNLOAD_MIN_BYTES_PER_S", "nan", "must be a number >= 0"),
    ]:
        stage = run_stage_process("stages.download", tmp_path, {name: value})
        out, err = stage.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert stage.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: environment variable {name}={value!r} {said}"), err


# ---------------------------------------------------------------- archives and sources


def test_archive_nesting_counts_depth_not_archives(tmp_path):
    inner = zip_bytes([(f"cat.{i}.jpg", jpeg_bytes("cat", i)) for i in range(2)])
    outer = tmp_path / "side-by-side.zip"
    outer.write_bytes(zip_bytes([(f"{d}/train.zip", inner) for d in "abcde"]))
    sources.unpack_zip(outer, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg")) == [
        f"{d}/train/cat.{i}.jpg" for d in "abcde" for i in range(2)
    ]


def test_a_folder_named_train_zip_is_a_folder(tmp_path):
    archive = tmp_path / "folder.zip"
    archive.write_bytes(zip_bytes([("train.zip/cat.1.jpg", jpeg_bytes("cat", 1)), ("x/train.zip/", b"")]))
    sources.unpack_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "train.zip" / "cat.1.jpg").read_bytes() == jpeg_bytes("cat", 1)


def test_nested_archive_errors_name_the_path_inside_the_source(tmp_path):
    bad = zip_bytes([("cat.1.jpg", b"x")])
    archive = tmp_path / "my photos.zip"
    archive.write_bytes(zip_bytes([("deep/train.zip", zip_bytes([("train.zip", bad[:20])]))]))
    with pytest.raises(UserError) as err:
        sources.materialize_images(str(archive), tmp_path / ".download-x")
    assert str(err.value).startswith(f"{archive} -> deep/train.zip -> train.zip is not a valid zip archive")


@pytest.mark.parametrize("source", [".", "..", "data", "data/split/images", "./data/raw", "{root}"])
def test_a_source_that_is_or_holds_the_project_or_lies_in_data_is_refused(tmp_path, monkeypatch, source):
    project = tmp_path / "project"
    write_kaggle_folder(project / "data" / "split" / "images", 2)
    (project / "data" / "raw").mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    source = source.format(root=project)
    with pytest.raises(UserError) as err:
        sources.materialize_images(source, tmp_path / "work")
    inside = source.lstrip("./").startswith("data")
    said = "is inside the project's data/ folder" if inside else "is the project folder or contains it"
    assert str(err.value).startswith(f"download.source: {source} {said}"), err.value
    # A folder of images inside the project, but outside data/, is the user's to use.
    write_kaggle_folder(project / "photos", 1)
    assert sources.materialize_images("photos", tmp_path / "work") == project / "photos"


@pytest.mark.slow
def test_download_onto_a_full_disk_stops_before_converting_the_weights(tmp_path, random_vgg16_weights):
    """h5py has segfaulted after a write failed for want of space: the stage checks first."""
    source = write_kaggle_folder(tmp_path / "images", 3)
    with small_disk(tmp_path / "project", "8m") as project:
        write_params(project, download={"source": str(source), "vgg16_weights": str(random_vgg16_weights)})
        stage = run_stage_process("stages.download", project)
        out, err = stage.communicate(timeout=300)
        assert stage.returncode == 2, (out, err)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("error: no space left on the disk that holds data/weights/ ("), err
        assert f"{sources.VGG16_NOTOP_PARAMS * 4 + 4 * 2**20} bytes needed" in lines[0]
        assert sorted(p.name for p in (project / "data").iterdir()) == ["raw", "weights"], "no temporary folder left"
        assert list((project / "data" / "weights").iterdir()) == []


# ---------------------------------------------------------------- bounds and params files


@pytest.mark.parametrize(
    "section, values, said",
    [
        ("train", {"seed": 2**32}, "train.seed must be an integer in [0, 4294967295], got 4294967296"),
        ("train_custom", {"epochs": 10**12}, "train_custom.epochs must be at most 100000, got 1000000000000"),
        ("finetune", {"epochs": 20, "early_stopping": 20},
         "finetune.early_stopping must be below finetune.epochs (20) or 0 (off), got 20: with that patience "
         "training can never stop early"),
    ],
    ids=["seed-2**32", "epochs-1e12", "patience-not-below-epochs"],
)
def test_bounds_are_refused_in_one_line(section, values, said):
    from stages.lib.params import validate_section

    with pytest.raises(UserError) as err:
        validate_section(section, {**REAL[section], **values})
    assert str(err.value) == said
    # The edge cases just inside the bounds pass.
    validate_section("train", {**REAL["train"], "seed": 2**32 - 1})
    validate_section("train_custom", {**REAL["train_custom"], "epochs": 100_000})
    validate_section("finetune", {**REAL["finetune"], "epochs": 20, "early_stopping": 19})


PARAMS_TEXT = (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda p: p.write_bytes(PARAMS_TEXT.replace("# Chollet's", "# Chollet\xe9", 1).encode("latin-1")),
         r"params\.yaml is not UTF-8 text: byte 0xe9 on line \d+ \(Latin-1 or another legacy encoding\?\); save it as UTF-8"),
        (lambda p: p.write_bytes(PARAMS_TEXT.encode("utf-16")),
         r"params\.yaml is UTF-16 text; save it as UTF-8 \(DVC reads params files as UTF-8\)"),
        (lambda p: p.mkdir(), r"params\.yaml is a folder, not a file: it must be the YAML file of params"),
        (lambda p: p.write_text(PARAMS_TEXT + "\ntrain:\n  seed: 7\n"),
         r"params\.yaml is not valid YAML: key 'train' given a second time \(first on line \d+\); keep one, as dvc repro "
         r"requires \(line \d+, column 1\)"),
        (lambda p: p.write_text(PARAMS_TEXT.replace("  epochs: 30", "  epochs: 30\n  epochs: 3", 1)),
         r"params\.yaml is not valid YAML: key 'epochs' given a second time \(first on line \d+\); keep one, as dvc repro "
         r"requires \(line \d+, column 3\)"),
        (lambda p: p.write_text("split: [1, 2\n"), r"params\.yaml is not valid YAML: .*\(line 2, column 1\)"),
    ],
    ids=["latin-1", "utf-16", "folder", "duplicate-section", "duplicate-key", "broken"],
)
def test_a_broken_params_file_is_one_line_in_a_stage_run_by_hand(tmp_path, make, said):
    import re

    make(tmp_path / "params.yaml")
    stage = run_stage_process("stages.split", tmp_path)
    out, err = stage.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert stage.returncode == 2 and len(lines) == 1, err
    assert re.fullmatch(f"error: {said}", lines[0]), lines[0]


def test_the_params_loader_is_a_safe_one(tmp_path):
    """The duplicate-refusing loader is still YAML's safe loader: no Python objects."""
    from stages.lib import params

    unsafe = tmp_path / "params.yaml"
    unsafe.write_text("x: !!python/object/apply:os.system ['echo unsafe > pwned']\n")
    with pytest.raises(UserError, match=r"params\.yaml is not valid YAML: .*could not determine a constructor"):
        params.read_params_file(unsafe)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_bad_checkpoints_folder_variable_is_one_line(tmp_path, monkeypatch):
    from stages.lib import runtime

    a_file = tmp_path / "file"
    a_file.write_text("x")
    for value in (a_file, a_file / "sub" / "dir"):
        monkeypatch.setenv("CATSDOGS_CHECKPOINTS", str(value))
        with pytest.raises(UserError) as err:
            runtime.check_checkpoints_dir()
        assert str(err.value) == (
            f"environment variable CATSDOGS_CHECKPOINTS={str(value)!r} must name a folder the training stages can "
            f"write, but {a_file} is a file, not a folder; unset it to keep checkpoints in data/checkpoints"
        )
    monkeypatch.setenv("CATSDOGS_CHECKPOINTS", str(tmp_path / "new" / "folder"))
    runtime.check_checkpoints_dir()  # a folder yet to be made is fine
    assert not (tmp_path / "new").exists(), "checking makes nothing"


# ---------------------------------------------------------------- arrays files


def write_split(path: Path, **arrays) -> None:
    import numpy as np

    from stages.lib.outputs import save_npz

    n = 12
    default = {"images": np.zeros((n, 48, 48, 3), np.uint8), "labels": np.zeros(n, np.uint8),
               "files": np.array([f"cat.{i}.jpg" for i in range(n)])}
    save_npz(path, **{k: v for k, v in {**default, **arrays}.items() if v is not None})


@pytest.mark.parametrize(
    "arrays, said",
    [
        ({"labels": None, "y": [0, 1]}, "has no 'labels' array (it holds files, images, y), so split did not write it"),
        ({"labels": [0, 1, 0]}, "holds 12 images but 3 labels and 12 file names; each image needs one of each"),
        ({"images": "gray"}, "images of shape (12, 48, 48) and type uint8, expected (N, S, S, 3) uint8"),
        ({"images": "float"}, "images of shape (12, 48, 48, 3) and type float32, expected (N, S, S, 3) uint8"),
        ({"labels": [2] * 12}, "labels must be 0 or 1, found [2]"),
    ],
    ids=["wrong-keys", "3-labels-for-12-images", "grayscale", "float", "label-2"],
)
def test_a_split_file_that_does_not_fit_together_is_one_line(tmp_path, arrays, said):
    import numpy as np

    from stages.lib.datasets import load_split

    made = {"gray": np.zeros((12, 48, 48), np.uint8), "float": np.zeros((12, 48, 48, 3), np.float32)}
    arrays = {k: made.get(v, v) if isinstance(v, str) else v for k, v in arrays.items()}
    arrays = {k: np.asarray(v, np.uint8) if isinstance(v, list) else v for k, v in arrays.items()}
    write_split(tmp_path / "train.npz", **arrays)
    with pytest.raises(UserError) as err:
        load_split("train", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'train.npz'}: {said}" if said.startswith("images") or
                                     said.startswith("labels") else f"{tmp_path / 'train.npz'} {said}"), err.value
    assert str(err.value).endswith(f"delete it and run `dvc repro split` (or `dvc checkout {tmp_path / 'train.npz'}`)")


def test_splits_of_different_image_sizes_are_one_line(tmp_path):
    import numpy as np

    from stages.lib.datasets import load_split

    write_split(tmp_path / "train.npz")
    write_split(tmp_path / "validation.npz", images=np.zeros((12, 64, 64, 3), np.uint8))
    assert load_split("train", tmp_path)["images"].shape == (12, 48, 48, 3)
    with pytest.raises(UserError, match=r"validation\.npz holds 64x64 images but .*train\.npz holds 48x48: they come "
                                        r"from different runs of split; run `dvc repro split`"):
        load_split("validation", tmp_path)


# ---------------------------------------------------------------- a full disk in any stage


def write_raw_folder(project: Path, source: Path) -> None:
    """data/raw as the download stage writes it, without its weights step."""
    import shutil

    from stages.download import scan

    manifest, rejected = scan(source)
    (project / "data" / "raw" / "images").mkdir(parents=True)
    for path, file in zip(manifest["path"], manifest["file"]):
        shutil.copyfile(source / path, project / "data" / "raw" / "images" / file)
    manifest.rename(columns={"path": "source_path"}).to_csv(project / "data" / "raw" / "manifest.csv", index=False)
    rejected.to_csv(project / "data" / "raw" / "rejected.csv", index=False)


@pytest.mark.slow
def test_split_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    source = write_kaggle_folder(tmp_path / "images", 24)
    with small_disk(tmp_path / "project", "400k") as project:
        write_params(project, split={"train_per_class": 12, "val_per_class": 6, "test_per_class": 6, "image_size": 48})
        write_raw_folder(project, source)
        stage = run_stage_process("stages.split", project)
        out, err = stage.communicate(timeout=120)
        assert stage.returncode == 2, (out, err)
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: no space left on the disk that holds data/ ("), err
        assert err.strip().endswith("bytes free): free some space and rerun"), err
        assert sorted(p.name for p in (project / "data").iterdir()) == ["raw"], "no data/.split.* left"
        assert not (project / "metrics").exists() or list((project / "metrics").iterdir()) == []


# ---------------------------------------------------------------- 16-bit images


def png_16_bit(path: Path, pixels) -> Path:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): grayscale for (H, W)
    pixels, RGB for (H, W, 3); big-endian samples, filter 0 on every row."""
    import struct
    import zlib

    import numpy as np

    pixels = np.asarray(pixels, ">u2")
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("value", [0, 255, 256, 1000, 32767, 32768, 65280, 65535])
def test_16_bit_rgb_and_grayscale_follow_one_rule(tmp_path, value):
    """The high byte, v // 256, for both (all-255 RGB gave 0 while grayscale gave 1)."""
    import numpy as np

    from stages.lib.images import check_image, decode_resized

    gray = png_16_bit(tmp_path / "cat.1.png", np.full((16, 16), value))
    rgb = png_16_bit(tmp_path / "cat.2.png", np.full((16, 16, 3), value))
    for path in (gray, rgb):
        info, reason = check_image(path)
        assert reason is None, reason
        assert np.all(decode_resized(path, 8) == value // 256), (path.name, np.unique(decode_resized(path, 8)))


@pytest.mark.parametrize("damage", ["text", "bit flip", "missing"])
def test_a_damaged_model_stops_evaluate_and_finetune_with_one_line(tmp_path, damage):
    """data/models/*.keras that is text, has a flipped byte or is gone: `python -m
    stages.evaluate` and `python -m stages.finetune` (which starts from train_aug_frozen's
    model) each say so in one line naming the file, exit 2, no traceback."""
    import io
    import zipfile

    from helpers import ROOT, run_module

    import numpy as np
    import yaml

    from stages.lib.outputs import save_npz, write_json
    from stages.lib.study import classes_record

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"]["image_size"] = size = 48
    params["vgg16"]["augment_bank"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    arrays = tmp_path / "data" / "split" / "arrays"
    for split in ("train", "validation", "test", "extended"):  # a sound split: only the model is wrong
        save_npz(arrays / f"{split}.npz", images=np.zeros((4, size, size, 3), np.uint8),
                 labels=np.array([0, 1, 0, 1], np.uint8), files=np.array([f"{split}{i}.jpg" for i in range(4)]))
    write_json(tmp_path / "data" / "split" / "classes.json", classes_record(("cat", "dog")))
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:  # a .keras file is a zip: this one holds nothing Keras wants
        archive.writestr("metadata.json", "{}")
    for name in ("train_custom", "train_custom_aug", "train_feature_clf", "train_aug_frozen", "finetune"):
        (models / f"{name}.keras").write_bytes(good.getvalue())
    damaged = models / "train_aug_frozen.keras"
    if damage == "text":
        damaged.write_text("this is not a model\n")
    elif damage == "bit flip":
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
    else:
        damaged.unlink()
    for module in ("stages.finetune", "stages.evaluate"):
        result = run_module(module, tmp_path)
        assert result.returncode == 2, (module, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "data/models/" in errors[0], (module, result.stderr)
        if module == "stages.finetune":
            assert "data/models/train_aug_frozen.keras" in errors[0], errors[0]

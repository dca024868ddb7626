"""Hostile archives and broken downloads (stages/lib/sources.py): unsafe zips are refused before
anything is unpacked, downloads land atomically or not at all, network failures say how to
run offline, and credentials never reach an error message. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import hashlib
import re
import socket
import stat
import sys
import types
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, jpeg_bytes, local_http_server
from stages.lib import sources
from stages.download import scan
from stages.lib.params import UserError


def make_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Transient failures are retried after 2, 4, 8 s; here after milliseconds."""
    monkeypatch.setattr(sources, "BACKOFF_S", 0.01)


GOOD = [("cat.1.jpg", jpeg_bytes("cat", 1)), ("dog.1.jpg", jpeg_bytes("dog", 1))]


# ---------------------------------------------------------------- archives

@pytest.mark.parametrize(
    "entry, expected",
    [
        (("/tmp/evil.txt", b"x"), "would unpack outside its folder"),
        (("../evil.txt", b"x"), "would unpack outside its folder"),
        (("images/../../evil.txt", b"x"), "would unpack outside its folder"),
        (("..\\evil.txt", b"x"), "would unpack outside its folder"),
        (("C:/evil.txt", b"x"), "would unpack outside its folder"),
        (symlink_entry("images/link.jpg", "/etc/passwd"), "symbolic link"),
        (("bomb.jpg", bytes(4 * 2**20)), "zip bomb"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "backslash-dotdot", "drive-letter", "symlink", "bomb"],
)
def test_unsafe_zip_is_refused_and_nothing_unpacked(tmp_path, entry, expected):
    archive = make_zip(tmp_path / "bad.zip", [*GOOD, entry])
    dest = tmp_path / "out"
    with pytest.raises(UserError, match=expected) as err:
        sources.unpack_zip(archive, dest)
    assert str(archive) in str(err.value), "the message names the archive"
    assert not dest.exists() or not any(dest.rglob("*")), "nothing was extracted"
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_many_small_entries_bomb_is_refused(tmp_path, monkeypatch):
    """Entries each under the per-entry size floor, highly compressible in total."""
    monkeypatch.setattr(sources, "MAX_ZIP_SMALL_TOTAL", 2**20)
    archive = make_zip(tmp_path / "bomb.zip", [(f"cat.{i}.jpg", bytes(2**19)) for i in range(8)])
    with pytest.raises(UserError, match="zip bomb"):
        sources.unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_oversized_total_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_ZIP_TOTAL", 1000)
    archive = make_zip(tmp_path / "big.zip", [(f"cat.{i}.jpg", np.random.default_rng(i).bytes(600)) for i in range(2)])
    with pytest.raises(UserError, match=r"unpacks to 1200 bytes, over the 1000 byte limit"):
        sources.unpack_zip(archive, tmp_path / "out")


def test_corrupt_zip_is_a_user_error(tmp_path):
    archive = make_zip(tmp_path / "crc.zip", GOOD, method=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    data[200] ^= 0xFF  # inside the first entry's bytes: CRC mismatch on extraction
    archive.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"crc\.zip is not a valid zip archive"):
        sources.unpack_zip(archive, tmp_path / "out")


def test_truncated_zip_or_other_file_is_not_a_source(tmp_path):
    archive = make_zip(tmp_path / "cut.zip", GOOD)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(UserError, match=r"download.source: .*cut\.zip is neither a folder nor a zip archive"):
        sources.materialize_images(str(archive), tmp_path / "work")
    with pytest.raises(UserError, match=r"download.source: .*nowhere does not exist\. To run offline"):
        sources.materialize_images(str(tmp_path / "nowhere"), tmp_path / "work")


def test_nested_kaggle_zip_unpacks(tmp_path):
    inner = [(f"train/{label}.{i}.jpg", jpeg_bytes(label, i)) for label in ("cat", "dog") for i in range(3)]
    train_zip = make_zip(tmp_path / "train.zip", inner).read_bytes()
    test_zip = make_zip(tmp_path / "test1.zip", [("test1/1.jpg", jpeg_bytes("cat", 9))]).read_bytes()
    outer = make_zip(
        tmp_path / "dogs-vs-cats.zip",
        [("train.zip", train_zip), ("test1.zip", test_zip), ("sampleSubmission.csv", b"id,label\n")],
        method=zipfile.ZIP_STORED,
    )
    work = tmp_path / "work"
    work.mkdir()
    root = sources.materialize_images(str(outer), work)
    assert not list(root.rglob("train.zip")), "the inner train.zip is unpacked and removed"
    manifest, rejected = scan(root)
    assert sorted(manifest["file"]) == sorted(f"{label}.{i}.jpg" for label in ("cat", "dog") for i in range(3))
    # What is not a labelled image is listed with a reason, not silently dropped.
    assert set(rejected["path"]) == {"test1.zip", "sampleSubmission.csv"}
    assert rejected["reason"].str.contains("name is neither").all()


def test_nested_zip_is_checked_too(tmp_path):
    evil_inner = make_zip(tmp_path / "inner.zip", [("../../escaped.txt", b"x")]).read_bytes()
    outer = make_zip(tmp_path / "outer.zip", [("train.zip", evil_inner)])
    with pytest.raises(UserError, match="would unpack outside its folder"):
        sources.unpack_zip(outer, tmp_path / "out")
    assert not list(tmp_path.rglob("escaped.txt"))


# ---------------------------------------------------------------- downloads

PAYLOAD = np.random.default_rng(7).bytes(300_000)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/ok.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/short.bin":  # promises everything, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    with local_http_server(Handler) as url:
        yield url


@pytest.mark.network
def test_complete_download(server, tmp_path):
    dest = tmp_path / "file.bin"
    sources.download(f"{server}/ok.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest(), timeout=10)
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"], "no .part file left"


@pytest.mark.network
@pytest.mark.parametrize(
    "path, md5, expected",
    [
        ("/short.bin", None,
         r"could not download http://127\.0\.0\.1:\d+/short\.bin: incomplete: 100000 of 300000 bytes \(tried 4 times\)"),
        ("/ok.bin", "0" * 32, r"download of http://127\.0\.0\.1:\d+/ok\.bin has md5 [0-9a-f]{32}, expected 0{32}"),
        ("/missing.bin", None, r"could not download http://127\.0\.0\.1:\d+/missing\.bin: HTTP Error 404"),
    ],
    ids=["truncated", "wrong-md5", "404"],
)
def test_bad_download_leaves_nothing(server, tmp_path, path, md5, expected):
    dest = tmp_path / "file.bin"
    with pytest.raises(UserError, match=expected):
        sources.download(f"{server}{path}", dest, md5=md5, timeout=10)
    assert list(tmp_path.iterdir()) == [], "neither the destination nor a .part file exists"


@pytest.mark.network
def test_network_error_says_how_to_run_offline(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.h5"
    with pytest.raises(UserError) as err:
        sources.materialize_weights(url, tmp_path)
    message = str(err.value)
    assert f"could not download {url}" in message
    assert "refused" in message.lower()
    assert "offline" in message and "download.source=" in message and "download.vgg16_weights=" in message
    assert list(tmp_path.iterdir()) == []


def test_kaggle_failure_never_echoes_the_key(tmp_path, monkeypatch):
    secret = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", secret)

    class FakeApi:
        def authenticate(self):
            pass

        def competition_download_files(self, *args, **kwargs):
            raise RuntimeError(f"401 Unauthorized: bad credentials someone:{secret}")

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = FakeApi
    for name in ("kaggle", "kaggle.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    with pytest.raises(UserError) as err:
        sources.materialize_images("kaggle", tmp_path)
    message = str(err.value)
    assert secret not in message and "someone" not in message
    assert "Kaggle download failed (RuntimeError)" in message and "credentials" in message and "offline" in message


# ---------------------------------------------------------------- no code from data

STAGE_SOURCES = sorted((ROOT / "stages").rglob("*.py"))  # stages/lib, figures and tools too


def test_no_pickles_or_unsafe_model_loading_in_stages():
    for path in STAGE_SOURCES:
        text = path.read_text()
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{path.name}: {call}"
        for call in re.findall(r"load_model\([^)]*\)", text):
            assert "safe_mode=True" in call, f"{path.name}: {call}"
        assert not re.search(r"^\s*(import|from)\s+(pickle|dill|joblib)\b", text, re.M), path.name
        assert "yaml.load(" not in text and "yaml.unsafe_load" not in text, path.name
    assert any("np.load(" in p.read_text() for p in STAGE_SOURCES), "the check above saw a call"


def test_load_arrays_refuses_pickled_objects(tmp_path):
    from stages.lib.datasets import load_arrays

    path = tmp_path / "evil.npz"
    np.savez(path, images=np.array([object()], dtype=object))
    with pytest.raises(UserError, match=r"evil.npz is damaged or not an array file this project wrote "
                                        r"\(ValueError: Object arrays cannot be loaded when allow_pickle=False\)"):
        load_arrays(path)  # the pickle is never loaded: one line naming the file, no traceback


def test_load_arrays_names_a_truncated_or_bit_flipped_file(tmp_path):
    from stages.lib.datasets import load_arrays
    from stages.lib.outputs import save_npz

    path = tmp_path / "train.npz"
    save_npz(path, images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4, np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"train.npz is damaged .*run `dvc repro`"):
        load_arrays(path)
    flipped = bytearray(data)
    flipped[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    flipped[-30:] = bytes(30)  # the central directory too
    path.write_bytes(bytes(flipped))
    with pytest.raises(UserError, match=r"train.npz is damaged"):
        load_arrays(path)

"""Getting the raw images and the VGG16 weights from wherever the user points:
a local folder or file, a zip, an http(s) URL, or Kaggle; several of them tried in order.

Downloads go to a temporary file and are size- and hash-checked before use; transient
network failures are retried a bounded number of times; a download that stalls or takes
longer than its deadline is given up with a message. Archives are unpacked only after every
entry has been checked (no absolute paths, no `..`, no symlinks, no encrypted entries, no
zip bombs), against one budget for the whole extraction, nested archives included.
This is the only module that touches the network.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from stages.lib.outputs import disk_full_message, is_disk_full, require_free_space, visible_folder
from stages.lib.params import UserError

# Keras' own published hash of its notop VGG16 file (keras/src/applications/vgg16.py).
KERAS_VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KNOWN_MD5 = {KERAS_VGG16_NOTOP_URL: "6d6bbae143d832006294945121d1f1fc"}
PETIMAGES_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip"
)


@dataclass(frozen=True)
class KnownArchive:
    size: int
    sha256: str
    published_by: str


# Size and SHA-256 as TensorFlow Datasets publishes them for its cats_vs_dogs builder
# (tensorflow_datasets/url_checksums/cats_vs_dogs.txt, 4.9.x): a truncated or changed file
# is named, not unpacked.
KNOWN_ARCHIVES = {
    PETIMAGES_URL: KnownArchive(
        824_887_076, "b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9", "TensorFlow Datasets"
    ),
}

VGG16_NOTOP_PARAMS = 14_714_688


# What is wrong with the environment variables below, said when a download starts: they are
# read at import, where a UserError would escape run_stage as a traceback.
ENV_PROBLEMS: list[str] = []


def _env_number(name: str, default: float, *, minimum: float = 0, above: bool = False, integer: bool = False) -> float:
    """A limit that an environment variable may override (tests, very slow links)."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
        ok = math.isfinite(value) and (value > minimum if above else value >= minimum)
        ok = ok and (value.is_integer() or not integer)
    except ValueError:
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        ENV_PROBLEMS.append(f"environment variable {name}={raw!r} must be {kind} {'>' if above else '>='} {minimum:g} "
                            f"(unset it for the default, {default:g})")
        return default
    return int(value) if integer else value


# Downloads. A read that waits READ_TIMEOUT_S for a byte fails; a download that averages
# under MIN_BYTES_PER_S over any STALL_WINDOW_S stalls; none may take over DEADLINE_S.
# The PetImages zip (825 MB) needs 23 min at the minimum rate, so a working link never
# trips these; a server that drips a byte every few seconds does.
# Connecting and the response headers count too: headers (a few hundred bytes) not complete
# within STALL_WINDOW_S are a stall, and the deadline runs from the first connection.
READ_TIMEOUT_S = _env_number("CATSDOGS_DOWNLOAD_READ_TIMEOUT_S", 60, above=True)
MIN_BYTES_PER_S = _env_number("CATSDOGS_DOWNLOAD_MIN_BYTES_PER_S", 10 * 1024)
STALL_WINDOW_S = _env_number("CATSDOGS_DOWNLOAD_STALL_WINDOW_S", 60, above=True)
DEADLINE_S = _env_number("CATSDOGS_DOWNLOAD_DEADLINE_S", 3 * 3600, above=True)
# Transient failures (connection reset or refused, empty reply, cut transfer, stall, HTTP
# 408/429/5xx) are retried after 2, 4, 8 s; anything else (404, wrong hash) is final.
ATTEMPTS = _env_number("CATSDOGS_DOWNLOAD_ATTEMPTS", 4, minimum=1, integer=True)
BACKOFF_S = _env_number("CATSDOGS_DOWNLOAD_BACKOFF_S", 2)
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}

# Archives: limits on the whole extraction, nested archives included.
MAX_ZIP_TOTAL = 20 * 2**30  # 20 GiB unpacked: the Kaggle archive is under 1 GiB
MAX_ZIP_ENTRIES = 200_000  # PetImages holds 25 000 files, Kaggle's zips 37 500
MAX_ZIP_RATIO = 200  # JPEGs barely compress; a 1000:1 entry is a bomb
MAX_ZIP_SMALL_TOTAL = 64 * 2**20  # above this, the whole extraction must not expand MAX_ZIP_RATIO:1 either
MAX_ZIP_DEPTH = 3  # an archive, a train.zip inside it, one more for a re-zipped download
MAX_NAME_BYTES = 255  # one path component, as most file systems allow
MAX_PATH_BYTES = 1024

OFFLINE_HINT = (
    "To run offline, point the pipeline at a local copy, e.g. "
    "`dvc exp run -S download.source=PATH/TO/train -S download.vgg16_weights=PATH/TO/weights.h5`."
)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def project_root() -> Path:
    """The project's own root, also when DVC runs the stage in a temporary copy.

    `dvc exp run --temp` and the queue run stages in `.dvc/tmp/exps/.../<tmp>` of the
    project and set DVC_ROOT to the project; a plain `dvc repro` sets it to the working
    folder. Run by hand, the working folder is the root.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    parts = Path.cwd().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path.cwd()


def local_path(source: str) -> Path:
    """A local source path; a relative one is relative to the project root."""
    path = Path(source).expanduser()
    return path if path.is_absolute() else project_root() / path


# ---------------------------------------------------------------- downloads


@dataclass
class Downloaded:
    """A finished download and what the server said about it."""

    path: Path
    url: str
    content_type: str
    size: int

    def describe(self) -> str:
        return f"{self.content_type or 'no content type'}, {self.size} bytes"


class TransientError(Exception):
    """A failure that may not happen again: worth another attempt."""


class _Watchdog:
    """Shuts the connection down when a time limit passes. Socket timeouts restart with
    every byte, so without this a server that sends its status line or headers a byte at a
    time, or one byte per READ_TIMEOUT_S of body, would never be given up on."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.fired: str | None = None  # why it fired: "stall" or "deadline"
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float, why: str) -> None:
        self.cancel()
        self._timer = threading.Timer(max(seconds, 0), self._fire, [why])
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()

    def _fire(self, why: str) -> None:
        self.fired = why
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener, with connections that hand their socket to the watchdog."""

    def watched(base):
        class Connection(base):
            def connect(self):
                super().connect()
                watchdog.sock = self.sock

        return Connection

    http_connection, https_connection = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_connection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_connection, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def content_length(headers) -> int | None:
    """The Content-Length a server promised, or None when absent or malformed (`abc`, `-5`):
    like http.client, the body is then read to the end, and the zip check judges it."""
    raw = (headers.get("Content-Length") or "").strip()
    return int(raw) if re.fullmatch(r"[0-9]+", raw) else None


def download(
    url: str,
    dest: Path,
    md5: str | None = None,
    timeout: float | None = None,
    known: KnownArchive | None = None,
) -> Downloaded:
    """Stream `url` into `dest` via `dest.part`, retrying transient failures; check the
    length, and the md5 or the known size and SHA-256 when given."""
    if ENV_PROBLEMS:
        raise UserError(ENV_PROBLEMS[0])
    known = known or KNOWN_ARCHIVES.get(url)
    deadline = time.monotonic() + DEADLINE_S
    last = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _download_once(url, dest, md5, timeout or READ_TIMEOUT_S, known, deadline)
        except TransientError as e:
            last = str(e)
            wait = BACKOFF_S * 2 ** (attempt - 1)
            if attempt == ATTEMPTS or time.monotonic() + wait >= deadline:
                break
            print(f"download: {url}: {last}; attempt {attempt} of {ATTEMPTS}, retrying in {wait:g} s", flush=True)
            time.sleep(wait)
    tries = f" (tried {attempt} times)" if attempt > 1 else ""
    raise UserError(f"could not download {url}: {last}{tries}. {OFFLINE_HINT}")


def _download_once(
    url: str, dest: Path, md5: str | None, timeout: float, known: KnownArchive | None, deadline: float
) -> Downloaded:
    tmp = dest.with_name(dest.name + ".part")
    md5_digest, sha256_digest = hashlib.md5(), hashlib.sha256()
    received = 0
    expected = None
    started = time.monotonic()
    watchdog = _Watchdog()

    def too_slow() -> UserError:
        return UserError(
            f"download of {url} not finished after {DEADLINE_S:g} s ({received} bytes received); "
            f"the server is too slow. {OFFLINE_HINT}"
        )

    def gave_up() -> Exception | None:
        """The error for a read the watchdog ended, or None if it did not fire."""
        if watchdog.fired == "deadline":
            return too_slow()
        if watchdog.fired == "stall":
            return TransientError(
                f"stalled: no complete response (status line and headers) within {STALL_WINDOW_S:g} s of connecting"
            )
        return None

    try:
        remaining = deadline - started
        # Headers get the stall window (when the stall rule is on) and the deadline; the body
        # keeps the deadline here and the throughput rule below.
        header_limit = min(remaining, STALL_WINDOW_S) if MIN_BYTES_PER_S > 0 else remaining
        watchdog.arm(header_limit, "stall" if header_limit < remaining else "deadline")
        try:
            response = _opener(watchdog).open(url, timeout=min(timeout, max(remaining, 0.1)))
        except BaseException:
            if problem := gave_up():
                raise problem from None
            raise
        if problem := gave_up():  # headers cut short by the watchdog: what came is not a response
            response.close()
            raise problem
        watchdog.arm(deadline - time.monotonic(), "deadline")
        with response, open(tmp, "wb") as out:
            expected = content_length(response.headers)
            content_type = response.headers.get("Content-Type", "")
            if known and expected is not None and expected != known.size:
                raise UserError(
                    f"{url} now serves {expected} bytes, but the archive {known.published_by} published is "
                    f"{known.size} bytes: the file has changed or moved; use another download.source"
                )
            window = [(started, 0)]  # (time, bytes received) samples for the stall rule
            # read1: whatever has arrived, so the clock is checked even when bytes trickle in.
            while block := response.read1(1 << 16):
                out.write(block)
                md5_digest.update(block)
                sha256_digest.update(block)
                received += len(block)
                now = time.monotonic()
                if now > deadline:
                    raise too_slow()
                window.append((now, received))
                while len(window) > 2 and now - window[1][0] >= STALL_WINDOW_S:
                    window.pop(0)
                elapsed, got = now - window[0][0], received - window[0][1]
                if elapsed >= STALL_WINDOW_S and got < MIN_BYTES_PER_S * elapsed:
                    raise TransientError(
                        f"stalled: {got} bytes in the last {elapsed:.3g} s, under the minimum of "
                        f"{MIN_BYTES_PER_S:g} bytes/s"
                    )
        if watchdog.fired:  # the body's end was the watchdog's doing
            raise too_slow()
        if expected is not None and received != expected:
            raise TransientError(f"incomplete: {received} of {expected} bytes")
        if md5 and md5_digest.hexdigest() != md5:
            raise UserError(f"download of {url} has md5 {md5_digest.hexdigest()}, expected {md5}")
        if known and (received != known.size or sha256_digest.hexdigest() != known.sha256):
            raise UserError(
                f"download of {url} is {received} bytes with SHA-256 {sha256_digest.hexdigest()}, but the archive "
                f"{known.published_by} published is {known.size} bytes with SHA-256 {known.sha256}: "
                "it is truncated or has changed; not unpacking it"
            )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        if e.code in TRANSIENT_HTTP:
            raise TransientError(f"HTTP Error {e.code}: {e.reason}") from None
        raise UserError(f"could not download {url}: HTTP Error {e.code}: {e.reason}. {OFFLINE_HINT}") from None
    except http.client.IncompleteRead as e:
        if watchdog.fired:
            raise too_slow() from None
        raise TransientError(f"the connection closed mid-transfer after {received + len(e.partial)} bytes") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        if watchdog.fired:
            raise too_slow() from None
        if is_disk_full(e) or (isinstance(e, urllib.error.URLError) and is_disk_full(e.reason)):
            # Not the network: no retry, and no offline hint (a local copy needs space too).
            raise UserError(f"download of {url}: {disk_full_message(dest, expected)}") from None
        if isinstance(e, OSError) and e.filename is not None:  # writing the .part file: not the network
            raise UserError(f"could not write into {visible_folder(dest)}/ while downloading {url}: {e.strerror}") from None
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        after = f" after {received} bytes" if received else ""
        raise TransientError(f"{reason or type(e).__name__}{after}") from None
    finally:
        watchdog.cancel()
        tmp.unlink(missing_ok=True)
    return Downloaded(dest, url, content_type.split(";")[0].strip(), received)


# ---------------------------------------------------------------- archives


@dataclass
class UnpackBudget:
    """What one extraction may still unpack, across nested archives: the limits hold for
    the whole download, so three nested bombs under the per-archive limit are one bomb."""

    packed: int  # bytes of the outermost archive, the base of the ratio rule
    unpacked: int = 0
    entries: int = 0
    archives: list[str] = field(default_factory=list)

    def charge(self, name: str, entries: int, unpacked: int) -> None:
        self.entries += entries
        self.unpacked += unpacked
        nested = " (nested archives included)" if len(self.archives) > 1 else ""
        if self.entries > MAX_ZIP_ENTRIES:
            raise UserError(f"{name}: {self.entries} entries{nested}, over the limit of {MAX_ZIP_ENTRIES}")
        if self.unpacked > MAX_ZIP_TOTAL:
            raise UserError(f"{name}: unpacks to {self.unpacked} bytes{nested}, over the {MAX_ZIP_TOTAL} byte limit")
        if self.unpacked > MAX_ZIP_SMALL_TOTAL and self.unpacked / max(self.packed, 1) > MAX_ZIP_RATIO:
            # Many entries, each under the per-entry floor, or nested archives: still a bomb.
            raise UserError(
                f"{name}: {self.entries} entries{nested} expand {self.unpacked // max(self.packed, 1)}:1 to "
                f"{self.unpacked} bytes, refusing a likely zip bomb"
            )


def check_zip(archive: zipfile.ZipFile, name: str, budget: UnpackBudget | None = None) -> None:
    """Refuse an archive with an unsafe entry before anything is unpacked."""
    infos = archive.infolist()
    if budget is None:
        budget = UnpackBudget(packed=sum(i.compress_size for i in infos), archives=[name])
    for info in infos:
        path = info.filename
        parts = Path(path.replace("\\", "/")).parts  # a Windows-made `..\\x` climbs too
        if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":") or ".." in parts:
            raise UserError(f"{name}: refusing entry '{path}' that would unpack outside its folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{name}: refusing symbolic link entry '{path}'")
        if info.flag_bits & 0x1:
            raise UserError(
                f"{name}: entry '{path}' is encrypted (password-protected); unpack the archive yourself "
                "and point download.source at the folder"
            )
        longest = max((len(p.encode()) for p in parts), default=0)
        if longest > MAX_NAME_BYTES or len(path.encode()) > MAX_PATH_BYTES:
            raise UserError(
                f"{name}: entry '{path[:60]}...' has a name too long to unpack "
                f"({len(path.encode())} bytes; limits: {MAX_NAME_BYTES} per folder or file name, {MAX_PATH_BYTES} in all)"
            )
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 2**20:
            raise UserError(
                f"{name}: entry '{path}' expands {info.file_size // info.compress_size}:1, "
                "refusing a likely zip bomb"
            )
    budget.charge(name, len(infos), sum(i.file_size for i in infos))


def unpack_zip(zip_path: Path, dest: Path, budget: UnpackBudget | None = None, *, name: str | None = None,
               depth: int = 1) -> None:
    """Unpack a checked zip into dest; a Kaggle `train.zip` inside is unpacked too, up to
    MAX_ZIP_DEPTH archives deep (depth, not count: side-by-side train.zips are one level),
    all within one budget.

    name: what messages call the archive, the source as the user wrote it (a URL, or a path)
    and for a nested one `outer -> path/inside/train.zip`: the unpacked copy is temporary.
    """
    name = name or str(zip_path)
    if budget is None:
        budget = UnpackBudget(packed=zip_path.stat().st_size)
    budget.archives.append(name)
    if depth > MAX_ZIP_DEPTH:
        raise UserError(f"{name}: archives nested {depth} deep (limit {MAX_ZIP_DEPTH}), refusing to unpack further")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            check_zip(archive, name, budget)
            needed = sum(i.file_size for i in archive.infolist())
            for info in archive.infolist():
                _extract(archive, info, name, dest, needed)
    except zipfile.BadZipFile as e:
        raise UserError(f"{name} is not a valid zip archive: {e}") from None
    # Kaggle's dogs-vs-cats.zip holds train.zip (labelled) and test1.zip (unlabelled). A
    # folder that happens to be called train.zip is a folder.
    for inner in sorted(p for p in dest.rglob("train.zip") if p.is_file()):
        inside = inner.relative_to(dest).as_posix()
        unpack_zip(inner, inner.with_suffix(""), budget, name=f"{name} -> {inside}", depth=depth + 1)
        inner.unlink()


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, dest: Path, needed: int) -> None:
    """Extract one checked entry; whatever goes wrong names the archive and the entry."""
    entry = info.filename
    again = "download it again or use another download.source"
    try:
        archive.extract(info, dest)
    except zipfile.BadZipFile as e:
        raise UserError(f"{name} is not a valid zip archive: entry '{entry}': {e}; {again}") from None
    except (zlib.error, EOFError) as e:
        raise UserError(f"{name}: entry '{entry}' has corrupt compressed data ({e}); {again}") from None
    except NotImplementedError as e:
        raise UserError(
            f"{name}: entry '{entry}' uses a compression method Python cannot read ({e}); "
            "unpack the archive yourself and point download.source at the folder"
        ) from None
    except RuntimeError as e:  # zipfile's word for encrypted entries its header check missed
        raise UserError(f"{name}: entry '{entry}' cannot be unpacked: {e}") from None
    except OSError as e:
        if is_disk_full(e):
            raise UserError(f"unpacking {name}: {disk_full_message(dest, needed)}") from None
        raise UserError(f"{name}: cannot unpack entry '{entry}': {e.strerror or e}") from None


# ---------------------------------------------------------------- sources


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


def refuse_project_folders(source: str, path: Path) -> None:
    """A local source must not be the project, hold it, or lie in its data/: the pipeline
    would train on its own outputs (data/split/images) and scan .git and .dvc."""
    path = path.resolve()
    roots = {project_root().resolve(), Path.cwd().resolve()}  # differ under `dvc exp run --temp`
    for root in roots:
        if path == root or path in root.parents:
            raise UserError(f"download.source: {source} is the project folder or contains it ({root}); "
                            "point it at the folder of the images only")
        if path == root / "data" or (root / "data") in path.parents:
            raise UserError(f"download.source: {source} is inside the project's data/ folder, which the pipeline "
                            "writes; keep the source images outside data/")


def materialize_images(source: str, workdir: Path) -> Path:
    """Return a local folder holding the source's images (unpacked into workdir if needed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    fetched = None
    if source == "kaggle":
        archive = fetch_kaggle(workdir)
    elif is_url(source):
        fetched = download(source, workdir / "source.zip")
        archive = fetched.path
    else:
        path = local_path(source)
        if not path.exists():
            looked = "" if Path(source).expanduser().is_absolute() else f" (looked in {path})"
            raise UserError(f"download.source: {source} does not exist{looked}. {OFFLINE_HINT}")
        refuse_project_folders(source, path)
        if path.is_dir():
            return path
        archive = path
    if not zipfile.is_zipfile(archive):
        if fetched:  # the temporary file is gone by the time anyone reads the message: name the URL
            with open(archive, "rb") as f:
                head = f.read(512).lstrip().lower()
            looks = " (an HTML page)" if head.startswith((b"<!doctype html", b"<html")) else ""
            raise UserError(
                f"download.source: {source} returned {fetched.describe()}{looks}, which is not a zip "
                "archive (or one cut short); check the URL or use another download.source"
            )
        raise UserError(f"download.source: {source} is neither a folder nor a zip archive")
    unpacked = workdir / "unpacked"
    unpack_zip(archive, unpacked, name="Kaggle's dogs-vs-cats.zip" if source == "kaggle" else source)
    if fetched:
        archive.unlink()  # unpacked: free the space before the next step copies the images
    return unpacked


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Where each downloaded weights file came from: messages name the URL, not the temporary file.
_DOWNLOADED_FROM: dict[Path, str] = {}


def materialize_weights(source: str, workdir: Path) -> Path:
    """Return a local path of the weights file (downloaded into workdir if a URL)."""
    if is_url(source):
        name = source.rsplit("/", 1)[-1] or "weights.h5"
        if not name.endswith(".h5"):
            name += ".h5"  # Keras picks the reader by the name; anything else fails below anyway
        fetched = download(source, workdir / name, md5=KNOWN_MD5.get(source))
        with open(fetched.path, "rb") as f:
            head = f.read(512)
        if not head.startswith(HDF5_SIGNATURE):
            looks = " (an HTML page)" if head.lstrip().lower().startswith((b"<!doctype html", b"<html")) else ""
            raise UserError(f"download.vgg16_weights: {source} returned {fetched.describe()}{looks}, which is not "
                            "an HDF5 (.h5) weights file; check the URL or use another download.vgg16_weights")
        _DOWNLOADED_FROM[fetched.path.resolve()] = source
        return fetched.path
    path = local_path(source)
    if not path.is_file():
        looked = "" if Path(source).expanduser().is_absolute() else f" (looked in {path})"
        raise UserError(f"download.vgg16_weights: {source} is not a file{looked}. {OFFLINE_HINT}")
    if path.suffix != ".h5":
        raise UserError(f"download.vgg16_weights: {source} is not an .h5 weights file")
    return path


def convert_vgg16_weights(src: Path, dst: Path) -> None:
    """Load a VGG16 notop weights file (Keras 3 `.weights.h5` or legacy `.h5`) into the
    real architecture, which proves it fits, and save it in Keras 3 format at dst."""
    import keras  # TensorFlow takes seconds to import: only once the images are done

    src = Path(src)
    shown = _DOWNLOADED_FROM.get(src.resolve(), src)
    try:
        # Keras picks the reader by file name: *.weights.h5 is its own format, any other
        # *.h5 the legacy (Keras 2) format, which is what Keras' URL serves; so the name
        # a file is downloaded under matters.
        conv_base = keras.applications.VGG16(weights=None, include_top=False)
        conv_base.load_weights(str(src))
    except Exception as e:
        raise UserError(f"download.vgg16_weights: {shown} is not a VGG16 notop weights file: {e}") from None
    if conv_base.count_params() != VGG16_NOTOP_PARAMS:
        raise UserError(f"download.vgg16_weights: {shown} has {conv_base.count_params()} params, expected {VGG16_NOTOP_PARAMS}")
    # h5py has crashed the interpreter (segfault) after a write failed for want of space:
    # check first. float32 weights plus a margin for HDF5's own structures.
    require_free_space(dst, VGG16_NOTOP_PARAMS * 4 + 4 * 2**20)
    try:
        conv_base.save_weights(str(dst))
    except OSError as e:
        if is_disk_full(e):
            raise UserError(disk_full_message(dst, VGG16_NOTOP_PARAMS * 4)) from None
        raise

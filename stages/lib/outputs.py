"""Atomic output writing: a crash leaves the old output or none, never a half-written one.

Every file is written to a temporary name beside its target and renamed into place
(`os.replace` is atomic on one file system); directories are built in a temporary sibling
and swapped in the same way. Temporaries are named `.<target name>.*` beside the target, so a
rerun can recognise and remove what a killed run left (`remove_leftovers`). Outputs get
the permissions the user's umask gives any new file or folder, not the owner-only mode of
a temporary, so teammates on a shared machine can read them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from stages.lib.params import UserError

# A full disk, or a full quota: the same fix (free space), never worth a retry.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def visible_folder(path: Path | str) -> Path:
    """The folder to name in a message about `path`: its nearest ancestor that is not one of
    this project's temporaries (`.<name>.*`, `data/.download-*`), which are gone by the time
    anyone reads the message."""
    path = Path(path)
    try:
        parts = path.resolve().relative_to(Path.cwd().resolve()).parts
    except ValueError:  # outside the project: name it as it is
        return path.parent
    kept = []
    for part in parts[:-1]:
        if part.startswith("."):
            break
        kept.append(part)
    return Path(*kept) if kept else Path(".")


def disk_full_message(path: Path | str, needed: int | None = None) -> str:
    """One line for a write to `path` that found no space: the folder, what is free and,
    when known, how much the write needed."""
    folder = visible_folder(path)
    probe = Path(folder).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = f", {needed} bytes needed" if needed else ""
    return (f"no space left on the disk that holds {folder}/ ({free} bytes free{need}): "
            "free some space and rerun")


def require_free_space(path: Path | str, needed: int) -> None:
    """Refuse before writing `needed` bytes at `path` when the disk cannot hold them: some
    writers (h5py) crash rather than fail cleanly on a full disk."""
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if shutil.disk_usage(probe).free < needed:
        raise UserError(disk_full_message(path, needed))


def umask() -> int:
    # The only way to read the umask is to set it: put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_normal_mode(path: Path) -> None:
    """The mode `open()` / `mkdir()` would have given `path` (mkstemp and mkdtemp use 0o600/0o700)."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


def leftovers(target: Path | str) -> list[Path]:
    """Temporaries of `target` that a killed run left beside it (`.<name>.*`)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{target.name}.*"))


def remove_leftovers(*targets: Path | str) -> list[Path]:
    """Remove what killed runs left beside these outputs; return what was removed."""
    removed = []
    for path in (p for t in targets for p in leftovers(t)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it onto `target`.

    `suffix` keeps an extension that a writer insists on (Keras wants `.keras`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        give_normal_mode(tmp)
        os.replace(tmp, target)
    except OSError as e:
        if is_disk_full(e):  # the temporary goes (finally); the old output stays
            raise UserError(disk_full_message(target)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `target` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        give_normal_mode(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:
        if is_disk_full(e):
            raise UserError(disk_full_message(target)) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path | str, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path | str, frame) -> None:
    """Write a pandas DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_npz(path: Path | str, **arrays) -> None:
    """Like `np.savez` (uncompressed, read by `np.load`), but atomic and byte-for-byte
    reproducible: `np.savez` stamps every member with the current time, so the same data
    saved a second later gives a different file (and a different DVC hash)."""
    import zipfile

    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def save_figure(path: Path | str, fig) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)

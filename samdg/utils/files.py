"""Atomic file writing: every file samdg writes appears whole or not at all.

A temp file is written in the destination folder and moved into place with ``os.replace``, which is atomic on
POSIX file systems, so a killed process never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)

# Errors of the file system a user can fix (read-only folder, full disk, a file where a folder should be).
_USER_FIXABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EEXIST,
                        errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; a file in the way or a read-only place is a SamdgError."""
    from samdg.errors import SamdgError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir(exist_ok=True) raises this only when a non-folder holds the name
        raise SamdgError(f"{folder}: is a file, not a folder; choose another output folder") from None
    except OSError as error:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise SamdgError(f"{folder}: cannot create the folder, {blocker} is a file") from None
        raise SamdgError(f"{folder}: cannot create the folder ({error.strerror or error})") from None
    return folder


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; on success it is renamed onto ``destination``.

    ``suffix`` keeps file-type detection working for writers that look at the extension (e.g. ``.nii.gz``);
    by default the destination's own multi-part suffix is reused. A folder that cannot be written to (read-only,
    full, a file in the way) is a SamdgError naming ``destination``; nothing is left behind.
    """
    from samdg.errors import SamdgError

    destination = Path(destination)
    make_folder(destination.parent)
    if suffix is None:
        suffix = "".join(destination.suffixes) or ".tmp"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix, dir=destination.parent)
    except OSError as error:
        raise SamdgError(f"{destination}: cannot write ({error.strerror or error})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, destination)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in _USER_FIXABLE_ERRNOS:
            raise SamdgError(f"{destination}: cannot write ({error.strerror or error})") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(destination: str | os.PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(destination: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(destination, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def atomic_write_json(destination: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write JSON atomically; numpy scalars/arrays and paths are converted; key order is kept."""
    atomic_write_text(destination, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(destination: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(destination, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing, unreadable, non-UTF-8 or malformed file is a SamdgError naming it."""
    from samdg.errors import SamdgError

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SamdgError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise SamdgError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise SamdgError(f"{path}: not valid JSON (not UTF-8 text: byte {e.start} is 0x{e.object[e.start]:02x})") from None
    except OSError as e:  # a folder with that name, no read permission, an I/O error
        raise SamdgError(f"{path}: cannot be read ({e.strerror or e})") from None


def save_report(out: str | os.PathLike, result: Any, table: str) -> None:
    """A benchmark's figures: JSON at ``out`` and the Markdown table beside it (``.md``), then the table printed."""
    out = Path(out)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), table)
    print(table)

"""Atomic file writing: every file samdg writes appears whole or not at all.

A temp file is written in the destination folder and moved into place with ``os.replace``, which is atomic on
POSIX file systems, so a killed process never leaves a half-written output behind. Temp files are named
``.<name>.samdg-<pid>-<random><suffix>``: the process id lets a rerun remove the ones a killed run left
(:func:`remove_stale_temp_files`) without touching those of a live writer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from samdg.errors import SamdgError

_UMASK = os.umask(0)
os.umask(_UMASK)

# Errors of the file system a user can fix (read-only folder, full disk, a file where a folder should be).
_USER_FIXABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EEXIST,
                        errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# Below this many free bytes a failed write is taken for a full disk: numpy (OSError "... requested and ... written",
# no errno) and torch.save (RuntimeError "file write failed") do not say why they failed.
_FULL_DISK_BYTES = 1 << 20
_TEMP_NAME = re.compile(r"^\..+\.samdg-(?P<pid>\d+)-[A-Za-z0-9_]+(\.[A-Za-z0-9]+)*$")


class NoSpaceLeft(SamdgError):
    """A write failed because the file system (or the user's quota) is full; no partial file was left."""


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; a file in the way or a read-only place is a SamdgError."""
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
    destination = Path(destination)
    make_folder(destination.parent)
    if suffix is None:
        suffix = "".join(destination.suffixes) or ".tmp"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.samdg-{os.getpid()}-", suffix=suffix,
                                        dir=destination.parent)
    except OSError as error:
        if error.errno in _NO_SPACE_ERRNOS:
            raise NoSpaceLeft(no_space_message(destination)) from None
        raise SamdgError(f"{destination}: cannot write ({error.strerror or error})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, destination)
    except (OSError, RuntimeError) as error:
        full = is_out_of_space(error, destination.parent)  # asked before the temp file frees its space
        tmp.unlink(missing_ok=True)
        if full:
            raise NoSpaceLeft(no_space_message(destination)) from None
        if isinstance(error, OSError) and error.errno in _USER_FIXABLE_ERRNOS:
            raise SamdgError(f"{destination}: cannot write ({error.strerror or error})") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_out_of_space(error: BaseException, folder: str | os.PathLike) -> bool:
    """Whether a failed write into ``folder`` failed for lack of space: ENOSPC/EDQUOT anywhere in the exception's
    chain, or (writers that drop the errno) less than 1 MiB left on that file system."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < _FULL_DISK_BYTES
    except OSError:
        return False


def no_space_message(destination: str | os.PathLike) -> str:
    """The one line for a full disk (or an exhausted quota) while writing ``destination``."""
    destination = Path(destination)
    return (f"no space left on {destination.parent} (writing {destination.name}); free some space and rerun, "
            "finished outputs are kept")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files (see :func:`atomic_path`) in ``folder`` whose writing process is no longer alive.

    Only samdg's own pattern ``.<name>.samdg-<pid>-<random><suffix>`` directly in ``folder`` is touched; a file of
    a process that still runs on this machine is kept. Returns the files removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not process_alive(int(match.group("pid"))):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SamdgError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise SamdgError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        byte = e.object[e.start]
        raise SamdgError(f"{path}: not valid JSON (not UTF-8 text: byte {e.start} is 0x{byte:02x})") from None
    except OSError as e:  # a folder with that name, no read permission, an I/O error
        raise SamdgError(f"{path}: cannot be read ({e.strerror or e})") from None


def save_report(out: str | os.PathLike, result: Any, table: str) -> None:
    """A benchmark's figures: JSON at ``out`` and the Markdown table beside it (``.md``), then the table printed."""
    out = Path(out)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), table)
    print(table)

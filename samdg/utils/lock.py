"""One samdg run per output folder: an exclusive lock on ``<folder>/.samdg.lock``.

Training takes it on its fold folder, prediction on its output folder, so a second run into the same folder stops
with one line naming the holder (pid, host, start time, command) instead of both overwriting each other's files.

The lock is ``fcntl.flock`` on the lock file: the kernel drops it when the holder dies in any way (SIGKILL, crash,
power off), so a lock never outlives its process. The file's content (JSON: pid, host, start time, command) only
serves the message; the holder deletes the file when it is done. Orphaned child processes of a killed run (which
inherit the lock) do not block a rerun: a lock whose recorded holder is a dead process on this host is taken over.
On network file systems ``flock`` works where the server supports locks (NFSv4 does).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from samdg.errors import SamdgError
from samdg.utils.files import NoSpaceLeft, make_folder, no_space_message, process_alive

LOCK_NAME = ".samdg.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, remove_if_unused: bool = True) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the duration of the ``with`` block.

    Raises:
        SamdgError: another live samdg run holds it (the message names its pid, host, start time and command).

    On leaving (normally, on an error or on Ctrl-C) the lock file is removed, and so is the folder when it was
    created here and nothing else was written into it (``remove_if_unused``): a run that fails before writing leaves
    no empty folder behind (nor the empty parents it created).
    """
    folder = Path(folder)
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # innermost first
    make_folder(folder)
    path = folder / LOCK_NAME
    try:
        descriptor = _acquire(path, folder)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding the lock: a waiting run then locks a fresh file (see _acquire)
        os.close(descriptor)
        if remove_if_unused:
            _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders (innermost first) as long as they are empty."""
    with contextlib.suppress(OSError):
        for folder in folders:
            folder.rmdir()  # fails, and stops, at the first folder that holds something


def _acquire(path: Path, folder: Path) -> int:
    """Lock ``path`` and write this process's details into it; returns the open descriptor."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            if _is_stale(holder) and _same_file(descriptor, path):
                os.close(descriptor)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # held only by orphans of a dead run: the next pass locks a new file
                continue
            os.close(descriptor)
            raise SamdgError(f"{folder}: in use by another samdg run ({_describe(holder)}); wait for it to finish or "
                             "stop it, or choose another folder") from None
        except OSError as error:
            os.close(descriptor)
            raise SamdgError(f"{path}: cannot lock the folder ({error.strerror or error})") from None
        if not _same_file(descriptor, path):  # the previous holder removed the file between our open and lock
            os.close(descriptor)
            continue
        try:
            _write_holder(descriptor)
        except OSError as error:  # a full disk, most likely
            path.unlink(missing_ok=True)  # still ours: we hold its lock
            os.close(descriptor)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpaceLeft(no_space_message(path)) from None
            raise SamdgError(f"{path}: cannot write ({error.strerror or error})") from None
        return descriptor


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.fstat(descriptor).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _write_holder(descriptor: int) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"}
    data = json.dumps(record).encode("utf-8")
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, data, 0)


def _read_holder(descriptor: int) -> dict:
    try:
        record = json.loads(os.pread(descriptor, 65536, 0).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # being written right now, or damaged
        return {}
    return record if isinstance(record, dict) else {}


def _is_stale(holder: dict) -> bool:
    """The recorded holder is a process of this host that no longer exists (its orphans may still hold the lock)."""
    pid = holder.get("pid")
    return isinstance(pid, int) and holder.get("host") == socket.gethostname() and not process_alive(pid)


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
            f"command: {holder.get('command')}")

"""The folder lock: a second run is refused naming the first; a dead holder's lock is taken over; released on exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import samdg
from samdg.errors import SamdgError
from samdg.utils.lock import LOCK_NAME, folder_lock

# Holds the lock of argv[1] until its stdin closes; with argv[2] == "fork" a child inherits the lock and outlives
# the parent (as orphaned loader workers of a killed run would). Prints "locked <pid of the child or 0>".
HOLDER = """
import os, sys
from samdg.utils.lock import folder_lock
with folder_lock(sys.argv[1]):
    child = os.fork() if sys.argv[2] == "fork" else 0
    if child == 0 and sys.argv[2] == "fork":
        sys.stdin.read()
        os._exit(0)
    print("locked", child, flush=True)
    sys.stdin.read()
"""


def _start_holder(folder: Path, mode: str = "plain") -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(samdg.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    word, child = process.stdout.readline().split()
    assert word == "locked"
    return process, int(child)


def test_a_second_run_is_refused_with_the_holders_pid_host_and_start(tmp_path):
    folder = tmp_path / "fold_0"
    holder, _ = _start_holder(folder)
    try:
        with pytest.raises(SamdgError) as error:
            with folder_lock(folder):
                pass
        message = str(error.value)
        assert message.startswith(f"{folder}: in use by another samdg run (pid {holder.pid} on {socket.gethostname()}, "
                                  "started 20")
        assert "\n" not in message
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (folder / LOCK_NAME).exists(), "the holder removes its lock file on exit"
    with folder_lock(folder):
        assert (folder / LOCK_NAME).is_file()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    holder, _ = _start_holder(folder)
    holder.kill()
    holder.wait()
    assert (folder / LOCK_NAME).is_file(), "a killed holder cannot remove its lock file"
    with folder_lock(folder):
        assert f'"pid": {os.getpid()}' in (folder / LOCK_NAME).read_text()


def test_orphans_of_a_killed_run_do_not_keep_the_folder_locked(tmp_path):
    folder = tmp_path / "out"
    holder, child = _start_holder(folder, "fork")
    try:
        holder.kill()  # the child still holds the inherited lock; the recorded holder is dead
        holder.wait()
        with folder_lock(folder):
            assert f'"pid": {os.getpid()}' in (folder / LOCK_NAME).read_text()
    finally:
        os.kill(child, signal.SIGKILL)


def test_released_on_error_and_an_unused_new_folder_is_removed(tmp_path):
    folder = tmp_path / "model" / "fold_0"
    with pytest.raises(ValueError):
        with folder_lock(folder):
            raise ValueError("the run failed before writing anything")
    assert not (tmp_path / "model").exists()
    with pytest.raises(ValueError):
        with folder_lock(folder):
            (folder / "plans.json").write_text("{}")
            raise ValueError("the run failed after writing")
    assert [p.name for p in folder.iterdir()] == ["plans.json"]


def test_a_full_disk_while_taking_the_lock_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def full(descriptor, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    folder = tmp_path / "new" / "fold_0"
    with pytest.raises(SamdgError, match=f"^no space left on {folder} \\(writing {LOCK_NAME}\\)"):
        with folder_lock(folder):
            pass
    assert not (tmp_path / "new").exists()

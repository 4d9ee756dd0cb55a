import errno
import os
import stat
import tempfile

import numpy as np
import pytest

from samdg.errors import SamdgError
from samdg.utils.files import atomic_path, atomic_save_npy, atomic_write_json, load_json, make_folder


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "outputs" / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(target.parent.iterdir()) == []


def test_outputs_get_normal_permissions(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(2)})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert load_json(tmp_path / "a.json") == {"x": 1.5, "y": [0, 1]}


def test_npy_and_bad_json(tmp_path):
    atomic_save_npy(tmp_path / "a.npy", np.ones(3))
    assert np.load(tmp_path / "a.npy").sum() == 3
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SamdgError, match="bad.json: not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_json_that_is_not_text_or_not_a_file(tmp_path):
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(SamdgError, match="binary.json: not valid JSON \\(not UTF-8 text"):
        load_json(tmp_path / "binary.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(SamdgError, match="folder.json: cannot be read"):
        load_json(tmp_path / "folder.json")


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(SamdgError, match="out: is a file, not a folder"):
        make_folder(tmp_path / "out")
    with pytest.raises(SamdgError, match="out/sub: cannot create the folder, .*out is a file"):
        make_folder(tmp_path / "out" / "sub")
    with pytest.raises(SamdgError, match="out: is a file, not a folder"):
        atomic_write_json(tmp_path / "out" / "a.json", {})
    assert (tmp_path / "out").read_text() == "a file"


def test_unwritable_folder_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    # A read-only folder cannot be made for root (the tests may run as root), so the refusal is simulated.
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    out = make_folder(tmp_path / "out")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SamdgError, match="a.json: cannot write \\(Read-only file system\\)"):
        atomic_write_json(out / "a.json", {})
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SamdgError, match="b.json: cannot write"):
        atomic_write_json(out / "b.json", {})
    assert list(out.iterdir()) == []


def _full_disk(monkeypatch):
    """The file system reports no free bytes (what a write that ran out of space leaves behind)."""
    import shutil

    from samdg.utils import files

    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 0))


def test_numpy_running_out_of_space_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    # numpy's writer raises OSError("... requested and ... written") without an errno when the disk is full
    def full(file, array, allow_pickle=True):
        with open(file, "wb") as handle:
            handle.write(b"\x93NUMPY partial")
        raise OSError("24 requested and 14 written")

    _full_disk(monkeypatch)
    monkeypatch.setattr(np, "save", full)
    with pytest.raises(SamdgError) as error:
        atomic_save_npy(tmp_path / "out" / "case.npy", np.ones(3))
    assert str(error.value).startswith(f"no space left on {tmp_path / 'out'} (writing case.npy)")
    assert "\n" not in str(error.value)
    assert list((tmp_path / "out").iterdir()) == [], "no partial or temp file is left"


def test_enospc_is_one_line_even_with_free_space_reported(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SamdgError, match=f"no space left on {out} \\(writing a.json\\)"):
        with atomic_path(out / "a.json") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(out.iterdir()) == []


def test_other_writer_errors_are_not_taken_for_a_full_disk(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="cannot pickle"):
        with atomic_path(out / "a.pth") as tmp:
            tmp.write_text("half")
            raise RuntimeError("cannot pickle this object")
    assert list(out.iterdir()) == []


def test_temp_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from samdg.utils.files import remove_stale_temp_files

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    with atomic_path(tmp_path / "checkpoint_latest.pth", suffix=".pth") as tmp:
        live = tmp.name  # this process's own temp file, being written right now
        dead = tmp_path / live.replace(f"samdg-{os.getpid()}-", f"samdg-{dead_pid}-")
        dead.write_bytes(b"left by a killed run")
        foreign = tmp_path / ".checkpoint_latest.pth.user-notes.pth"  # not samdg's pattern
        foreign.write_text("mine")
        assert remove_stale_temp_files(tmp_path) == [dead]
        assert (tmp_path / live).exists() and foreign.exists() and not dead.exists()
        tmp.write_text("done")
    assert (tmp_path / "checkpoint_latest.pth").read_text() == "done"

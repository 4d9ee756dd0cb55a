import errno
import os
import stat
import tempfile

import numpy as np
import pytest

from samdg.utils.files import atomic_path, atomic_save_npy, atomic_write_json, load_json, make_folder
from samdg.errors import SamdgError


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

import os
import stat

import numpy as np
import pytest

from samdg.utils.files import atomic_path, atomic_save_npy, atomic_write_json, load_json
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

"""Damaged checkpoint files: one clear line naming the file, never a torch traceback."""

from __future__ import annotations

import pytest
import torch

from samdg.errors import SamdgError
from samdg.training.checkpoint import FORMAT_VERSION, load_checkpoint, load_model_state


def _state(module: torch.nn.Module) -> dict:
    return {"format_version": FORMAT_VERSION, "method": "sam", "method_settings": {},
            "labels": {"background": 0, "a": 1}, "variant": "tiny_vit_test", "input_size": 64,
            "model_state": module.state_dict()}


def test_empty_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save(_state(torch.nn.Linear(4, 2)), path)
    whole = path.read_bytes()
    for content, message in ((b"", "checkpoint file is empty"),
                             (whole[: len(whole) // 2], "not a readable samdg checkpoint: the file is truncated"),
                             (b"garbage\n", "not a readable samdg checkpoint")):
        path.write_bytes(content)
        with pytest.raises(SamdgError, match=message) as error:
            load_checkpoint(path)
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_checkpoint_without_the_weights(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    state = _state(torch.nn.Linear(4, 2))
    del state["model_state"], state["variant"]
    torch.save(state, path)
    message = "checkpoint_final.pth: incomplete samdg checkpoint, it lacks variant, model_state"
    with pytest.raises(SamdgError, match=message):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_model(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    state = _state(torch.nn.Linear(4, 2))
    del state["model_state"]["bias"]
    with pytest.raises(SamdgError, match="weights do not fit the sam model .*1 missing weight\\(s\\) \\(e.g. bias\\)"):
        load_model_state(torch.nn.Linear(4, 2), state, path)
    state = _state(torch.nn.Linear(4, 3))
    with pytest.raises(SamdgError, match="weights do not fit .*size mismatch for weight") as error:
        load_model_state(torch.nn.Linear(4, 2), state, path)
    assert "\n" not in str(error.value)
    load_model_state(torch.nn.Linear(4, 3), state, path)  # a fitting state loads


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    import shutil

    from samdg.training import checkpoint
    from samdg.utils import files

    def full(state, path):  # what torch.save raises when the disk fills up mid-file
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 partial zip")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 4096))
    folder = tmp_path / "fold_0"
    with pytest.raises(SamdgError) as error:
        checkpoint.save_checkpoint(folder / "checkpoint_latest.pth", _state(torch.nn.Linear(4, 2)))
    assert str(error.value) == (f"no space left on {folder} (writing checkpoint_latest.pth); free some space and "
                                "rerun, finished outputs are kept")
    assert list(folder.iterdir()) == []

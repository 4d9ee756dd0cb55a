"""The disk embedding cache's key follows the code that computes the features, and its folder is swept of temp
files a killed run left."""

from __future__ import annotations

import torch

from samdg.training.embedding_cache import (
    FEATURE_CODE,
    AugmentedViewCache,
    EmbeddingCache,
    cache_key,
    code_version,
)

# A process id above Linux's largest (2**22): never a live writer.
DEAD_PID = 99999999


def _package(root, name: str, files: dict[str, str]) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for file, text in files.items():
        (folder / file).write_text(text)


def test_code_version_changes_with_the_source_of_a_module_or_package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "h6_fake_augment", {"gin.py": "SCALE = 1\n"})
    (tmp_path / "h6_fake_encoder.py").write_text("WIDTH = 8\n")
    modules = ("h6_fake_augment", "h6_fake_encoder")
    before = code_version(modules)
    assert code_version(modules) == before

    (tmp_path / "h6_fake_augment" / "gin.py").write_text("SCALE = 2\n")  # a file inside the package
    after_package = code_version(modules)
    assert after_package != before
    (tmp_path / "h6_fake_encoder.py").write_text("WIDTH = 16\n")  # a single module
    assert code_version(modules) not in (before, after_package)


def test_cache_key_holds_the_code_version_of_the_feature_code():
    description = {"variant": "tiny_vit_test", "input_size": 64}
    assert cache_key(description) == cache_key(description, code=code_version())
    assert cache_key(description, code="a" * 16) != cache_key(description, code="b" * 16)
    # the augmentation and encoder code are among what the version hashes
    assert {"samdg.models", "samdg.preprocessing.sam_input", "samdg.training.dataset",
            "samdg.training.dg_augmentations", "samdg.training.augmentation"} <= set(FEATURE_CODE)


def test_opening_a_disk_cache_removes_stale_temp_files_only(tmp_path):
    folder = tmp_path / "key"
    folder.mkdir()
    stale = folder / f".slice_0.pt.samdg-{DEAD_PID}-abc123.pt"
    stale.write_bytes(b"half")
    entry = folder / "slice_0_0a1b2c3d.pt"
    torch.save({"embedding": torch.zeros(2)}, entry)

    EmbeddingCache("disk", (), folder)
    assert not stale.exists() and entry.exists()

    round_folder = tmp_path / "views" / "round_0"
    round_folder.mkdir(parents=True)
    stale_view = round_folder / f".v.pt.samdg-{DEAD_PID}-xyz789.pt"
    stale_view.write_bytes(b"half")
    AugmentedViewCache("disk", (), views=2, refresh_epochs=0, folder=tmp_path / "views")
    assert not stale_view.exists()

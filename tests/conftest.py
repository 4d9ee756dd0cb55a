"""Shared fixtures: every test gets its own SAMDG_* roots, so nothing touches a user's data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The real CT/MR pair lives in ../shared beside the checkout (CI clones main with shared/ beside it);
# SAMDG_TEST_DATA points elsewhere, e.g. for a clone made somewhere else.
SHARED_DATA = Path(os.environ.get("SAMDG_TEST_DATA") or
                   Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg_ct_mr")

# One intra-op thread per test process: the suite runs two processes (pytest -n 2) on two cores, and
# oversubscribed torch threads spin and slow everything down many times over.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def samdg_roots(tmp_path, monkeypatch):
    roots = {}
    for kind in ("raw", "preprocessed", "results", "weights"):
        folder = tmp_path / f"samdg_{kind}"
        folder.mkdir()
        monkeypatch.setenv(f"SAMDG_{kind}", str(folder))
        roots[kind] = folder
    return roots


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"the shared test data is missing: {SHARED_DATA}")
    return SHARED_DATA

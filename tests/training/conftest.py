"""A tiny synthetic dataset, planned and preprocessed once per session for the tiny TinyViT variant.

Two domains (siteA, siteB) x 5 training cases of 6 slices of 36x36 px, three classes (liver, kidney, spleen).
Each test gets its own copy in its own SAMDG_preprocessed root (see tests/conftest.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATASET = "Dataset901_Synth"
VARIANT = "tiny_tinyvit_test"


@pytest.fixture(scope="session")
def _preprocessed_once(tmp_path_factory) -> Path:
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess

    base = tmp_path_factory.mktemp("synthetic901")
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("raw", "preprocessed", "results", "weights"):
            (base / kind).mkdir()
            patch.setenv(f"SAMDG_{kind}", str(base / kind))
        make_synthetic_dataset(base / "raw" / DATASET, num_domains=2, cases_per_domain=5, test_cases_per_domain=0,
                               shape=(32, 32, 6))
        plan_and_preprocess(DATASET, variant=VARIANT, progress=False, log=lambda message: None)
    return base


@pytest.fixture
def synthetic_dataset(_preprocessed_once, samdg_roots) -> str:
    """The dataset's preprocessed (and raw) folders copied into this test's roots; returns its name."""
    for kind in ("raw", "preprocessed"):
        shutil.copytree(_preprocessed_once / kind / DATASET, samdg_roots[kind] / DATASET)
    return DATASET


def make_quick_args(**changes):
    """TrainingArgs for a few seconds of CPU training on the synthetic dataset."""
    from samdg.training.config import TrainingArgs

    values = dict(dataset=DATASET, method="sam", fold="0", epochs=2, iters_per_epoch=3, batch_size=2, device="cpu",
                  num_workers=0, progress_bar=False, overrides={"training.augmentation": "none"})
    values.update(changes)
    return TrainingArgs(**values)


@pytest.fixture
def quick_args():
    return make_quick_args

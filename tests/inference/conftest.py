"""A tiny synthetic two-domain dataset, planned, preprocessed and trained once per session (1 CPU iteration).

The model is a real ``sam`` method on the tiny random ViT variant, trained on siteA by the real trainer, so the
predictor is tested against the real results layout, checkpoint format and plans copy. Tests that need the
SAMDG_* roots of this session use the ``session_roots`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

DATASET = "Dataset941_PredictSynth"
VARIANT = "tiny_vit_test"


@dataclass(frozen=True)
class TrainedSynthetic:
    base: Path
    raw: Path
    fold_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.fold_dir.parent

    @property
    def images_ts(self) -> Path:
        return self.raw / "imagesTs"


@pytest.fixture(scope="session")
def trained_synthetic(tmp_path_factory) -> TrainedSynthetic:
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training import TrainingArgs, results_fold_dir, train

    base = tmp_path_factory.mktemp("predict941")
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("raw", "preprocessed", "results", "weights"):
            (base / kind).mkdir()
            patch.setenv(f"SAMDG_{kind}", str(base / kind))
        make_synthetic_dataset(base / "raw" / DATASET, num_domains=2, cases_per_domain=2, test_cases_per_domain=1,
                               shape=(32, 32, 6))
        plan_and_preprocess(DATASET, variant=VARIANT, progress=False, log=lambda message: None)
        train(TrainingArgs(dataset=DATASET, method="sam", fold="all", epochs=1, iters_per_epoch=1, device="cpu",
                           source_domains=["siteA"], num_workers=0, progress_bar=False, final_validation=False,
                           overrides={"training.augmentation": "none"}))
        fold_dir = results_fold_dir(DATASET, "sam", "all", ["siteA"])
    return TrainedSynthetic(base, base / "raw" / DATASET, fold_dir)


@pytest.fixture
def session_roots(monkeypatch, trained_synthetic) -> TrainedSynthetic:
    """The trained dataset, with this test's SAMDG_* variables pointing at the session's roots."""
    for kind in ("raw", "preprocessed", "results", "weights"):
        monkeypatch.setenv(f"SAMDG_{kind}", str(trained_synthetic.base / kind))
    return trained_synthetic

"""The saved plans of a dataset. Planning and preprocessing a dataset (``plan_and_preprocess``) is in
:mod:`samdg.preprocessing.api`, above both stages.
"""

from __future__ import annotations

from pathlib import Path

from samdg.errors import SamdgError
from samdg.paths import preprocessed_dataset_dir, resolve_dataset_name
from samdg.planning.plans import PLANS_NAME, Plans

PLANS_FILE = f"{PLANS_NAME}.json"


def load_plans(dataset: str | int) -> Plans:
    """The saved plans of a dataset (``$SAMDG_preprocessed/DatasetXXX/samdgPlans.json``)."""
    path = Path(preprocessed_dataset_dir(resolve_dataset_name(dataset))) / PLANS_FILE
    if not path.is_file():
        raise SamdgError(f"{path}: not found; run samdg_plan_and_preprocess -d {dataset} first")
    return Plans.load(path)

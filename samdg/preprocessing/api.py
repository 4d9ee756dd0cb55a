"""Plan and preprocess one dataset: integrity check -> fingerprint -> plans -> preprocessed cases.

Outputs in ``$SAMDG_preprocessed/DatasetXXX_Name/``: ``dataset.json`` (copy), ``dataset_fingerprint.json``,
``samdgPlans.json`` and ``samdgPlans_2d/`` (see :mod:`samdg.preprocessing.runner`). Nothing is written when the
integrity check fails, and a folder this run created is removed again if it fails before finishing a case.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from samdg.dataset.integrity import check_integrity_or_raise
from samdg.dataset.raw import load_raw_dataset
from samdg.paths import preprocessed_dataset_dir, raw_dataset_dir, resolve_dataset_name
from samdg.planning.api import PLANS_FILE
from samdg.planning.fingerprint import load_or_compute_fingerprint
from samdg.planning.planner import choose_variant, plan_experiment, plan_summary
from samdg.planning.plans import Plans
from samdg.preprocessing.runner import preprocess_dataset
from samdg.utils.files import atomic_write_json, make_folder


def plan_and_preprocess(dataset: str | int, num_processes: int = 1, clean: bool = False, verify_only: bool = False,
                        variant: str | None = None, checkpoint: str | None = None, gpu_memory_gb: float | None = None,
                        overrides: dict[str, Any] | None = None, preprocess: bool = True, progress: bool = True,
                        log: Callable[[str], None] = print) -> Plans | None:
    """Run every stage for one dataset; returns the plans (None with ``verify_only``)."""
    name = resolve_dataset_name(dataset)
    # A mistyped --variant or --checkpoint should not wait for the integrity check and the fingerprint.
    choose_variant(variant, checkpoint, log=lambda *decision: None)
    raw = load_raw_dataset(raw_dataset_dir(name))
    check_integrity_or_raise(raw)
    log(f"{name}: integrity check passed ({len(raw.training_cases)} training cases, "
        f"{len(raw.domain_names)} domain(s))")
    if verify_only:
        return None
    output = Path(preprocessed_dataset_dir(name))
    created_here = not output.exists()
    make_folder(output)
    try:
        fingerprint = load_or_compute_fingerprint(raw, output, num_processes, clean, progress, log)
        plans = plan_experiment(fingerprint, raw.json, variant, checkpoint, gpu_memory_gb, overrides)
        atomic_write_json(output / "dataset.json", raw.json)
        plans.save(output / PLANS_FILE)
        log(plan_summary(plans))
        log(f"Plans written to {output / PLANS_FILE}")
        if preprocess:
            result = preprocess_dataset(raw, plans, output, num_processes, clean, progress, log)
            log(f"Preprocessed {len(result['processed'])} case(s) into {result['folder']}")
    except BaseException:
        # A failed first run leaves nothing behind; once a case is finished, the folder is kept so a rerun resumes.
        if created_here and not any(output.glob("*/*.json")):
            shutil.rmtree(output, ignore_errors=True)
        raise
    return plans

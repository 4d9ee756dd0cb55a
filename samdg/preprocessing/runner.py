"""Preprocess every training case of a dataset into ``$SAMDG_preprocessed/DatasetXXX/samdgPlans_2d/``.

Per case: ``{case}.npy`` (C,S,H,W float32), ``{case}_seg.npy`` (1,S,H,W int16) and ``{case}.json`` (properties),
each written atomically, the JSON last: its presence marks a finished case. A rerun skips cases whose JSON carries
the current plans' preprocessing hash, so an interrupted run resumes and a changed plan redoes exactly the cases
it affects. Temp files left by a killed run are removed on the next start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from samdg.dataset.raw import Case, RawDataset
from samdg.imageio import read_case, read_label
from samdg.planning.plans import Plans
from samdg.preprocessing.parallel import run_parallel
from samdg.preprocessing.pipeline import preprocess_case
from samdg.utils.files import atomic_save_npy, atomic_write_json, make_folder


def case_files(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    """(data .npy, seg .npy, properties .json) of one preprocessed case."""
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def is_case_done(folder: Path, case_id: str, plans_hash: str) -> bool:
    data, seg, properties = case_files(folder, case_id)
    if not (properties.is_file() and data.is_file()):
        return False
    try:
        return json.loads(properties.read_text()).get("plans_hash") == plans_hash
    except (OSError, json.JSONDecodeError):
        return False


def _remove_stale_temp_files(folder: Path) -> None:
    """atomic_path writes '.{name}.XXXX{suffix}' next to the target; a killed run may leave some behind."""
    for path in folder.glob(".*"):
        if path.is_file() and (path.name.endswith(".npy") or path.name.endswith(".json")):
            path.unlink(missing_ok=True)


def preprocess_training_case(job: tuple[Case, Plans, str]) -> str:
    """Worker: read, preprocess and store one case; returns its id."""
    case, plans, folder = job
    image, geometry = read_case(case.image_paths)
    label = read_label(case.label_path)[0] if case.label_path else None
    data, seg, properties = preprocess_case(image, geometry, plans, label)
    properties = {"case_id": case.case_id, "domain": case.domain, **properties}
    data_path, seg_path, properties_path = case_files(Path(folder), case.case_id)
    properties_path.unlink(missing_ok=True)  # an old JSON must not vouch for new arrays while they are written
    atomic_save_npy(data_path, data)
    if seg is not None:
        atomic_save_npy(seg_path, seg.astype(np.int16, copy=False))
    atomic_write_json(properties_path, properties)
    return case.case_id


def preprocess_dataset(raw: RawDataset, plans: Plans, output_folder: str | Path, num_processes: int = 1,
                       clean: bool = False, progress: bool = True, log=print) -> dict[str, Any]:
    """Preprocess the training cases of ``raw`` into ``output_folder/plans.data_identifier``.

    Returns ``{"folder", "processed": [...], "skipped": [...]}``.
    """
    folder = Path(output_folder) / plans.data_identifier
    if clean and folder.exists():
        shutil.rmtree(folder)
    make_folder(folder)
    _remove_stale_temp_files(folder)
    plans_hash = plans.preprocessing_hash()
    cases = [raw.training_cases[k] for k in sorted(raw.training_cases)]
    todo = [c for c in cases if not is_case_done(folder, c.case_id, plans_hash)]
    skipped = [c.case_id for c in cases if c not in todo]
    if skipped:
        log(f"{len(skipped)} of {len(cases)} cases already preprocessed with this plan; skipped")
    if not todo:
        return {"folder": str(folder), "processed": [], "skipped": skipped}
    jobs = [(c, plans, str(folder)) for c in todo]
    processed = list(run_parallel(preprocess_training_case, jobs, num_processes, progress, "preprocess"))
    return {"folder": str(folder), "processed": sorted(processed), "skipped": skipped}

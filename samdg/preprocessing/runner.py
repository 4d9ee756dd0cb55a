"""Preprocess every training case of a dataset into ``$SAMDG_preprocessed/DatasetXXX/samdgPlans_2d/``.

Per case: ``{case}.npy`` (C,S,H,W float32), ``{case}_seg.npy`` (1,S,H,W int16) and ``{case}.json`` (properties),
each written atomically, the JSON last: its presence marks a finished case. The JSON records the size, shape and
dtype of both arrays (:mod:`.stored_arrays`). A rerun skips cases whose JSON carries the current plans'
preprocessing hash and whose arrays still match their record, so an interrupted run resumes, a changed plan
redoes exactly the cases it affects, and a truncated or damaged array is redone. Temp files left by a killed run
are removed on the next start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from samdg.dataset.raw import Case, RawDataset
from samdg.errors import SamdgError
from samdg.imageio import read_case, read_label
from samdg.planning.plans import Plans
from samdg.preprocessing.pipeline import preprocess_case
from samdg.preprocessing.stored_arrays import npy_problem, npy_record
from samdg.utils.files import atomic_save_npy, atomic_write_json, make_folder
from samdg.utils.pool import run_parallel


def case_files(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    """(data .npy, seg .npy, properties .json) of one preprocessed case."""
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def is_case_done(folder: Path, case_id: str, plans_hash: str) -> bool:
    """The case's JSON carries ``plans_hash`` and every array it records is still complete and unchanged."""
    data, seg, properties = case_files(folder, case_id)
    if not (properties.is_file() and data.is_file()):
        return False
    try:
        stored = json.loads(properties.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = stored.get("files") if isinstance(stored, dict) else None
    if stored.get("plans_hash") != plans_hash or not isinstance(files, dict) or "data" not in files:
        return False
    paths = {"data": data, "seg": seg}
    return all(kind in paths and npy_problem(paths[kind], record) is None for kind, record in files.items())


def _refuse_blank_image(case: Case, data: np.ndarray, seg: np.ndarray | None, ignore_label: int | None) -> None:
    """A normalised image that is zero everywhere while its label holds foreground teaches nothing but noise (e.g.
    an MR image of two values, whose nonzero voxels give a zero-width window); the integrity check only sees raw
    intensities, so this is the last place to catch it."""
    if seg is None or data.any():
        return
    if np.any(~np.isin(np.unique(seg), [0, ignore_label if ignore_label is not None else 0])):
        raise SamdgError(f"{', '.join(case.image_paths)}: the image is blank after intensity normalisation (one value "
                         f"everywhere), but its label {case.label_path} holds foreground; fix or remove case "
                         f"{case.case_id}")


def _remove_stale_temp_files(folder: Path) -> None:
    """atomic_path writes '.{name}.XXXX{suffix}' next to the target; a killed run may leave some behind."""
    for path in folder.glob(".*"):
        if path.is_file() and (path.name.endswith(".npy") or path.name.endswith(".json")):
            path.unlink(missing_ok=True)


def preprocess_training_case(job: tuple[Case, Plans, str, int | None]) -> str:
    """Worker: read, preprocess and store one case; returns its id."""
    case, plans, folder, ignore_label = job
    image, geometry = read_case(case.image_paths)
    label = read_label(case.label_path)[0] if case.label_path else None
    data, seg, properties = preprocess_case(image, geometry, plans, label)
    _refuse_blank_image(case, data, seg, ignore_label)
    properties = {"case_id": case.case_id, "domain": case.domain, **properties}
    data_path, seg_path, properties_path = case_files(Path(folder), case.case_id)
    properties_path.unlink(missing_ok=True)  # an old JSON must not vouch for new arrays while they are written
    atomic_save_npy(data_path, data)
    properties["files"] = {"data": npy_record(data_path)}
    if seg is not None:
        atomic_save_npy(seg_path, seg.astype(np.int16, copy=False))
        properties["files"]["seg"] = npy_record(seg_path)
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
    jobs = [(c, plans, str(folder), raw.labels.ignore_label) for c in todo]
    processed = list(run_parallel(preprocess_training_case, jobs, num_processes, progress, "preprocess",
                                  names=[c.case_id for c in todo]))
    return {"folder": str(folder), "processed": sorted(processed), "skipped": skipped}

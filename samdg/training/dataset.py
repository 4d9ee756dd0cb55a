"""The preprocessed training cases of a dataset, read lazily through memory maps.

Layout (written by ``samdg.preprocessing``): ``$SAMDG_preprocessed/DatasetXXX/<data_identifier>/`` holds per case
``{case}.npy`` (C,S,H,W float32 in [0,1]), ``{case}_seg.npy`` (1,S,H,W int16) and ``{case}.json`` (properties,
written last: a case without it is unfinished and ignored). A 2D dataset is a set of single-slice volumes.
Loading checks every array against the size, shape and dtype its JSON records, so a damaged file is named in one
line before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samdg.errors import SamdgError, one_line
from samdg.preprocessing.stored_arrays import npy_problem
from samdg.utils.files import load_json


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, SyntaxError) as error:  # what numpy raises for a damaged or truncated file
        raise SamdgError(f"{path}: cannot be read ({one_line(error)}); rerun samdg_plan_and_preprocess for this "
                         "dataset to redo it") from None


@dataclass
class PreprocessedCase:
    case_id: str
    folder: Path
    properties: dict
    _slices_with_label: dict[int, list[int]] | None = field(default=None, repr=False)

    @property
    def data_path(self) -> Path:
        return self.folder / f"{self.case_id}.npy"

    @property
    def seg_path(self) -> Path:
        return self.folder / f"{self.case_id}_seg.npy"

    @property
    def domain(self) -> str:
        return str(self.properties.get("domain", "default"))

    def data(self) -> np.ndarray:
        """(C,S,H,W) float32, memory-mapped."""
        return _load_npy(self.data_path)

    def seg(self) -> np.ndarray:
        """(1,S,H,W) int16, memory-mapped."""
        return _load_npy(self.seg_path)

    def problems(self) -> list[str]:
        """Why the case's arrays cannot be trusted (each naming its file); empty when they match their record."""
        records = self.properties.get("files") or {}
        found = [(path, npy_problem(path, records.get(kind)))
                 for kind, path in (("data", self.data_path), ("seg", self.seg_path))]
        return [f"{path}: {problem}" for path, problem in found if problem]

    @property
    def num_slices(self) -> int:
        return int(self.seg().shape[1])

    def slices_with_label(self) -> dict[int, list[int]]:
        """Foreground label value -> indices of the slices that contain it (from the properties when present)."""
        if self._slices_with_label is None:
            stored = self.properties.get("slices_with_label")
            if isinstance(stored, dict):
                table = {int(k): sorted(int(s) for s in v) for k, v in stored.items()}
            else:
                seg = np.asarray(self.seg()[0])
                table = {}
                for value in np.unique(seg):
                    if value > 0:
                        table[int(value)] = np.nonzero((seg == value).any(axis=(1, 2)))[0].tolist()
            self._slices_with_label = {k: v for k, v in table.items() if k > 0 and v}
        return self._slices_with_label


def load_preprocessed_cases(folder: Path, ignore_label: int | None = None,
                            hint: str = "") -> dict[str, PreprocessedCase]:
    """Every finished training case in ``folder`` (data, label and properties present).

    ``hint`` is appended to the error when nothing is there (e.g. the command that preprocesses the dataset).
    The ignore label is dropped from the foreground-slice table, so oversampling never aims at it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SamdgError(f"{folder}: no preprocessed data{hint}")
    cases = {}
    for properties_path in sorted(folder.glob("*.json")):
        case_id = properties_path.stem
        case = PreprocessedCase(case_id, folder, load_json(properties_path))
        if not case.data_path.is_file():
            continue
        if not case.seg_path.is_file():
            continue  # an unlabelled case cannot be trained on
        problems = case.problems()
        if problems:
            raise SamdgError(f"{problems[0]}; rerun samdg_plan_and_preprocess for this dataset to redo it")
        if ignore_label is not None:
            case._slices_with_label = {k: v for k, v in case.slices_with_label().items() if k != ignore_label}
        cases[case_id] = case
    if not cases:
        raise SamdgError(f"{folder}: no finished preprocessed training case (data, _seg and .json){hint}")
    return cases

"""What an evaluation needs besides the two folders: labels, domains and file ending (from dataset.json), and the
pairing of reference and prediction files by case id.

dataset.json is looked for, in this order: the raw dataset named with ``-d``; the prediction folder (samdg_predict
copies it there); the parent of the reference folder (``labelsTr/..`` or ``labelsTs/..``). Without one, the labels
are the union of the values found in the files and every case is in domain ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from samdg.dataset.raw import DEFAULT_DOMAIN
from samdg.errors import SamdgError
from samdg.imageio import SUPPORTED_ENDINGS
from samdg.labels import LabelSpec
from samdg.utils.files import load_json


@dataclass
class EvaluationSetup:
    """Labels, domains and file ending for one evaluation, and where they came from.

    Attributes:
        label_spec: the classes to evaluate; None means "every value found in the files".
        domains: case id -> domain name (empty: every case is in ``DEFAULT_DOMAIN``).
        file_ending: e.g. ``.nii.gz``; None means "detect from the reference folder".
        dataset_json: the dataset.json used, if any.
        notes: lines to tell the user (where labels/domains came from).
    """

    label_spec: LabelSpec | None = None
    domains: dict[str, str] = field(default_factory=dict)
    file_ending: str | None = None
    dataset_json: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_dataset_json(reference_dir: str | Path, prediction_dir: str | Path,
                      dataset: str | int | None = None) -> Path | None:
    """The dataset.json to use (see the module docstring for the order); None when there is none."""
    if dataset is not None:
        from samdg.paths import raw_dataset_dir, resolve_dataset_name

        path = raw_dataset_dir(resolve_dataset_name(dataset)) / "dataset.json"
        if not path.is_file():
            raise SamdgError(f"{path}: dataset.json of dataset '{dataset}' not found")
        return path
    for candidate in (Path(prediction_dir) / "dataset.json", Path(reference_dir).resolve().parent / "dataset.json"):
        if candidate.is_file():
            return candidate
    return None


def setup_from_dataset_json(path: str | Path | None) -> EvaluationSetup:
    """Read labels, regions, ignore label, file ending and the optional ``domains`` map of a dataset.json."""
    if path is None:
        return EvaluationSetup(notes=["no dataset.json found: labels are the values present in the files and all "
                                      f"cases are in domain '{DEFAULT_DOMAIN}'"])
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or "labels" not in data:
        raise SamdgError(f"{path}: must be a JSON object with a 'labels' entry")
    spec = LabelSpec.from_dataset_json(data["labels"], data.get("regions_class_order"), str(path))
    ending = data.get("file_ending")
    if ending is not None and ending not in SUPPORTED_ENDINGS:
        raise SamdgError(f"{path}: file_ending '{ending}' is not supported ({', '.join(SUPPORTED_ENDINGS)})")
    domains = data.get("domains", {})
    if not isinstance(domains, dict) or not all(isinstance(v, str) for v in domains.values()):
        raise SamdgError(f"{path}: 'domains' must map case ids to domain names (strings)")
    notes = [f"labels and domains from {path}"]
    if not domains:
        notes.append(f"{path} has no 'domains' map: all cases are in domain '{DEFAULT_DOMAIN}'")
    return EvaluationSetup(spec, dict(domains), ending, path, notes)


def detect_file_ending(folder: str | Path) -> str:
    """The one supported file ending used by the files of ``folder`` (several or none is an error)."""
    folder = Path(folder)
    found = {_ending_of(p.name) for p in _visible_files(folder)} - {None}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise SamdgError(f"{folder}: no label files with a supported ending ({', '.join(SUPPORTED_ENDINGS)})")
    raise SamdgError(f"{folder}: files with several endings ({', '.join(sorted(found))}); "
                     "pass --file-ending or provide a dataset.json with 'file_ending'")


@dataclass
class Pairing:
    """Reference/prediction files matched by case id (sorted), plus the unmatched case ids of either side."""

    pairs: list[tuple[str, Path, Path]]
    missing_predictions: list[str]
    unreferenced_predictions: list[str]


def pair_files(references: dict[str, Path], prediction_dir: str | Path, file_ending: str) -> Pairing:
    """Match each reference (case id -> file) with ``<case><file_ending>`` in the prediction folder."""
    predictions = _cases(Path(prediction_dir), file_ending)
    pairs = [(case, Path(references[case]), predictions[case]) for case in sorted(references) if case in predictions]
    return Pairing(pairs, sorted(set(references) - set(predictions)), sorted(set(predictions) - set(references)))


def reference_files(reference_dir: str | Path, file_ending: str) -> dict[str, Path]:
    """The ``<case><file_ending>`` files of a reference folder, by case id."""
    references = _cases(Path(reference_dir), file_ending)
    if not references:
        raise SamdgError(f"{reference_dir}: no reference files ending in {file_ending}")
    return references


def check_folders(reference_dir: str | Path, prediction_dir: str | Path) -> None:
    """Both folders must exist (the error says which one is missing)."""
    for folder, what in ((reference_dir, "reference (-ref)"), (prediction_dir, "prediction (-pred)")):
        if not Path(folder).is_dir():
            raise SamdgError(f"{folder}: {what} folder not found")


def _cases(folder: Path, ending: str) -> dict[str, Path]:
    return {p.name[: -len(ending)]: p for p in _visible_files(folder) if p.name.endswith(ending)}


def _visible_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SamdgError(f"{folder}: folder not found")
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _ending_of(name: str) -> str | None:
    lowered = name.lower()
    return next((e for e in SUPPORTED_ENDINGS if lowered.endswith(e)), None)

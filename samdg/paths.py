"""Where samdg keeps raw datasets, preprocessed data, trained models and SAM weights.

``SAMDG_raw``, ``SAMDG_preprocessed``, ``SAMDG_results`` and ``SAMDG_weights`` set the four roots. When one is
unset a local default under ``./samdg_data/`` is used and said once on the console. ``SAMDG_raw`` may point at an
existing ``nnUNet_raw`` folder: the raw layout is the same.

Raw data is read-only: ``SAMDG_preprocessed`` and ``SAMDG_results`` must lie apart from ``SAMDG_raw`` (neither
equal to it, inside it, nor containing it), which :func:`preprocessed_root` and :func:`results_root` check before
any caller can write; :func:`check_output_folder` does the same for a folder the user names (``samdg_predict -o``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from samdg.errors import SamdgError

DEFAULT_BASE = Path("samdg_data")
_ROOTS = {"raw": "SAMDG_raw", "preprocessed": "SAMDG_preprocessed", "results": "SAMDG_results",
          "weights": "SAMDG_weights"}
_announced: set[str] = set()


def _root(kind: str, announce: bool = True) -> Path:
    variable = _ROOTS[kind]
    value = os.environ.get(variable)
    if value:
        return Path(value).expanduser()
    default = (DEFAULT_BASE / kind).resolve()
    if announce and variable not in _announced:
        _announced.add(variable)
        print(f"samdg: {variable} is not set; using {default}", file=sys.stderr)
    return default


def raw_root() -> Path:
    return _root("raw")


def preprocessed_root() -> Path:
    return _checked_apart_from_raw("preprocessed")


def results_root() -> Path:
    return _checked_apart_from_raw("results")


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, after resolving symbolic links and ``..``."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _raw_to_protect() -> Path | None:
    """SAMDG_raw when set; else the local default when it exists (an unset variable with no raw data there
    protects nothing, and must not refuse e.g. SAMDG_results=. for a user who only predicts)."""
    raw = _root("raw", announce=False)
    return raw if os.environ.get(_ROOTS["raw"]) or raw.exists() else None


def _checked_apart_from_raw(kind: str) -> Path:
    """The root of ``kind``; a SamdgError when it is SAMDG_raw, lies inside it or contains it (writes would land
    in, or next to and over, the raw datasets)."""
    root, raw = _root(kind), _raw_to_protect()
    if raw is not None and (is_within(root, raw) or is_within(raw, root)):
        relation = ("is" if is_within(raw, root) else "lies inside") if is_within(root, raw) else "contains"
        raise SamdgError(f"{_ROOTS[kind]}={root} {relation} SAMDG_raw={raw}; raw data is read-only, so point "
                         f"{_ROOTS[kind]} at a folder apart from the raw data")
    return root


def check_output_folder(folder: str | os.PathLike, option: str, input_folders: tuple[Path, ...] = ()) -> None:
    """Refuse an output folder that would write into raw data: equal to or inside ``SAMDG_raw``, or equal to,
    inside or containing one of ``input_folders`` (outputs land next to, and dataset.json over, the inputs)."""
    raw = _raw_to_protect()
    if raw is not None and is_within(folder, raw):
        raise SamdgError(f"{option} {folder}: lies inside SAMDG_raw={raw}; raw data is read-only, choose an output "
                         "folder outside it")
    for inputs in input_folders:
        if is_within(folder, inputs):
            raise SamdgError(f"{option} {folder}: lies inside the input folder {inputs}; input data is read-only, "
                             "choose an output folder outside it")
        if is_within(inputs, folder):
            raise SamdgError(f"{option} {folder}: contains the input folder {inputs}; input data is read-only, "
                             "choose an output folder outside it")


def weights_root() -> Path:
    return _root("weights")


_DATASET_FOLDER = re.compile(r"^Dataset(\d{3,})_(.+)$")


def dataset_id_of(name: str) -> int:
    """``Dataset005_Prostate`` -> 5 (ids may have more than three digits)."""
    match = _DATASET_FOLDER.match(name)
    if not match:
        raise SamdgError(f"'{name}' is not a dataset folder name of the form DatasetXXX_Name")
    return int(match.group(1))


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def resolve_dataset_name(id_or_name: str | int) -> str:
    """Turn ``5``, ``"5"``, ``"005"`` or ``"Dataset005_Prostate"`` into the dataset's folder name.

    The three roots are searched; no match or several different names are errors that list what exists.
    """
    text = str(id_or_name).strip()
    if text.startswith("Dataset") and not _DATASET_FOLDER.match(text):
        raise SamdgError(f"dataset '{text}' is not a DatasetXXX_Name folder name (three or more digits, then _Name)")
    if not text.startswith("Dataset") and not text.isdigit():
        raise SamdgError(f"dataset '{text}' is neither a number nor a DatasetXXX_Name folder name")
    available: set[str] = set()
    for root in (raw_root(), preprocessed_root(), results_root()):
        if root.is_dir():
            available.update(e.name for e in root.iterdir() if e.is_dir() and _DATASET_FOLDER.match(e.name))
    roots = ", ".join(f"{v}={_root(k)}" for k, v in _ROOTS.items() if k != "weights")
    listing = ", ".join(sorted(available)) or "none"
    if text.startswith("Dataset"):
        if text not in available:  # a typo in the name; the folder exists in none of the roots
            raise SamdgError(f"no dataset named {text} (looked in {roots}); datasets found: {listing}")
        return text
    wanted = int(text)
    found = {name for name in available if int(_DATASET_FOLDER.match(name).group(1)) == wanted}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise SamdgError(f"no dataset with id {wanted} (looked in {roots}); datasets found: {listing}")
    raise SamdgError(f"dataset id {wanted} is ambiguous, several folders match: {', '.join(sorted(found))}")


def raw_dataset_dir(name: str) -> Path:
    return raw_root() / name


def preprocessed_dataset_dir(name: str) -> Path:
    return preprocessed_root() / name


def results_dataset_dir(name: str) -> Path:
    return results_root() / name

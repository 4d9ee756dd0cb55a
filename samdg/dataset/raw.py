"""A raw dataset in the nnU-Net v2 layout, plus samdg's optional ``domains`` map.

``DatasetXXX_Name/dataset.json``, ``imagesTr/{case}_{XXXX}{ending}``, ``labelsTr/{case}{ending}``, optional
``imagesTs/`` (and ``labelsTs/``, samdg's extension for evaluation). As in nnU-Net, ``dataset.json`` may list
the training cases itself in ``"dataset": {case_id: {"images": [...], "label": ...}}`` (paths relative to the
dataset folder or absolute, ``$VARIABLES`` expanded); imagesTr/labelsTr are then not scanned. ``dataset.json``
may map each case id to a domain (site, scanner or modality) in ``"domains"``; without it every case is in domain
``default``. Loading only lists files; :mod:`samdg.dataset.integrity` checks their contents.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from samdg.errors import SamdgError
from samdg.imageio import ENDINGS_2D, SUPPORTED_ENDINGS
from samdg.labels import LabelSpec
from samdg.utils.files import load_json

DEFAULT_DOMAIN = "default"
REQUIRED_KEYS = ("channel_names", "labels", "file_ending")


@dataclass
class Case:
    case_id: str
    image_paths: list[str]
    label_path: str | None
    domain: str


@dataclass
class RawDataset:
    folder: Path
    json: dict
    training_cases: dict[str, Case]
    test_cases: dict[str, Case]
    problems: list[str] = field(default_factory=list)  # listing problems, reported by the integrity check

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def file_ending(self) -> str:
        return self.json["file_ending"]

    @property
    def channel_names(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.json["channel_names"].items()}

    @property
    def num_channels(self) -> int:
        return len(self.json["channel_names"])

    @property
    def labels(self) -> LabelSpec:
        return LabelSpec.from_dataset_json(self.json["labels"], self.json.get("regions_class_order"),
                                           str(self.folder / "dataset.json"))

    @property
    def domains(self) -> dict[str, str]:
        return {c.case_id: c.domain for c in (*self.training_cases.values(), *self.test_cases.values())}

    @property
    def domain_names(self) -> list[str]:
        return sorted(set(self.domains.values()))

    @property
    def has_domain_map(self) -> bool:
        return isinstance(self.json.get("domains"), dict)


RGB_CHANNEL_NAMES = (("r", "g", "b"), ("red", "green", "blue"))


def channel_files_per_case(raw_json: dict) -> int:
    """How many ``_XXXX`` files a case has: one per channel, except nnU-Net's RGB convention for 2D natural
    images, where ``channel_names`` is ``{"0": "R", "1": "G", "2": "B"}`` and the case is one ``_0000`` file."""
    names = tuple(str(v).lower() for v in raw_json["channel_names"].values())
    if raw_json["file_ending"] in ENDINGS_2D and names in RGB_CHANNEL_NAMES:
        return 1
    return len(names)


def is_broken_link(path: Path | str) -> bool:
    """A symbolic link whose target does not exist (it would otherwise look like a missing file)."""
    return os.path.islink(path) and not os.path.exists(path)


def broken_link_problem(path: Path | str) -> str:
    return f"broken link: {path} (points to {os.readlink(path)}, which does not exist)"


def _channel_files(folder: Path, ending: str,
                   problems: list[str] | None = None) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    """Map case id -> {channel index: file} for files named {case}_{XXXX}{ending}; also return misnamed files.

    Broken symbolic links are reported to ``problems`` (or raised when it is None) and still listed, so that their
    case is not also reported as missing.
    """
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    cases: dict[str, dict[int, Path]] = {}
    misnamed = []
    for path in sorted(folder.iterdir()):
        if is_broken_link(path):
            if problems is None:
                raise SamdgError(broken_link_problem(path))
            problems.append(broken_link_problem(path))
        elif path.name.startswith(".") or not path.is_file():
            continue
        match = pattern.match(path.name)
        if match:
            cases.setdefault(match.group(1), {})[int(match.group(2))] = path
        else:
            misnamed.append(path)
    return cases, misnamed


def _domain_of(case_id: str, source: str, folder: Path, raw_json: dict, problems: list[str]) -> str:
    """The case's domain from the ``domains`` map (``default`` without a map); a case missing from it is a problem."""
    domain_map = raw_json.get("domains")
    if not isinstance(domain_map, dict):
        return DEFAULT_DOMAIN
    if case_id not in domain_map:
        problems.append(f"{folder / 'dataset.json'}: case {case_id} ({source}) is missing from the 'domains' map")
        return DEFAULT_DOMAIN
    return str(domain_map[case_id])


def _list_split(folder: Path, images: str, labels: str, raw_json: dict, problems: list[str],
                require_labels: bool) -> dict[str, Case]:
    ending = raw_json["file_ending"]
    image_dir, label_dir = folder / images, folder / labels
    if not image_dir.is_dir():
        return {}
    files, misnamed = _channel_files(image_dir, ending, problems)
    for path in misnamed:
        problems.append(f"{path}: not named {{case}}_{{XXXX}}{ending} "
                        "(4-digit channel index and the dataset's file_ending)")
    n_channels = channel_files_per_case(raw_json)
    cases = {}
    for case_id, channels in files.items():
        for index in range(n_channels):
            if index not in channels:
                problems.append(f"{image_dir / f'{case_id}_{index:04d}{ending}'}: "
                                f"missing channel {index} of case {case_id}")
        for index in channels:
            if index >= n_channels:
                problems.append(f"{channels[index]}: channel file {index} is not declared in channel_names")
        label_path = label_dir / f"{case_id}{ending}"
        if not label_path.is_file():
            if require_labels and not is_broken_link(label_path):  # broken links are reported below
                problems.append(f"{label_dir / f'{case_id}{ending}'}: label file missing for case {case_id}")
            label_path = None
        domain = _domain_of(case_id, images, folder, raw_json, problems)
        image_paths = [str(channels.get(i, image_dir / f"{case_id}_{i:04d}{ending}")) for i in range(n_channels)]
        cases[case_id] = Case(case_id, image_paths, str(label_path) if label_path else None, domain)
    if label_dir.is_dir():
        for path in sorted(label_dir.iterdir()):
            if is_broken_link(path):
                problems.append(broken_link_problem(path))
            elif path.is_file() and not path.name.startswith(".") and path.name.endswith(ending):
                if path.name[: -len(ending)] not in files:
                    problems.append(f"{path}: label has no image in {images}/")
    return cases


FILE_MAP_SOURCE = "'dataset' map"
_UNSET_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _resolve_map_path(folder: Path, entry: str) -> str:
    """nnU-Net's rule: expand environment variables, then join relative paths to the dataset folder."""
    expanded = os.path.expandvars(entry)
    return expanded if os.path.isabs(expanded) else os.path.abspath(os.path.join(folder, expanded))


def _unset_variables_hint(entry: str) -> str:
    """A hint naming the environment variables of ``entry`` that are not set (expandvars leaves them as is)."""
    names = [a or b for a, b in _UNSET_VARIABLE.findall(entry) if (a or b) not in os.environ]
    return f" (environment variable {', '.join('$' + n for n in names)} not set)" if names else ""


def _file_map_structure_errors(file_map, n_images: int) -> list[str]:
    """What is wrong with the shape of the 'dataset' map itself (not with the files it names)."""
    if not isinstance(file_map, dict):
        return ["'dataset' must map case ids to {\"images\": [...], \"label\": ...}"]
    if not file_map:
        return ["'dataset' lists no training case"]
    errors = []
    for case_id, entry in file_map.items():
        if not case_id or case_id in (".", "..") or "/" in case_id or "\\" in case_id:
            # case ids become file names ({case}.npy, {case}{ending}) in the preprocessed and results folders
            errors.append(f"'dataset' case id {case_id!r} is not usable as a file name")
        if not isinstance(entry, dict):
            errors.append(f"'dataset' entry {case_id}: must be an object with \"images\" and \"label\"")
            continue
        images = entry.get("images")
        if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
            errors.append(f"'dataset' entry {case_id}: \"images\" must be a non-empty list of file paths "
                          f"({n_images} per case here)")
        if not isinstance(entry.get("label"), str) or not entry["label"]:
            errors.append(f"'dataset' entry {case_id}: \"label\" must be a file path")
    return errors


def _list_file_map(folder: Path, raw_json: dict, problems: list[str]) -> dict[str, Case]:
    """Training cases from dataset.json's ``dataset`` map (nnU-Net's alternative to scanning imagesTr/labelsTr)."""
    json_path = folder / "dataset.json"
    ending = raw_json["file_ending"]
    n_channels = channel_files_per_case(raw_json)
    errors = _file_map_structure_errors(raw_json["dataset"], n_channels)
    if errors:
        raise SamdgError(f"{json_path}: " + "; ".join(errors))
    cases = {}
    owner: dict[str, str] = {}  # resolved path -> first case listing it, to catch one file listed twice
    for case_id in sorted(raw_json["dataset"]):
        entry = raw_json["dataset"][case_id]
        if len(entry["images"]) != n_channels:
            problems.append(f"{json_path}: 'dataset' entry {case_id} lists {len(entry['images'])} image file(s), "
                            f"but channel_names declares {n_channels} per case")
        image_paths = []
        for index, listed in enumerate(entry["images"]):
            path = _resolve_map_path(folder, listed)
            image_paths.append(path)
            if is_broken_link(path):
                problems.append(broken_link_problem(path))
            elif not os.path.isfile(path):
                problems.append(f"{path}: image file missing for channel {index} of case {case_id} "
                                f"(listed in {json_path}){_unset_variables_hint(listed)}")
        label_path = _resolve_map_path(folder, entry["label"])
        if is_broken_link(label_path):
            problems.append(broken_link_problem(label_path))
        elif not os.path.isfile(label_path):
            problems.append(f"{label_path}: label file missing for case {case_id} "
                            f"(listed in {json_path}){_unset_variables_hint(entry['label'])}")
        for path in (*image_paths, label_path):
            if not path.endswith(ending):
                problems.append(f"{path}: does not end in the dataset's file_ending {ending} (case {case_id})")
            if path in owner and owner[path] != case_id:
                problems.append(f"{path}: listed for both case {owner[path]} and case {case_id} in {json_path}")
            owner.setdefault(path, case_id)
        domain = _domain_of(case_id, FILE_MAP_SOURCE, folder, raw_json, problems)
        cases[case_id] = Case(case_id, image_paths, label_path if os.path.isfile(label_path) else None, domain)
    return cases


PREPROCESSED_LABEL_SUFFIX = "_seg"  # preprocessing stores case X as X.npy and X_seg.npy


def colliding_case_ids(case_ids, json_path: Path) -> list[str]:
    """Pairs of case ids X and X_seg: preprocessing would write both as X_seg.npy (the image of one, the label map
    of the other), so one case would silently train on the other's image as its labels."""
    ids = set(case_ids)
    return [f"{json_path}: case ids {case_id} and {case_id}{PREPROCESSED_LABEL_SUFFIX} collide in the preprocessed "
            f"folder (both become {case_id}{PREPROCESSED_LABEL_SUFFIX}.npy); rename one of them"
            for case_id in sorted(ids) if f"{case_id}{PREPROCESSED_LABEL_SUFFIX}" in ids]


def load_raw_dataset(folder: str | Path) -> RawDataset:
    """List a raw dataset. Problems with dataset.json itself raise; file-level problems go to ``.problems``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SamdgError(f"{folder}: raw dataset folder not found")
    json_path = folder / "dataset.json"
    raw_json = load_json(json_path)
    if not isinstance(raw_json, dict):
        raise SamdgError(f"{json_path}: must hold a JSON object")
    if "channel_names" not in raw_json and "modality" in raw_json:
        raw_json["channel_names"] = raw_json["modality"]  # nnU-Net v1 name, still accepted
    missing = [k for k in REQUIRED_KEYS if k not in raw_json]
    if missing:
        raise SamdgError(f"{json_path}: missing required key(s) {', '.join(missing)}")
    if raw_json["file_ending"] not in SUPPORTED_ENDINGS:
        raise SamdgError(f"{json_path}: file_ending '{raw_json['file_ending']}' is not supported "
                         f"({', '.join(SUPPORTED_ENDINGS)})")
    channel_names = raw_json["channel_names"]
    if not isinstance(channel_names, dict) or not channel_names or not all(
            isinstance(name, str) and name.strip() for name in channel_names.values()):
        raise SamdgError(f"{json_path}: channel_names must be a non-empty object of names like {{\"0\": \"CT\"}}")
    expected_keys = [str(i) for i in range(len(channel_names))]
    if sorted(channel_names, key=lambda k: (len(k), k)) != expected_keys:
        raise SamdgError(f"{json_path}: channel_names keys must be the channel indices {', '.join(expected_keys)} "
                         f"(as strings, like {{\"0\": \"CT\"}}), got {', '.join(map(repr, channel_names))}")
    n_declared = raw_json.get("numTraining")
    if n_declared is not None and (not isinstance(n_declared, int) or isinstance(n_declared, bool)):
        raise SamdgError(f"{json_path}: numTraining must be an integer, got {n_declared!r}")
    LabelSpec.from_dataset_json(raw_json["labels"], raw_json.get("regions_class_order"), str(json_path))
    if "domains" in raw_json and not isinstance(raw_json["domains"], dict):
        raise SamdgError(f"{json_path}: 'domains' must map case ids to domain names")
    problems: list[str] = []
    if "dataset" in raw_json:
        training = _list_file_map(folder, raw_json, problems)
        source = f"the {FILE_MAP_SOURCE}"
    else:
        if not (folder / "imagesTr").is_dir():
            raise SamdgError(f"{folder / 'imagesTr'}: folder not found")
        training = _list_split(folder, "imagesTr", "labelsTr", raw_json, problems, require_labels=True)
        source = "imagesTr"
    test = _list_split(folder, "imagesTs", "labelsTs", raw_json, problems, require_labels=False)
    if not training:
        raise SamdgError(f"{folder / 'imagesTr'}: no image files ending in {raw_json['file_ending']}")
    for case_id in sorted(set(training) & set(test)):
        problems.append(f"{folder}: case id {case_id} is in both {source} and imagesTs")
    problems.extend(colliding_case_ids(training, json_path))
    if n_declared is not None and n_declared != len(training):
        problems.append(f"{json_path}: numTraining is {n_declared} but {source} holds {len(training)} cases")
    return RawDataset(folder, raw_json, training, test, problems)


def list_image_folder(folder: str | Path, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """Cases of a folder of raw images (e.g. imagesTs) for prediction: case id -> channel files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SamdgError(f"{folder}: input folder not found")
    files, _ = _channel_files(folder, file_ending)
    cases = {}
    for case_id, channels in files.items():
        missing = [i for i in range(num_channels) if i not in channels]
        if missing:
            raise SamdgError(f"{folder}: case {case_id} lacks channel file(s) "
                             f"{', '.join(f'_{i:04d}' for i in missing)}")
        extra = sorted(i for i in channels if i >= num_channels)
        if extra:  # predicting from the first channels only would be silently wrong
            raise SamdgError(f"{folder}: case {case_id} has channel file(s) {', '.join(f'_{i:04d}' for i in extra)} "
                             f"beyond the model's {num_channels} channel(s)")
        cases[case_id] = [str(channels[i]) for i in range(num_channels)]
    return cases

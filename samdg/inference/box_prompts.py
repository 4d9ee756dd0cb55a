"""Box prompts for prediction: from a boxes file (``samdg_predict --boxes``) or from the reference labels (the
oracle of ``samdg_benchmark --prompt gt-box``), per case, slice and class.

Both sources give per-class masks in the raw image's canonical space: the boxes file's boxes are rasterised in the
file's voxel grid and reoriented as the image is on reading; the oracle takes each class's reference mask. The
masks then take the label path of preprocessing (transpose to the slicing axis, crop, in-plane resampling: the
steps :func:`samdg.preprocessing.pipeline.preprocess_case` applies to a label map), and each preprocessed slice's
per-class bounding box is its prompt. So the two modes share every step after the first, and a box lands on the
image content it was drawn on whatever the plan's slicing axis, crop and spacing. A class without a mask in a
slice gets no box there and is predicted empty. The format of the boxes file is in documentation/prediction.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from samdg.errors import SamdgError
from samdg.imageio import Geometry, read_header, read_label
from samdg.imageio.geometry import to_canonical
from samdg.labels import LabelSpec
from samdg.models.layers.box_prompts import boxes_from_masks
from samdg.planning.plans import Plans
from samdg.preprocessing.pipeline import label_to_preprocessed

ORACLE_LABEL = "ground-truth box prompts (oracle)"
DEFAULT_SLICE_AXIS = 2


def supports_box_prompts(method: Any) -> bool:
    """True when a method (class or instance) has a box-prompted mode: ``predict_with_boxes(images (B,3,S,S),
    boxes (B,K,4)) -> logits (B,K,h,w)``."""
    return callable(getattr(method, "predict_with_boxes", None))


def check_box_prompts(method: Any, name: str) -> None:
    """One line when a method cannot be prompted by boxes."""
    if not supports_box_prompts(method):
        raise SamdgError(f"method '{name}' has no box-prompted mode (no prompt encoder to take boxes); box prompts "
                         "work with sam, dbsam, desam and any method with predict_with_boxes")


# ----------------------------------------------------------------------------------------------- masks -> boxes
def masks_to_preprocessed(masks: np.ndarray, properties: dict[str, Any], plans: Plans) -> np.ndarray:
    """(K,Z,Y,X) per-class masks in canonical raw space -> (K,S,H,W) bool in preprocessed space, by the label path
    of :func:`samdg.preprocessing.pipeline.preprocess_case` (transpose, crop to its recorded box, resample)."""
    out = [label_to_preprocessed(mask, properties, plans) > 0 for mask in masks]
    return np.stack(out) if out else np.zeros((0, *properties["shape_after_resampling"]), dtype=bool)


def slice_boxes(masks: np.ndarray) -> np.ndarray:
    """(K,S,H,W) preprocessed per-class masks -> (S,K,4) float32 boxes (x0, y0, x1, y1) in slice pixels, pixel
    edges; NaN where class k has no mask in slice s."""
    boxes = boxes_from_masks(torch.from_numpy(np.ascontiguousarray(masks)).transpose(0, 1))
    return boxes.numpy().astype(np.float32)


def class_masks(label: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """(Z,Y,X) label map -> (K,Z,Y,X) bool, one mask per class or region."""
    return np.stack([np.isin(label, values) for values in spec.classes])


class BoxPrompts:
    """Where a prediction's box prompts come from. ``boxes(case_id, properties, plans)`` -> (S,K,4) boxes in
    preprocessed slice pixels; ``inputs(case_id)``: files whose change makes a finished case stale;
    ``identity``: what ``prediction.json`` records (a folder predicted with other prompts is predicted again)."""

    identity: str = ""

    def check_cases(self, case_ids: Sequence[str], image_files: dict[str, Sequence[str]]) -> None:
        """Called before anything is predicted: a SamdgError for a case the source has no prompts for."""
        raise NotImplementedError

    def boxes(self, case_id: str, properties: dict[str, Any], plans: Plans) -> np.ndarray:
        return slice_boxes(masks_to_preprocessed(self.masks(case_id, properties), properties, plans))

    def masks(self, case_id: str, properties: dict[str, Any]) -> np.ndarray:
        """(K,Z,Y,X) per-class masks of the case in canonical raw space."""
        raise NotImplementedError

    def inputs(self, case_id: str) -> list[str]:
        raise NotImplementedError


class ReferenceBoxPrompts(BoxPrompts):
    """The oracle: each class's box in each slice is the tight box of its reference mask there."""

    identity = ORACLE_LABEL

    def __init__(self, label_files: dict[str, str | Path], spec: LabelSpec) -> None:
        self.label_files = {case: str(path) for case, path in label_files.items()}
        self.spec = spec

    def masks(self, case_id: str, properties: dict[str, Any]) -> np.ndarray:
        path = self.label_files[case_id]
        label, _ = read_label(path)
        expected = Geometry.from_dict(properties["geometry"]).canonical_shape
        if tuple(label.shape) != tuple(expected):
            raise SamdgError(f"{path}: reference label of shape {tuple(label.shape)} does not fit its image "
                             f"({tuple(expected)})")
        return class_masks(label, self.spec)

    def inputs(self, case_id: str) -> list[str]:
        return [self.label_files[case_id]]

    def check_cases(self, case_ids: Sequence[str], image_files: dict[str, Sequence[str]]) -> None:
        missing = sorted(set(case_ids) - set(self.label_files))
        if missing:
            raise SamdgError(f"case '{missing[0]}': no reference label for its ground-truth box prompts")


# ----------------------------------------------------------------------------------------------- the boxes file
@dataclass(frozen=True)
class SliceBox:
    """One box of the file: class index, slice index along ``slice_axis``, (x0, y0, x1, y1) in voxels (upper
    bounds exclusive) along the two other file axes (2D images: column, row), and where it is in the file."""

    class_index: int
    slice_index: int
    box: tuple[int, int, int, int]
    entry: str


class BoxFilePrompts(BoxPrompts):
    """Boxes read from a ``samdg_predict --boxes`` file (format: documentation/prediction.md)."""

    def __init__(self, path: str | Path, spec: LabelSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self.slice_axis, self.cases = parse_box_file(self.path, spec.names)
        self.identity = "box prompts from a file"  # its content is a per-case input: a change redoes the cases

    def check_cases(self, case_ids: Sequence[str], image_files: dict[str, Sequence[str]]) -> None:
        """Every case to predict has an entry, every entry is a case, every box lies inside its image."""
        missing = sorted(set(case_ids) - set(self.cases))
        if missing:
            others = f" (and {len(missing) - 1} other case(s))" if len(missing) > 1 else ""
            raise SamdgError(f"{self.path}: no entry for case '{missing[0]}'{others}; give every case an entry "
                             "(an empty {} predicts it empty)")
        unknown = sorted(set(self.cases) - set(case_ids))
        if unknown:
            raise SamdgError(f"{self.path}: case '{unknown[0]}' is not among the {len(case_ids)} input case(s)")
        for case_id in case_ids:
            if self.cases[case_id]:
                _, geometry = read_header(image_files[case_id][0])
                self._check_inside(self.cases[case_id], geometry)

    def _check_inside(self, boxes: list[SliceBox], geometry: Geometry) -> None:
        shape = tuple(int(s) for s in geometry.original_shape)
        if geometry.is_2d:
            slices, (height, width) = 1, shape
        else:
            if self.slice_axis >= len(shape):
                raise SamdgError(f"{self.path}: slice_axis {self.slice_axis} but the image has {len(shape)} axes")
            in_slice = [shape[a] for a in range(len(shape)) if a != self.slice_axis]
            slices, (width, height) = shape[self.slice_axis], in_slice  # x: the first in-slice axis
        for item in boxes:
            x0, y0, x1, y1 = item.box
            if not 0 <= item.slice_index < slices:
                raise SamdgError(f"{self.path}: {item.entry}: slice {item.slice_index} is outside the image "
                                 f"({slices} slice(s) along file axis {self.slice_axis}, shape {shape})")
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise SamdgError(f"{self.path}: {item.entry}: box {list(item.box)} reaches outside the slice "
                                 f"(x 0..{width}, y 0..{height}; image shape {shape})")

    def masks(self, case_id: str, properties: dict[str, Any]) -> np.ndarray:
        geometry = Geometry.from_dict(properties["geometry"])
        self._check_inside(self.cases[case_id], geometry)
        shape = tuple(int(s) for s in geometry.original_shape)
        masks = np.zeros((self.spec.num_classes, *shape), dtype=bool)  # (K, file axes)
        for item in self.cases[case_id]:
            x0, y0, x1, y1 = item.box
            if geometry.is_2d:  # (Y,X) file array: rows, columns
                masks[item.class_index, y0:y1, x0:x1] = True
                continue
            index: list[Any] = [item.class_index, slice(None), slice(None), slice(None)]
            first, second = [a for a in range(3) if a != self.slice_axis]
            index[1 + self.slice_axis] = item.slice_index
            index[1 + first], index[1 + second] = slice(x0, x1), slice(y0, y1)
            masks[tuple(index)] = True
        if geometry.is_2d:
            return masks[:, None]  # canonical (K,1,Y,X)
        # reoriented exactly as the image is on reading
        return np.moveaxis(to_canonical(np.moveaxis(masks, 0, -1), np.asarray(geometry.ornt)), -1, 0)

    def inputs(self, case_id: str) -> list[str]:
        return [str(self.path)]


def parse_box_file(path: Path, class_names: Sequence[str]) -> tuple[int, dict[str, list[SliceBox]]]:
    """Read and check a boxes file -> (slice_axis, {case id: [SliceBox, ...]}); any problem is one SamdgError
    naming the file and the entry."""
    if not path.is_file():
        raise SamdgError(f"--boxes {path}: file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SamdgError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("cases"), dict):
        raise SamdgError(f"{path}: expected an object with a \"cases\" object: "
                         '{"cases": {"<case>": {"<class>": {"<slice>": [x0, y0, x1, y1]}}}}')
    extra = sorted(set(content) - {"cases", "slice_axis"})
    if extra:
        raise SamdgError(f"{path}: unknown key '{extra[0]}' (allowed: cases, slice_axis)")
    slice_axis = content.get("slice_axis", DEFAULT_SLICE_AXIS)
    if isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2):
        raise SamdgError(f"{path}: slice_axis must be 0, 1 or 2 (a file voxel axis), got {slice_axis!r}")
    names = list(class_names)
    cases: dict[str, list[SliceBox]] = {}
    for case_id, per_class in content["cases"].items():
        if not isinstance(per_class, dict):
            raise SamdgError(f"{path}: case '{case_id}': expected an object {{\"<class>\": {{\"<slice>\": box}}}}, "
                             f"got {type(per_class).__name__}")
        cases[case_id] = []
        for class_name, per_slice in per_class.items():
            if class_name not in names:
                raise SamdgError(f"{path}: case '{case_id}': unknown class '{class_name}' (the model's classes: "
                                 f"{', '.join(names)})")
            if not isinstance(per_slice, dict):
                raise SamdgError(f"{path}: case '{case_id}', class '{class_name}': expected an object "
                                 f"{{\"<slice>\": [x0, y0, x1, y1]}}, got {type(per_slice).__name__}")
            for slice_key, box in per_slice.items():
                entry = f"case '{case_id}', class '{class_name}', slice '{slice_key}'"
                cases[case_id].append(SliceBox(names.index(class_name), _slice_index(path, entry, slice_key),
                                               _box(path, entry, box), entry))
    return int(slice_axis), cases


def _slice_index(path: Path, entry: str, key: str) -> int:
    try:
        index = int(key)
    except ValueError:
        index = -1
    if index < 0 or str(index) != key.strip():
        raise SamdgError(f"{path}: {entry}: the slice must be a voxel index 0, 1, 2, ...")
    return index


def _box(path: Path, entry: str, box: Any) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1] numbers -> voxel edges, rounded outwards (a fractional box covers every voxel it touches)."""
    numbers = isinstance(box, list) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    if not numbers:
        raise SamdgError(f"{path}: {entry}: a box is 4 numbers [x0, y0, x1, y1], got {json.dumps(box)}")
    x0, y0, x1, y1 = math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])
    if x1 <= x0 or y1 <= y0:
        raise SamdgError(f"{path}: {entry}: box {box} is empty (needs x0 < x1 and y0 < y1; upper bounds exclusive)")
    return x0, y0, x1, y1

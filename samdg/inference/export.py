"""Preprocessed-space probabilities -> a label file with the input's exact geometry (and optionally an .npz).

Steps: :func:`samdg.preprocessing.pipeline.invert_to_original` (bilinear resampling of the probabilities back to
the cropped grid, un-crop with probability 0, un-transpose) -> :func:`samdg.labels.label_map_from_probabilities`
(the one label rule training validation also uses) -> :func:`samdg.imageio.write_label`, which undoes the
canonical reorientation and writes the input's spacing, origin, direction, shape and file format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdg.imageio import Geometry, write_label
from samdg.labels import LabelSpec, label_map_from_probabilities
from samdg.planning.plans import Plans
from samdg.preprocessing.pipeline import invert_to_original
from samdg.utils.files import atomic_path

PROBABILITIES_KEY = "probabilities"


def probabilities_to_original(probabilities: np.ndarray, properties: dict[str, Any], plans: Plans) -> np.ndarray:
    """(K,S,H,W) preprocessed-space probabilities -> (K,Z,Y,X) float32 on the input's canonical grid."""
    return invert_to_original(np.asarray(probabilities, dtype=np.float32), properties, plans, fill_value=0.0)


def label_map_from_volume(probabilities: np.ndarray, spec: LabelSpec, chunk: int = 64) -> np.ndarray:
    """(K,Z,Y,X) probabilities -> (Z,Y,X) int64 label map, ``chunk`` slices at a time (bounded memory)."""
    tensor = torch.from_numpy(np.ascontiguousarray(probabilities))
    out = np.zeros(probabilities.shape[1:], dtype=np.int64)
    for start in range(0, probabilities.shape[1], chunk):
        block = tensor[:, start:start + chunk].transpose(0, 1)  # (z,K,Y,X): slices act as the batch
        out[start:start + chunk] = label_map_from_probabilities(block, spec).numpy()
    return out


def save_probabilities(path: str | Path, probabilities: np.ndarray, spec: LabelSpec, geometry: Geometry) -> None:
    """Write ``<case>.npz`` atomically.

    Contents: ``probabilities`` (K,Z,Y,X) float16 in samdg's canonical axis order (Z,Y,X) = (S,A,R) (2D images:
    (K,1,Y,X)); ``class_names`` (K,); ``class_values`` (K,) label value(s) of each class as text (``"1"`` or
    ``"1,2"`` for a region); ``geometry`` the input's Geometry as JSON (``samdg.imageio.Geometry.from_dict``), which
    maps the canonical axes back to the file's.
    """
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:  # a file handle: np.savez would append ".npz" to a path
            np.savez_compressed(
                handle,
                **{PROBABILITIES_KEY: probabilities.astype(np.float16)},
                class_names=np.array(spec.names),
                class_values=np.array([",".join(map(str, values)) for values in spec.classes]),
                geometry=np.array(json.dumps(geometry.to_dict())),
            )


def export_prediction(probabilities: np.ndarray, properties: dict[str, Any], plans: Plans, spec: LabelSpec,
                      output_file: str | Path, probabilities_file: str | Path | None = None) -> np.ndarray:
    """Write one case's prediction; returns the (Z,Y,X) label map in canonical orientation.

    Args:
        probabilities: (K,S,H,W) per-class probabilities in preprocessed space (what the model predicted,
            stacked over slices).
        properties: what ``preprocess_case`` returned for the case (it carries the input's Geometry).
        plans: the model's plans.
        spec: the model's classes.
        output_file: ``<case><file_ending>``; written atomically with the input's geometry and format.
        probabilities_file: optional ``<case>.npz`` (see :func:`save_probabilities`).
    """
    geometry = Geometry.from_dict(properties["geometry"])
    original = probabilities_to_original(probabilities, properties, plans)
    label_map = label_map_from_volume(original, spec)
    write_label(label_map, geometry, output_file)
    if probabilities_file is not None:
        save_probabilities(probabilities_file, original, spec, geometry)
    return label_map

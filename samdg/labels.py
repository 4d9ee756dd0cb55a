"""Which classes a model predicts, and the one rule that turns per-class logits into a label map.

nnU-Net's ``labels`` in dataset.json map a name to an int, or to a list of ints for a region (overlapping
structures such as whole tumour / tumour core). samdg methods predict K per-class logits, one sigmoid per class
(SAM's mask tokens are binary), so the same rule serves plain labels and regions:

- plain labels: a pixel gets the label of the most probable class whose probability is >= 0.5, else background;
- regions: each region with probability >= 0.5 is painted in ``regions_class_order`` (later ones overwrite).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from samdg.errors import SamdgError

MAX_LABEL_VALUE = 32767  # preprocessed label maps are int16 (``{case}_seg.npy``), and so are predictions


@dataclass(frozen=True)
class LabelSpec:
    """The K foreground classes of a dataset.

    Attributes:
        names: K class names (background excluded, ``ignore`` excluded).
        classes: K tuples of label values each class covers (one value for a plain label, several for a region).
        regions_class_order: for region datasets, the label value painted for each class, in painting order.
        ignore_label: the value of the ``ignore`` label, if the dataset declares one.
    """

    names: tuple[str, ...]
    classes: tuple[tuple[int, ...], ...]
    regions_class_order: tuple[int, ...] | None = None
    ignore_label: int | None = None
    label_values: tuple[int, ...] = field(default=(0,))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_regions(self) -> bool:
        return any(len(values) > 1 for values in self.classes) or self.regions_class_order is not None

    @classmethod
    def from_dataset_json(cls, labels: dict, regions_class_order: list | None = None,
                          source: str = "dataset.json") -> "LabelSpec":
        if not isinstance(labels, dict) or not labels:
            raise SamdgError(f"{source}: 'labels' must be a non-empty object mapping names to integers")
        names, classes, values = [], [], {0}
        ignore = None
        if labels.get("background") != 0:
            # nnU-Net's rule; a class called "background" would otherwise be trained and the one at 0 dropped
            found = f", got {labels['background']!r}" if "background" in labels else ""
            raise SamdgError(f"{source}: 'labels' must declare \"background\": 0{found}")
        for name, value in labels.items():
            members = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if not members or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in members):
                raise SamdgError(f"{source}: label '{name}' must be a non-negative integer or a list of them, "
                                 f"got {value!r}")
            too_large = [v for v in members if v > MAX_LABEL_VALUE]
            if too_large:
                raise SamdgError(f"{source}: label '{name}' has the value {too_large[0]}; label values must be at most "
                                 f"{MAX_LABEL_VALUE} (labels are stored as 16-bit integers)")
            values.update(members)
            if name == "background":
                continue
            if 0 in members:
                raise SamdgError(f"{source}: label '{name}' includes 0, the background's value; only "
                                 "\"background\" may be 0")
            if name == "ignore":
                ignore = members[0]
                continue
            names.append(name)
            classes.append(members)
        if ignore is not None and ignore != max(values):
            raise SamdgError(f"{source}: the 'ignore' label must have the highest value")
        if not classes:
            raise SamdgError(f"{source}: 'labels' declares no foreground class")
        order = None
        if any(len(c) > 1 for c in classes):
            if regions_class_order is None:
                raise SamdgError(f"{source}: labels use regions, so 'regions_class_order' is required")
            integers = isinstance(regions_class_order, (list, tuple)) and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in regions_class_order)
            if not integers:
                raise SamdgError(f"{source}: 'regions_class_order' must be a list of integers, "
                                 f"got {regions_class_order!r}")
            if len(regions_class_order) != len(classes):
                raise SamdgError(f"{source}: 'regions_class_order' needs one entry per region ({len(classes)}), "
                                 f"got {len(regions_class_order)}: {list(regions_class_order)}")
            foreground = sorted({v for members in classes for v in members})
            wrong = [int(v) for v in regions_class_order if v not in foreground]
            if wrong:
                raise SamdgError(f"{source}: 'regions_class_order' holds {wrong[0]}, which is not a foreground "
                                 f"value of the declared regions ({', '.join(map(str, foreground))}); each entry is "
                                 "the value painted for its region")
            order = tuple(int(v) for v in regions_class_order)
        else:
            # Two plain labels with one value would train two identical classes; it is a typo in dataset.json.
            owner: dict[int, str] = {}
            for name, (value,) in zip(names, classes):
                if value in owner:
                    raise SamdgError(f"{source}: labels '{owner[value]}' and '{name}' both have the value {value}; "
                                     "each label needs its own value")
                owner[value] = name
        return cls(tuple(names), tuple(classes), order, ignore, tuple(sorted(values)))


def targets_from_label_map(target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,H,W) integer label map -> (B,K,H,W) float binary targets, one channel per class or region."""
    channels = [torch.isin(target, torch.tensor(values, device=target.device)) for values in spec.classes]
    return torch.stack(channels, dim=1).float()


def valid_mask(target: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,H,W) bool: pixels that count in losses and metrics (everything but the ignore label)."""
    if spec.ignore_label is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != spec.ignore_label


def label_map_from_probabilities(probabilities: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,K,H,W) per-class probabilities -> (B,H,W) int64 label map (rule in the module docstring)."""
    if spec.has_regions:
        label_map = torch.zeros(probabilities.shape[:1] + probabilities.shape[2:], dtype=torch.long,
                                device=probabilities.device)
        for k, value in enumerate(spec.regions_class_order):
            label_map[probabilities[:, k] >= 0.5] = value
        return label_map
    values = torch.tensor([c[0] for c in spec.classes], device=probabilities.device)
    best_probability, best_class = probabilities.max(dim=1)
    return torch.where(best_probability >= 0.5, values[best_class], torch.zeros_like(best_class))


def label_map_from_logits(logits: torch.Tensor, spec: LabelSpec) -> torch.Tensor:
    """(B,K,H,W) per-class logits -> (B,H,W) int64 label map."""
    return label_map_from_probabilities(torch.sigmoid(logits.float()), spec)

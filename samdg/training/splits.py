"""Cross-validation folds and source-domain selection (nnU-Net's ``splits_final.json``, plus domains).

- ``splits_final.json`` in the preprocessed dataset folder: a list of 5 ``{"train": [...], "val": [...]}``, a
  seeded (12345) shuffled 5-fold split of the sorted case ids, created at the first training run and never
  rewritten (edit it by hand for custom splits, as in nnU-Net).
- ``--source-domains A,B`` restricts training to the cases of those domains. Its folds are a 5-fold split of
  those cases only, kept in ``splits_final__src-A+B.json`` next to the plain file, so single-source and
  multi-source runs each have stable folds and never mix with the all-domain split.
- Fold ``all`` trains on every selected case and validates on the same cases (said in the training log).
- Fold ``first90`` (DeSAM's split): the first 90 % of the selected cases train, the last 10 % (at least one)
  validate, in the order of the ``domains`` map of dataset.json (the converters list patients in the download's
  order; cases missing from the map follow, sorted); kept in ``splits_first90[__src-A+B].json`` (one
  ``{"train", "val"}`` object), written at the first run and never rewritten, so it can be edited by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from samdg.errors import SamdgError
from samdg.utils.files import atomic_write_json, load_json

NUM_FOLDS = 5
SPLIT_SEED = 12345
ORDERED_HOLDOUT_FOLD = "first90"
ORDERED_HOLDOUT_TRAIN_FRACTION = 0.9
FOLD_CHOICES = ("0", "1", "2", "3", "4", "all", ORDERED_HOLDOUT_FOLD)


def parse_fold(fold: str | int) -> int | str:
    """``"0".."4"`` -> int, ``"all"`` / ``"first90"`` -> that name; anything else is an error listing the choices."""
    text = str(fold).strip().lower()
    if text in ("all", ORDERED_HOLDOUT_FOLD):
        return text
    if text.isdigit():
        return int(text)
    raise SamdgError(f"fold '{fold}' is not valid; choose one of {', '.join(FOLD_CHOICES)} (or a fold index "
                     "present in splits_final.json)")


def parse_domains(text: str | None) -> list[str] | None:
    """``"siteA,siteB"`` -> sorted unique list; ``None``/empty -> ``None`` (all domains)."""
    if text is None or not str(text).strip():
        return None
    names = sorted({part.strip() for part in str(text).split(",") if part.strip()})
    return names or None


def domain_tag(domains: list[str] | None) -> str:
    """Folder/file tag of a domain selection: ``src-siteA+siteB`` (characters unsafe in paths become ``-``)."""
    if not domains:
        return ""
    return "src-" + "+".join(re.sub(r"[^A-Za-z0-9._-]", "-", name) for name in sorted(domains))


def kfold_split(case_ids: list[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict[str, list[str]]]:
    """Shuffled k-fold split of the sorted case ids (sklearn ``KFold(shuffle=True, random_state=seed)``)."""
    from sklearn.model_selection import KFold

    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise SamdgError(f"{len(ids)} case(s) cannot be split into {num_folds} folds; train with fold 'all'")
    splits = []
    for train_index, val_index in KFold(num_folds, shuffle=True, random_state=seed).split(ids):
        splits.append({"train": [ids[i] for i in train_index], "val": [ids[i] for i in val_index]})
    return splits


def splits_file(preprocessed_dir: Path, domains: list[str] | None, kind: str = "final") -> Path:
    """``splits_<kind>[__src-A+B].json``: the k-fold splits (``final``) or fold ``first90``'s split."""
    tag = domain_tag(domains)
    return Path(preprocessed_dir) / (f"splits_{kind}__{tag}.json" if tag else f"splits_{kind}.json")


def select_cases(case_domains: dict[str, str], domains: list[str] | None) -> list[str]:
    """Sorted ids of the cases in ``domains`` (all when ``None``); an unknown domain lists the known ones."""
    if domains is None:
        return sorted(case_domains)
    known = sorted(set(case_domains.values()))
    unknown = [d for d in domains if d not in known]
    if unknown:
        raise SamdgError(f"--source-domains: unknown domain(s) {', '.join(unknown)}; domains of this dataset: "
                         f"{', '.join(known)}")
    return sorted(c for c, d in case_domains.items() if d in domains)


def load_or_create_splits(preprocessed_dir: Path, case_ids: list[str], domains: list[str] | None) -> list[dict]:
    """Read the splits file for this domain selection, creating it (atomically) on first use."""
    path = splits_file(preprocessed_dir, domains)
    if path.is_file():
        splits = load_json(path)
        if not isinstance(splits, list) or not all(isinstance(s, dict) and "train" in s and "val" in s for s in splits):
            raise SamdgError(f"{path}: must be a list of {{\"train\": [...], \"val\": [...]}} objects")
        return splits
    splits = kfold_split(case_ids)
    atomic_write_json(path, splits)
    return splits


def fold_cases(
    preprocessed_dir: Path, case_domains: dict[str, str], fold: int | str, domains: list[str] | None
) -> tuple[list[str], list[str]]:
    """(training case ids, validation case ids) of ``fold`` under the domain selection.

    Cases listed in a splits file but no longer preprocessed are an error naming the file.
    """
    selected = select_cases(case_domains, domains)
    if not selected:
        raise SamdgError("no preprocessed training cases selected")
    if fold == "all":
        return selected, selected
    if fold == ORDERED_HOLDOUT_FOLD:
        return ordered_holdout(preprocessed_dir, selected, domains)
    splits = load_or_create_splits(preprocessed_dir, selected, domains)
    path = splits_file(preprocessed_dir, domains)
    if not 0 <= fold < len(splits):
        raise SamdgError(f"fold {fold} does not exist: {path} holds folds 0-{len(splits) - 1} (or use 'all')")
    train, val = sorted(splits[fold]["train"]), sorted(splits[fold]["val"])
    missing = sorted(set(train + val) - set(case_domains))
    if missing:
        raise SamdgError(f"{path}: fold {fold} lists case(s) that are not preprocessed: {', '.join(missing[:10])}")
    outside = sorted(set(train + val) - set(selected))
    if outside:
        raise SamdgError(f"{path}: fold {fold} lists case(s) outside the selected domains: {', '.join(outside[:10])}")
    return train, val


def ordered_holdout_split(case_ids: list[str]) -> dict[str, list[str]]:
    """``{"train": first 90 %, "val": last 10 %}`` of the ids in the given order (at least one of each)."""
    ids = list(case_ids)
    if len(ids) < 2:
        raise SamdgError(f"fold {ORDERED_HOLDOUT_FOLD} needs at least 2 cases to hold one out, got {len(ids)}")
    n_train = min(max(int(len(ids) * ORDERED_HOLDOUT_TRAIN_FRACTION), 1), len(ids) - 1)
    return {"train": ids[:n_train], "val": ids[n_train:]}


def ordered_holdout(preprocessed_dir: Path, selected: list[str],
                    domains: list[str] | None) -> tuple[list[str], list[str]]:
    """(train, val) of fold ``first90``, from its split file (created on first use)."""
    path = splits_file(preprocessed_dir, domains, ORDERED_HOLDOUT_FOLD)
    if not path.is_file():
        dataset_json = Path(preprocessed_dir) / "dataset.json"
        listed = list((load_json(dataset_json).get("domains") or {}) if dataset_json.is_file() else {})
        position = {case: index for index, case in enumerate(listed)}
        ordered = sorted(selected, key=lambda case: (position.get(case, len(position)), case))
        atomic_write_json(path, ordered_holdout_split(ordered))
    split = load_json(path)
    if not isinstance(split, dict) or not all(isinstance(split.get(key), list) for key in ("train", "val")):
        raise SamdgError(f"{path}: must be one {{\"train\": [...], \"val\": [...]}} object")
    outside = sorted(set(split["train"] + split["val"]) - set(selected))
    if outside:
        raise SamdgError(f"{path}: lists case(s) that are not preprocessed cases of the selected domains: "
                         f"{', '.join(outside[:10])}")
    return sorted(split["train"]), sorted(split["val"])


def fold_note(train: list[str], val: list[str]) -> str:
    overlap = set(train) & set(val)
    if overlap and set(train) == set(val):
        return "fold 'all': validation uses the training cases (no held-out data; Dice is optimistic)"
    if overlap:
        return f"warning: {len(overlap)} case(s) are in both train and val"
    return ""


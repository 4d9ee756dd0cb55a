"""Which trained model a prediction uses: the results layout and the selection rules.

Training writes ``$SAMDG_results/DatasetXXX_Name/<method>__<plans>__2d/fold_<f>[__src-A+B]/`` (see
:mod:`samdg.training.results`): one model folder per method and plans, one fold folder per fold, with a
``__src-...`` suffix when training was restricted to source domains. A *trained model* here is a model folder
together with one source selection (none = all domains); its folds are the fold folders holding the checkpoint.

- ``--model-dir`` names a model folder, or one fold folder (then only that fold is used unless ``-f`` is given).
- Otherwise every trained model under ``$SAMDG_results`` with the checkpoint is a candidate, filtered by ``-d``,
  ``-m`` and ``--source-domains``; exactly one must remain, else the error lists the candidates with the options
  that select each.
- Folds: ``-f`` picks them (``all`` = ``fold_all``); by default every numbered fold with the checkpoint is used
  (their probabilities are averaged), and ``fold_all`` when there is no numbered fold (nnU-Net's API skips
  ``fold_all`` in its auto-detection, which breaks the common ``fold all`` workflow), else ``fold_first90``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from samdg.errors import SamdgError
from samdg.paths import resolve_dataset_name, results_root
from samdg.training.splits import ORDERED_HOLDOUT_FOLD, domain_tag, parse_domains

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
_FOLD_FOLDER = re.compile(rf"^fold_(\d+|all|{ORDERED_HOLDOUT_FOLD})(?:__(src-.+))?$")


@dataclass(frozen=True)
class TrainedModel:
    """A model folder, one source-domain selection, and the folds of it that hold the checkpoint.

    Attributes:
        model_dir: ``.../DatasetXXX_Name/<method>__<plans>__2d``.
        source_tag: ``src-siteA+siteB`` for a model trained on those domains, ``""`` for all domains.
        folds: fold ids with the checkpoint, numbered ones first (``("0", "1")``, ``("all",)``).
    """

    model_dir: Path
    source_tag: str
    folds: tuple[str, ...]

    @property
    def dataset(self) -> str:
        return self.model_dir.parent.name

    @property
    def method(self) -> str:
        return self.model_dir.name.split("__")[0]

    @property
    def source_domains(self) -> list[str] | None:
        return self.source_tag[len("src-"):].split("+") if self.source_tag else None

    def fold_dir(self, fold: str) -> Path:
        return self.model_dir / (f"fold_{fold}" + (f"__{self.source_tag}" if self.source_tag else ""))

    def describe(self) -> str:
        sources = f", trained on {','.join(self.source_domains)}" if self.source_tag else ", trained on all domains"
        select = f"--model-dir {self.model_dir}" + (f" --source-domains {','.join(self.source_domains)}"
                                                     if self.source_tag else "")
        return f"{self.dataset}/{self.model_dir.name}{sources} (folds {', '.join(self.folds)}): {select}"


@dataclass(frozen=True)
class SelectedModel:
    """The model and folds a prediction uses; ``fold_dirs`` are what the predictor loads (one per fold)."""

    model: TrainedModel
    folds: tuple[str, ...]

    @property
    def fold_dirs(self) -> list[Path]:
        return [self.model.fold_dir(f) for f in self.folds]


def fold_id(fold: str | int) -> str:
    """``0`` / ``"0"`` / ``"fold_0"`` -> ``"0"``; ``"all"`` -> ``"all"``; ``"first90"`` -> ``"first90"``."""
    text = str(fold).strip()
    text = text[len("fold_"):] if text.startswith("fold_") else text
    if text not in ("all", ORDERED_HOLDOUT_FOLD) and not text.isdigit():
        raise SamdgError(f"-f: '{fold}' is not a fold; use fold numbers (0 1 2 ...), 'all' or '{ORDERED_HOLDOUT_FOLD}'")
    return str(int(text)) if text.isdigit() else text


def split_fold_specs(folds: Sequence[str | int] | None) -> tuple[list[str] | None, str | None]:
    """``-f`` values may name fold folders (``all__src-siteA``): -> (fold ids, source tag or None)."""
    if not folds:
        return None, None
    ids, tags = [], set()
    for fold in folds:
        text = str(fold).strip()
        if "__" in text:
            text, tag = text.split("__", 1)
            tags.add(tag)
        ids.append(fold_id(text))
    if len(tags) > 1 or (tags and len(ids) != sum(1 for f in folds if "__" in str(f))):
        raise SamdgError(f"-f {' '.join(map(str, folds))}: fold folders of different source selections cannot be mixed")
    return ids, (tags.pop() if tags else None)


def _tag_of(source_domains: str | None) -> str | None:
    if source_domains is None:
        return None
    return "" if source_domains == "all" else domain_tag(parse_domains(source_domains))


def _fold_order(fold: str) -> tuple[bool, int]:
    return fold == "all", int(fold) if fold.isdigit() else 0


def models_in(model_dir: Path, checkpoint: str = DEFAULT_CHECKPOINT) -> list[TrainedModel]:
    """The trained models of one model folder (one per source selection), each with its folds holding ``checkpoint``."""
    if not model_dir.is_dir():
        return []
    by_tag: dict[str, list[str]] = {}
    for path in model_dir.iterdir():
        match = _FOLD_FOLDER.match(path.name)
        if match and path.is_dir() and (path / checkpoint).is_file():
            by_tag.setdefault(match.group(2) or "", []).append(match.group(1))
    return [TrainedModel(model_dir, tag, tuple(sorted(folds, key=_fold_order)))
            for tag, folds in sorted(by_tag.items())]


def list_trained_models(dataset: str | None = None, method: str | None = None, source_domains: str | None = None,
                        checkpoint: str = DEFAULT_CHECKPOINT) -> list[TrainedModel]:
    """Every trained model under ``$SAMDG_results`` that has ``checkpoint`` in at least one fold.

    Args:
        dataset: a DatasetXXX_Name folder name to restrict the search to.
        method: exact method name.
        source_domains: ``"A,B"``: only models trained on exactly those domains; ``"all"``: only models trained on
            every domain; None: any.
    """
    root = results_root()
    if not root.is_dir():
        return []
    dataset_dirs = [root / dataset] if dataset else sorted(p for p in root.iterdir() if p.is_dir())
    wanted_tag = _tag_of(source_domains)
    models = []
    for dataset_dir in dataset_dirs:
        if not dataset_dir.is_dir():
            continue
        for model_dir in sorted(p for p in dataset_dir.iterdir() if p.is_dir()):
            for model in models_in(model_dir, checkpoint):
                if ((method is None or model.method == method)
                        and (wanted_tag is None or model.source_tag == wanted_tag)):
                    models.append(model)
    return models


def choose_folds(model: TrainedModel, folds: Sequence[str | int] | None, checkpoint: str) -> SelectedModel:
    """The folds to ensemble (rules in the module docstring)."""
    if folds:
        wanted = tuple(dict.fromkeys(fold_id(f) for f in folds))
        missing = [f for f in wanted if f not in model.folds]
        if missing:
            raise SamdgError(f"{model.model_dir}: fold(s) {', '.join(missing)} have no {checkpoint}"
                             f"{' for sources ' + model.source_tag if model.source_tag else ''} "
                             f"(folds with it: {', '.join(model.folds)})")
        return SelectedModel(model, wanted)
    numbered = tuple(f for f in model.folds if f.isdigit())
    return SelectedModel(model, numbered or (("all",) if "all" in model.folds else model.folds[:1]))


def select_model(dataset: str | int | None = None, method: str | None = None, folds: Sequence[str | int] | None = None,
                 checkpoint: str = DEFAULT_CHECKPOINT, model_dir: str | Path | None = None,
                 source_domains: str | None = None) -> SelectedModel:
    """Resolve the command-line selection to the model and folds to load.

    Raises:
        SamdgError: no model matches, several match (the message lists them with the options selecting each),
            or a requested fold lacks the checkpoint.
    """
    folds, folder_tag = split_fold_specs(folds)
    wanted_tag = _tag_of(source_domains)
    if folder_tag is not None:
        if wanted_tag is not None and wanted_tag != folder_tag:
            raise SamdgError(f"-f names fold folders of {folder_tag} but --source-domains asks for {source_domains}")
        wanted_tag = folder_tag
    if model_dir is not None:
        return _from_model_dir(Path(model_dir).expanduser(), folds, checkpoint, wanted_tag, source_domains)

    dataset_name = resolve_dataset_name(dataset) if dataset is not None else None
    candidates = [m for m in list_trained_models(dataset_name, method, None, checkpoint)
                  if wanted_tag is None or m.source_tag == wanted_tag]
    if len(candidates) == 1:
        return choose_folds(candidates[0], folds, checkpoint)
    wanted = ", ".join(filter(None, [f"dataset {dataset_name}" if dataset_name else "",
                                     f"method {method}" if method else "",
                                     f"source domains {source_domains}" if source_domains else "",
                                     f"checkpoint {checkpoint}"]))
    if not candidates:
        others = list_trained_models(checkpoint=checkpoint)
        hint = ("; trained models found:\n  " + "\n  ".join(m.describe() for m in others)) if others else ""
        raise SamdgError(f"no trained model in {results_root()} matches ({wanted}); train one with samdg_train or "
                         f"point --model-dir at a model folder{hint}")
    listing = "\n  ".join(m.describe() for m in candidates)
    raise SamdgError(f"{len(candidates)} trained models match ({wanted}); choose one with -d, -m, --source-domains "
                     f"or --model-dir:\n  {listing}")


def _from_model_dir(path: Path, folds: Sequence[str] | None, checkpoint: str, wanted_tag: str | None,
                    source_domains: str | None) -> SelectedModel:
    if not path.is_dir():
        raise SamdgError(f"--model-dir {path}: folder not found")
    match = _FOLD_FOLDER.match(path.name)
    if match:  # a fold folder: that fold (or, with -f, its sibling folds of the same source selection)
        if not (path / checkpoint).is_file():
            raise SamdgError(f"--model-dir {path}: no {checkpoint} in this fold folder")
        tag = match.group(2) or ""
        model = next(m for m in models_in(path.parent, checkpoint) if m.source_tag == tag)
        return choose_folds(model, folds or [match.group(1)], checkpoint)
    models = [m for m in models_in(path, checkpoint) if wanted_tag is None or m.source_tag == wanted_tag]
    if not models:
        wanted = source_domains or (wanted_tag if wanted_tag else "all domains" if wanted_tag == "" else "")
        raise SamdgError(f"--model-dir {path}: no fold_*/{checkpoint} in it"
                         f"{' for source domains ' + wanted if wanted else ''} "
                         "(is this a samdg model folder?)")
    if len(models) > 1:
        listing = "\n  ".join(m.describe() for m in models)
        raise SamdgError(f"--model-dir {path} holds models trained on different source domains; add "
                         f"--source-domains (or give a fold folder):\n  {listing}")
    return choose_folds(models[0], folds, checkpoint)

"""Where a trained model lives: ``$SAMDG_results/DatasetXXX_Name/<method>__samdgPlans__2d/fold_<f>[__src-...]/``.

The pattern is nnU-Net's ``{trainer}__{plans}__{configuration}/fold_X`` with the method in the trainer's place.
A run restricted to source domains (``--source-domains A,B``) gets the suffix ``__src-A+B`` on its fold folder,
so single-source and multi-source models of the same fold never overwrite each other.

A fold folder is self-contained: ``plans.json`` (with the CLI overrides applied and recorded in ``decisions``),
``dataset.json``, ``training_args.json`` and the checkpoints, which carry the method name, settings, label spec
and variant, so :func:`samdg.training.checkpoint.load_trained_method` rebuilds the model from the folder alone.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from samdg.paths import resolve_dataset_name, results_dataset_dir
from samdg.planning.plans import PLANS_NAME
from samdg.training.splits import domain_tag
from samdg.utils.files import remove_stale_temp_files
from samdg.utils.lock import folder_lock

CONFIGURATION = "2d"


def model_folder_name(method: str, plans_name: str = PLANS_NAME) -> str:
    return f"{method}__{plans_name}__{CONFIGURATION}"


def fold_folder_name(fold: int | str, source_domains: list[str] | None = None) -> str:
    tag = domain_tag(sorted(source_domains) if source_domains else None)
    return f"fold_{fold}" + (f"__{tag}" if tag else "")


def results_fold_dir(dataset: str | int, method: str, fold: int | str, source_domains: list[str] | None = None,
                     plans_name: str = PLANS_NAME) -> Path:
    """The fold folder of a trained model (``dataset`` may be an id or a DatasetXXX_Name)."""
    name = resolve_dataset_name(dataset)
    return results_dataset_dir(name) / model_folder_name(method, plans_name) / fold_folder_name(fold, source_domains)


@contextlib.contextmanager
def fold_folder_in_use(fold_dir: Path, is_main: bool = True) -> Iterator[None]:
    """Hold the fold folder's lock for a training run (the main process only) and remove the temp files a killed
    run left in it (``.checkpoint_latest.pth.samdg-<pid>-....pth`` and the like, see
    :func:`samdg.utils.files.remove_stale_temp_files`). A second run of the same fold is refused with one line
    naming the first; a run that fails before writing anything leaves no empty fold folder behind."""
    if not is_main:
        yield
        return
    with folder_lock(fold_dir):
        for folder in (fold_dir, fold_dir / "validation"):
            remove_stale_temp_files(folder)
        yield


def run_length_note(trained_epochs, trained_iterations, asked_epochs: int | None,
                    asked_iterations: int | None) -> str:
    """`` (trained with epochs 1 (asked 5); delete the folder to retrain)`` when a reused model's run length differs
    from the one asked for (None = not asked); '' otherwise. Values are compared as text (records may hold strings)."""
    asked = (("epochs", trained_epochs, asked_epochs), ("iterations per epoch", trained_iterations, asked_iterations))
    differences = [f"{name} {trained} (asked {wanted})" for name, trained, wanted in asked
                   if wanted is not None and str(trained) != str(wanted)]
    return f" (trained with {', '.join(differences)}; delete the folder to retrain)" if differences else ""

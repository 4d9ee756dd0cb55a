"""nnU-Net v2 as an external baseline: the real nnU-Net, trained on samdg's cases and splits, scored by samdg.

For a dataset and a source-domain selection everything lives in one workspace under samdg's results folder::

    $SAMDG_results/DatasetXXX_Name/nnunet/<src-A+B | all-domains>/
        nnUNet_raw/DatasetXXX_Name/          dataset.json + links to the selected raw training cases (read-only)
        nnUNet_preprocessed/DatasetXXX_Name/ nnU-Net's fingerprint, plans, preprocessed data, splits_final.json
        nnUNet_results/DatasetXXX_Name/nnUNetTrainer_samdg__nnUNetPlans__<configuration>/fold_<f>/
        logs/                                nnU-Net's output of each step

The nnU-Net dataset holds only the labelled training cases of the selected domains, so nnU-Net's fingerprint
(intensity statistics, spacing, patch size) never sees a target domain. ``splits_final.json`` is samdg's own
split of those cases (the file in samdg's preprocessed folder), so both tools train and validate on the same
cases; fold ``all`` trains on every selected case, as in both tools. nnU-Net runs in a child process
(:mod:`samdg.baselines.nnunet_worker`) with its variables pointing at the workspace. Every step is reused when it
finished: preprocessing has a marker file, training a ``checkpoint_final.pth`` (an interrupted training continues
from ``checkpoint_latest.pth``), predictions are skipped unless the model changed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from samdg.dataset.raw import Case, RawDataset, load_raw_dataset
from samdg.errors import SamdgError
from samdg.paths import (
    dataset_id_of,
    preprocessed_dataset_dir,
    raw_dataset_dir,
    resolve_dataset_name,
    results_dataset_dir,
)
from samdg.training.results import run_length_note
from samdg.training.splits import domain_tag, load_or_create_splits, parse_fold, select_cases
from samdg.utils.files import atomic_write_json, load_json, make_folder

TRAINER = "nnUNetTrainer_samdg"
PLANS = "nnUNetPlans"
CONFIGURATIONS = ("2d", "3d_fullres")
TRAINERS_FOLDER = Path(__file__).resolve().parent / "nnunet_trainers"
PREDICTION_INFO_FILE = "nnunet_prediction.json"
INSTALL_HINT = "pip install 'samdg[nnunet]' (or pip install nnunetv2==2.8.1)"


def check_available() -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        raise SamdgError(f"the nnU-Net baseline needs nnunetv2, which is not installed; {INSTALL_HINT}")


@dataclass
class TrainRequest:
    """One nnU-Net model to train (what ``samdg_train DATASET nnunet FOLD`` and the benchmark ask for).

    ``epochs``/``iters_per_epoch``: None = nnU-Net's 1000 x 250. ``num_workers``: nnU-Net's augmentation processes
    (None = nnU-Net's default, 0 = in the training process). ``num_processes``: planning and preprocessing.
    """

    dataset: str
    configuration: str = "2d"
    fold: str = "all"
    source_domains: list[str] | None = None
    epochs: int | None = None
    iters_per_epoch: int | None = None
    device: str = "auto"
    final_validation: bool = False
    num_workers: int | None = None
    num_processes: int = 2


@dataclass(frozen=True)
class Workspace:
    """The folders of one dataset + source selection (see the module docstring)."""

    root: Path
    dataset_name: str

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw" / self.dataset_name

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed" / self.dataset_name

    def model_dir(self, configuration: str) -> Path:
        return self.root / "nnUNet_results" / self.dataset_name / f"{TRAINER}__{PLANS}__{configuration}"

    def fold_dir(self, configuration: str, fold: str) -> Path:
        return self.model_dir(configuration) / f"fold_{fold}"

    def environment(self, extra: dict[str, str | None]) -> dict[str, str]:
        """This process's environment with nnU-Net's variables pointing here; ``None`` values are removed."""
        env = dict(os.environ, nnUNet_raw=str(self.root / "nnUNet_raw"),
                   nnUNet_preprocessed=str(self.root / "nnUNet_preprocessed"),
                   nnUNet_results=str(self.root / "nnUNet_results"), nnUNet_extTrainer=str(TRAINERS_FOLDER))
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


def workspace(dataset_name: str, source_domains: list[str] | None) -> Workspace:
    selection = domain_tag(sorted(source_domains)) if source_domains else "all-domains"
    return Workspace(results_dataset_dir(dataset_name) / "nnunet" / selection, dataset_name)


def _device_name(choice: str) -> str:
    from samdg.utils.device import resolve_device

    device = resolve_device(choice)
    if device.type not in ("cpu", "cuda"):
        raise SamdgError(f"--device {choice}: the nnU-Net baseline runs on cpu or cuda")
    return device.type


def selected_cases(raw: RawDataset, source_domains: list[str] | None) -> dict[str, Case]:
    """The labelled training cases of the source domains (all domains when None)."""
    labelled = {case_id: case for case_id, case in raw.training_cases.items() if case.label_path}
    chosen = select_cases({case_id: case.domain for case_id, case in labelled.items()}, source_domains)
    if not chosen:
        raise SamdgError(f"{raw.folder}: no labelled training case in {', '.join(source_domains or ['any domain'])}")
    return {case_id: labelled[case_id] for case_id in chosen}


def _link(target: str, link: Path) -> None:
    """``link`` -> ``target`` (absolute), replaced atomically when it points elsewhere."""
    target = os.path.abspath(target)
    if link.is_symlink() and os.readlink(link) == target:
        return
    temporary = link.with_name(f".{link.name}.samdg-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def write_nnunet_raw(space: Workspace, raw: RawDataset, cases: dict[str, Case]) -> None:
    """nnU-Net's raw dataset: links named nnU-Net's way to the selected cases' files, and a dataset.json without
    samdg's keys (``domains``, the ``dataset`` file map) whose ``numTraining`` counts those cases."""
    images, labels = make_folder(space.raw / "imagesTr"), make_folder(space.raw / "labelsTr")
    ending = raw.file_ending
    for case_id, case in cases.items():
        for channel, image in enumerate(case.image_paths):
            _link(image, images / f"{case_id}_{channel:04d}{ending}")
        _link(case.label_path, labels / f"{case_id}{ending}")
    dataset_json = {key: value for key, value in raw.json.items() if key not in ("domains", "dataset", "numTest")}
    dataset_json["numTraining"] = len(cases)
    atomic_write_json(space.raw / "dataset.json", dataset_json)


def write_splits(space: Workspace, dataset_name: str, cases: dict[str, Case], fold: str,
                 source_domains: list[str] | None) -> list[dict] | None:
    """Copy samdg's split of the selected cases to nnU-Net's ``splits_final.json``; None for fold ``all`` (nnU-Net
    then trains and validates on every case, like samdg)."""
    if fold == "all":
        return None
    samdg_preprocessed = preprocessed_dataset_dir(dataset_name)
    if not samdg_preprocessed.is_dir():
        raise SamdgError(f"{samdg_preprocessed}: missing; the nnU-Net baseline takes its fold {fold} split from "
                         f"samdg's, so run samdg_plan_and_preprocess -d {dataset_name} first (or train fold 'all')")
    splits = load_or_create_splits(samdg_preprocessed, sorted(cases), source_domains)
    outside = sorted({c for split in splits for c in split["train"] + split["val"]} - set(cases))
    if outside:
        raise SamdgError(f"{samdg_preprocessed}: the split of these domains lists case(s) without a labelled raw "
                         f"training case: {', '.join(outside[:10])}")
    if int(fold) >= len(splits):
        raise SamdgError(f"fold {fold} does not exist: samdg's split holds folds 0-{len(splits) - 1} (or use 'all')")
    atomic_write_json(make_folder(space.preprocessed) / "splits_final.json", splits)
    return splits


def _run_step(space: Workspace, step: str, request: dict, extra_env: dict[str, str | None]) -> None:
    """Run one worker step in a child process; its output goes to ``logs/<step>_<time>.txt``. A failure is one
    line with nnU-Net's message and the log's path."""
    logs = make_folder(space.root / "logs")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    log_file = logs / f"{step}_{stamp}_{os.getpid()}.txt"
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=logs, delete=False) as handle:
        handle.write(json.dumps(request))
        request_file = Path(handle.name)
    try:
        with open(log_file, "w", encoding="utf-8") as output:
            code = subprocess.call([sys.executable, "-m", "samdg.baselines.nnunet_worker", step, str(request_file)],
                                   stdout=output, stderr=subprocess.STDOUT, env=space.environment(extra_env))
    finally:
        request_file.unlink(missing_ok=True)
    if code != 0:
        from samdg.baselines.nnunet_worker import ERROR_PREFIX

        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        reasons = [line[len(ERROR_PREFIX):] for line in lines if line.startswith(ERROR_PREFIX)]
        reason = reasons[-1] if reasons else (lines[-1] if lines else f"exit status {code}")
        raise SamdgError(f"nnU-Net {step} failed: {reason} (log: {log_file})")


def ensure_preprocessed(space: Workspace, configuration: str, num_processes: int, log: Callable[[str], None]) -> None:
    """nnU-Net's fingerprint, plans and preprocessing of ``configuration``, once (a marker says it finished)."""
    marker = space.preprocessed / f"samdg_preprocessed__{configuration}.json"
    if marker.is_file():
        return
    log(f"nnU-Net: planning and preprocessing {configuration} in {space.preprocessed}")
    _run_step(space, "plan", {"dataset_id": dataset_id_of(space.dataset_name), "configuration": configuration,
                              "num_processes": num_processes},
              {"nnUNet_n_proc_DA": str(num_processes)})  # the planner sets torch's threads from it; 0 fails
    atomic_write_json(marker, {"configuration": configuration, "plans": PLANS})


def _reuse_note(fold_dir: Path, request: TrainRequest) -> str:
    """`` (trained with epochs 1 (asked 5); delete the folder to retrain)`` when the finished model's length differs
    from the one asked for (nnU-Net's debug.json records it); '' otherwise."""
    debug_file = fold_dir / "debug.json"
    trained = load_json(debug_file) if debug_file.is_file() else {}
    return run_length_note(trained.get("num_epochs"), trained.get("num_iterations_per_epoch"), request.epochs,
                           request.iters_per_epoch)


def train_model(request: TrainRequest, log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Train (or reuse) the nnU-Net model of ``request`` -> (its fold folder, ``"trained"`` or ``"reused"``)."""
    if request.configuration not in CONFIGURATIONS:
        raise SamdgError(f"nnU-Net configuration '{request.configuration}': choose one of {', '.join(CONFIGURATIONS)}")
    for name, value in (("--epochs", request.epochs), ("--iters-per-epoch", request.iters_per_epoch)):
        if value is not None and value < 1:
            raise SamdgError(f"{name} must be at least 1, got {value}")
    fold = str(parse_fold(request.fold))
    if fold != "all" and not fold.isdigit():
        raise SamdgError(f"fold {fold}: the nnU-Net baseline trains on samdg's 5-fold split or 'all' only")
    dataset_name = resolve_dataset_name(request.dataset)
    space = workspace(dataset_name, request.source_domains)
    fold_dir = space.fold_dir(request.configuration, fold)
    if (fold_dir / "checkpoint_final.pth").is_file():
        log(f"nnU-Net: reusing the trained model {fold_dir}{_reuse_note(fold_dir, request)}")
        return fold_dir, "reused"
    device = _device_name(request.device)
    raw = load_raw_dataset(raw_dataset_dir(dataset_name))
    cases = selected_cases(raw, request.source_domains)
    write_splits(space, dataset_name, cases, fold, request.source_domains)  # first: it may refuse the fold
    write_nnunet_raw(space, raw, cases)
    ensure_preprocessed(space, request.configuration, request.num_processes, log)
    log(f"nnU-Net: training {request.configuration} fold {fold} on {len(cases)} case(s) -> {fold_dir}")
    schedule = {"SAMDG_NNUNET_EPOCHS": request.epochs, "SAMDG_NNUNET_ITERS_PER_EPOCH": request.iters_per_epoch,
                "SAMDG_NNUNET_VAL_ITERS_PER_EPOCH": None,
                "nnUNet_n_proc_DA": request.num_workers if request.num_workers is not None
                else os.environ.get("nnUNet_n_proc_DA")}
    _run_step(space, "train", {"dataset_name": dataset_name, "configuration": request.configuration, "fold": fold,
                               "device": device, "final_validation": request.final_validation},
              {key: None if value is None else str(value) for key, value in schedule.items()})
    return fold_dir, "trained"


def predict_cases(fold_dir: Path, cases: dict[str, list[str]], output_dir: Path, file_ending: str,
                  device: str = "auto", mirroring: bool = False):
    """Predict ``cases`` (case id -> image files) with the model in ``fold_dir`` into
    ``output_dir/<case><file_ending>`` -> (a :class:`samdg.inference.predictor.PredictionReport`, whether finished
    predictions were redone because the model changed).

    Finished cases are skipped unless the model or the mirroring changed since (``nnunet_prediction.json``). nnU-Net
    writes each case into a temporary folder first, so an interrupted run leaves no partial prediction.
    """
    from samdg.inference.predictor import PredictionReport

    checkpoint = fold_dir / "checkpoint_final.pth"
    if not checkpoint.is_file():
        raise SamdgError(f"{fold_dir}: no checkpoint_final.pth; train the nnU-Net model first")
    make_folder(output_dir)
    stat = checkpoint.stat()
    wanted = {"model": str(fold_dir), "checkpoint_mtime_ns": stat.st_mtime_ns, "checkpoint_bytes": stat.st_size,
              "mirroring": bool(mirroring)}
    info_file = output_dir / PREDICTION_INFO_FILE
    changed = info_file.is_file() and load_json(info_file) != wanted
    report = PredictionReport(output_dir)
    todo = {}
    for case_id, images in sorted(cases.items()):
        if (output_dir / f"{case_id}{file_ending}").is_file() and not changed:
            report.skipped.append(case_id)
        else:
            todo[case_id] = images
    if not todo:
        return report, False
    started = time.time()
    staging = make_folder(output_dir / f".nnunet_staging_{os.getpid()}")
    space = Workspace(fold_dir.parents[3], fold_dir.parents[1].name)
    jobs = [[case_id, [str(Path(p).resolve()) for p in images], str(staging / case_id)]
            for case_id, images in todo.items()]
    result_file = staging / "result.json"
    fold = fold_dir.name.removeprefix("fold_")
    try:
        _run_step(space, "predict", {"model_dir": str(fold_dir.parent), "fold": fold, "device": _device_name(device),
                                     "mirroring": bool(mirroring), "jobs": jobs, "result_file": str(result_file)},
                  {})
        report.failed.update(load_json(result_file)["failed"])
        for case_id in todo:
            staged = staging / f"{case_id}{file_ending}"
            if case_id in report.failed:
                continue
            if not staged.is_file():
                report.failed[case_id] = f"nnU-Net wrote no {staged.name}"
                continue
            os.replace(staged, output_dir / staged.name)
            report.predicted.append(case_id)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    atomic_write_json(info_file, wanted)
    report.seconds = time.time() - started
    return report, changed

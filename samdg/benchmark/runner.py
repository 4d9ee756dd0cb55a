"""Run a cross-domain benchmark end to end: train (or reuse) -> predict -> evaluate -> matrix, heatmap, overlays.

Output folder (default ``$SAMDG_results/DatasetXXX_Name/benchmark__<method>__<protocol>/``)::

    matrix.csv  matrix.md  matrix.png  cells.csv   the source x target matrix (see samdg.benchmark.matrix)
    overlays/<target>_{best,worst}.png            best and worst cross-domain case per target domain
    predictions/<src-...>/                         each model's predictions, with evaluation_Ts|Tr/per_case.csv ...
    benchmark.json                                 settings, models (trained or reused), notes, headline numbers

Every stage resumes: trained models are reused, finished predictions are skipped (redone when the model's
checkpoint changed), evaluations and tables are recomputed (they are cheap).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from samdg.baselines import is_external_baseline
from samdg.benchmark import matrix, overlays
from samdg.benchmark.protocols import (
    EvaluationCases,
    ModelPlan,
    check_domains,
    evaluation_cases,
    evaluation_notes,
    model_plans,
    parse_sources,
)
from samdg.dataset.raw import RawDataset, load_raw_dataset
from samdg.errors import SamdgError
from samdg.paths import raw_dataset_dir, resolve_dataset_name, results_dataset_dir
from samdg.utils.files import atomic_write_json, load_json, make_folder
from samdg.utils.nan import nan_mean, nan_to_none

FOLD = "all"


@dataclass
class BenchmarkSettings:
    """What ``samdg_benchmark`` was asked for.

    ``sources``: comma-separated source domains (single-source) or held-out domains (leave-one-domain-out); None =
    every domain. ``epochs``, ``iters_per_epoch``, ``device``, ``embedding_cache`` and ``overrides`` go to training
    (None = the plan's value); ``predict_batch_size`` and ``mirroring`` to prediction. ``prompt``: ``automatic``
    (each method's own mode) or ``gt-box`` (evaluation only: every class in every slice prompted by the box of
    its reference mask, :data:`samdg.inference.box_prompts.ORACLE_LABEL` on every table). ``targets``: the
    domains tested (None = every domain); ``fold``: ``all`` or ``first90`` (DeSAM's split, see
    samdg.training.splits); ``paper_metrics``: add the papers' Dice columns and tables; ``preset``: the
    ``--preset`` that set these (names the default output folder instead of the protocol).
    """

    dataset: str
    method: str
    protocol: str
    sources: str | None = None
    epochs: int | None = None
    iters_per_epoch: int | None = None
    device: str = "auto"
    embedding_cache: str = "off"
    overrides: dict[str, Any] = field(default_factory=dict)
    predict_batch_size: int | None = None
    mirroring: bool = False
    output_dir: str | None = None
    num_processes: int = 2
    progress: bool = True
    prompt: str = "automatic"
    targets: str | None = None
    fold: str = "all"
    paper_metrics: bool = False
    preset: str | None = None


PROMPTS = ("automatic", "gt-box")


def benchmark_dir(dataset_name: str, method: str, protocol: str, prompt: str = "automatic") -> Path:
    suffix = "" if prompt == "automatic" else f"__{prompt}"
    return results_dataset_dir(dataset_name) / f"benchmark__{method}__{protocol}{suffix}"


def prompt_label(settings: BenchmarkSettings) -> str:
    """How the benchmark's models are prompted: "automatic", or the oracle label (the CSV files' prompts column)."""
    from samdg.inference.box_prompts import ORACLE_LABEL

    return ORACLE_LABEL if settings.prompt == "gt-box" else "automatic"


def prompt_title(settings: BenchmarkSettings) -> str:
    """What the tables' titles add for the prompt: nothing (automatic), or the oracle label."""
    return "" if settings.prompt != "gt-box" else f", {prompt_label(settings)}"


def ensure_trained(settings: BenchmarkSettings, dataset_name: str, plan: ModelPlan,
                   log: Callable[[str], None]) -> tuple[Path, str]:
    """The fold folder of the model of ``plan``: reused when its final checkpoint exists, else trained (resuming)."""
    from samdg.training import TrainingArgs, results_fold_dir, train

    if is_external_baseline(settings.method):
        from samdg.baselines.harness import train_for_benchmark

        return train_for_benchmark(settings, dataset_name, list(plan.training_domains), log)
    fold_dir = results_fold_dir(dataset_name, settings.method, settings.fold, list(plan.training_domains))
    if (fold_dir / "checkpoint_final.pth").is_file():
        note = _reuse_note(fold_dir, settings, dataset_name, plan)
        log(f"[{plan.row}] reusing the trained model {fold_dir}{note}")
        return fold_dir, "reused"
    log(f"[{plan.row}] training {settings.method} on {', '.join(plan.training_domains)} -> {fold_dir}")
    args = TrainingArgs(dataset=dataset_name, method=settings.method, fold=settings.fold, epochs=settings.epochs,
                        iters_per_epoch=settings.iters_per_epoch, device=settings.device,
                        source_domains=sorted(plan.training_domains), continue_training=True,
                        embedding_cache=settings.embedding_cache, overrides=dict(settings.overrides),
                        progress_bar=settings.progress, final_validation=False)
    train(args)
    return fold_dir, "trained"


def _reuse_note(fold_dir: Path, settings: BenchmarkSettings, dataset_name: str, plan: ModelPlan) -> str:
    """Check that the model to reuse is the one this call asks for.

    A model trained from another plan (another ``--override`` of the augmentation, learning rate, input size...)
    is a different model: reusing it would report its scores under this call's options, so that is an error.
    Other epochs or iterations only earn a note (a longer or shorter run of the same model).
    """
    from samdg.planning.plans import Plans
    from samdg.training.config import model_defining_plan, plan_differences, plans_for_method
    from samdg.training.results import run_length_note

    plans_file, args_file = fold_dir / "plans.json", fold_dir / "training_args.json"
    if not plans_file.is_file() or not args_file.is_file():
        raise SamdgError(f"{fold_dir}: holds a final checkpoint but not the plans.json and training_args.json that "
                         "say how it was trained; delete the folder to retrain")
    trained_plan = model_defining_plan(Plans.load(plans_file), settings.method)
    # The plan training would use: cross-domain, so with the planner's cross-domain augmentation.
    asked_plan = model_defining_plan(plans_for_method(dataset_name, settings.method, settings.overrides,
                                                      sorted(plan.training_domains)), settings.method)
    differences = plan_differences(trained_plan, asked_plan)
    if differences:
        raise SamdgError(f"{fold_dir}: the model there was trained with {'; '.join(differences)}; delete the folder "
                         "to retrain, or benchmark into another SAMDG_results")
    trained = load_json(args_file)
    return run_length_note(trained.get("epochs_resolved"), trained.get("iters_per_epoch_resolved"), settings.epochs,
                           settings.iters_per_epoch)


def predict_and_evaluate(settings: BenchmarkSettings, raw: RawDataset, plan: ModelPlan, fold_dir: Path,
                         evaluation: EvaluationCases, prediction_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predict the model's evaluation cases and evaluate them -> (per-case frame, prediction report dict)."""
    from samdg.evaluation.evaluate import PER_CASE_FILE, evaluate_folders
    from samdg.inference import Predictor
    from samdg.inference.predictor import RUN_INFO_FILE

    cases = {case_id: case.image_paths for case_id, case in evaluation.cases.items()}
    if is_external_baseline(settings.method):
        from samdg.baselines.harness import predict_for_benchmark

        report, changed = predict_for_benchmark(settings, fold_dir, cases, prediction_dir, raw.file_ending)
    else:
        predictor = Predictor.from_model_dir(fold_dir, checkpoint=prediction_checkpoint(settings, fold_dir),
                                             device=settings.device, batch_size=settings.predict_batch_size,
                                             mirroring=settings.mirroring, progress=settings.progress)
        if settings.prompt == "gt-box":
            from samdg.inference.box_prompts import ReferenceBoxPrompts

            labels = {case_id: case.label_path for case_id, case in evaluation.cases.items()}
            predictor.use_box_prompts(ReferenceBoxPrompts(labels, predictor.label_spec))
        info_file = prediction_dir / RUN_INFO_FILE
        wanted = predictor.run_info()
        changed = info_file.is_file() and {k: v for k, v in load_json(info_file).items() if k in wanted} != wanted
        report = predictor.predict_cases(cases, prediction_dir, overwrite=changed)
    frames = []
    for split in sorted(set(evaluation.split.values())):
        predicted = [c for c, s in evaluation.split.items()
                     if s == split and (prediction_dir / f"{c}{raw.file_ending}").is_file()]
        if not predicted:  # every case of this split failed to predict (reported in the notes)
            continue
        # The cases' own label files, not labelsTr/: dataset.json's 'dataset' map may keep them anywhere.
        references = {c: Path(evaluation.cases[c].label_path) for c in predicted}
        output = prediction_dir / f"evaluation_{split}"
        evaluate_folders(references, prediction_dir, raw.labels, raw.domains, output, settings.num_processes,
                         raw.file_ending, allow_missing=True, progress=False, paper_metrics=settings.paper_metrics)
        frame = pd.read_csv(output / PER_CASE_FILE, dtype={"case": str, "domain": str, "label": str},
                            keep_default_na=False, na_values=["NaN"])
        frames.append(frame)
    per_case = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["case", "domain", "label", *matrix.METRICS])
    summary = {"predicted": len(report.predicted), "skipped": len(report.skipped), "failed": report.failed,
               "redone_because_model_changed": bool(changed)}
    return per_case, summary


def prediction_checkpoint(settings: BenchmarkSettings, fold_dir: Path) -> str:
    """``checkpoint_final.pth``; with a held-out split (fold ``first90``) the model selected on it,
    ``checkpoint_best.pth``, as DeSAM selects its model (the final one when no validation ever improved)."""
    if settings.fold != FOLD and (fold_dir / "checkpoint_best.pth").is_file():
        return "checkpoint_best.pth"
    return "checkpoint_final.pth"


def check_training_settings(settings: BenchmarkSettings, dataset_name: str, plan: ModelPlan) -> None:
    """Mistakes training would find only after the output folder exists, or never when every model is reused:
    an unknown method, a dataset not planned yet, an override with a bad key or value."""
    from samdg.models.methods import get_method
    from samdg.training.config import plans_for_method

    if settings.prompt not in PROMPTS:
        raise SamdgError(f"unknown prompt '{settings.prompt}'; choose one of {', '.join(PROMPTS)}")
    if settings.prompt == "gt-box":
        from samdg.inference.box_prompts import check_box_prompts

        check_box_prompts(None if is_external_baseline(settings.method) else get_method(settings.method),
                          settings.method)
    if settings.fold != FOLD and is_external_baseline(settings.method):
        raise SamdgError(f"{settings.method} trains on samdg's 5-fold or 'all' splits only, not fold {settings.fold}")
    if is_external_baseline(settings.method):
        from samdg.baselines.harness import check_benchmark_settings

        return check_benchmark_settings(settings, print)
    get_method(settings.method)
    plans_for_method(dataset_name, settings.method, settings.overrides, sorted(plan.training_domains))


def run_benchmark(settings: BenchmarkSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the protocol; returns the content of benchmark.json (also written to the output folder)."""
    dataset_name = resolve_dataset_name(settings.dataset)
    raw = load_raw_dataset(raw_dataset_dir(dataset_name))
    domains = check_domains(raw)
    from_preset = f" (or preset {settings.preset})" if settings.preset else ""
    sources = parse_sources(settings.sources, domains, f"--sources{from_preset}")
    targets = parse_sources(settings.targets, domains, f"--targets{from_preset}")
    preset = f" (preset {settings.preset})" if settings.preset else ""
    plans = model_plans(settings.protocol, domains, sources)
    if settings.protocol == "leave-one-domain-out" and len(domains) < 2:
        raise SamdgError("leave-one-domain-out needs at least 2 domains")
    check_training_settings(settings, dataset_name, plans[0])
    output_dir = (Path(settings.output_dir) if settings.output_dir
                  else benchmark_dir(dataset_name, settings.method, settings.preset or settings.protocol,
                                     settings.prompt))
    make_folder(output_dir)
    notes = evaluation_notes(raw, targets)
    if settings.paper_metrics:
        from samdg.evaluation.paper_metrics import INFLATION_NOTE

        notes.append(f"Note: {INFLATION_NOTE}")
    if settings.prompt == "gt-box":
        notes.insert(0, "Prompts: ground-truth box prompts (oracle). Every class in every slice is prompted by the "
                        "tight box of its reference mask, and a class absent from a slice is predicted empty: an "
                        "upper bound for prompted use, not an automatic result.")

    from samdg.training.splits import domain_tag

    cells, case_results, models = [], [], []
    pooled: dict[str, list[float]] = {}  # paper metric -> each model's pooled cross-domain mean
    for plan in plans:
        fold_dir, status = ensure_trained(settings, dataset_name, plan, log)
        evaluation = evaluation_cases(raw, plan.training_domains, targets)
        if not evaluation.cases:
            raise SamdgError(f"{raw.folder}: no labelled case to test the model trained on "
                             f"{', '.join(plan.training_domains)}")
        prediction_dir = output_dir / "predictions" / domain_tag(list(plan.training_domains))
        log(f"[{plan.row}] predicting {len(evaluation.cases)} test case(s) into {prediction_dir}")
        per_case, prediction = predict_and_evaluate(settings, raw, plan, fold_dir, evaluation, prediction_dir)
        if prediction["failed"]:
            notes.append(f"Model {plan.row}: {len(prediction['failed'])} case(s) could not be predicted and are "
                         "left out: "
                         + ", ".join(sorted(prediction["failed"])))
        cells += matrix.cell_values(per_case, plan.row, plan.training_domains)
        for metric in (m for m in matrix.PAPER_METRICS if m in per_case.columns):
            pooled.setdefault(metric, []).append(matrix.pooled_cross_domain(per_case, plan.training_domains, metric))
        for case, dice in overlays.case_mean_dice(per_case).items():
            target = evaluation.cases[case].domain
            if target in plan.training_domains:
                continue
            case_info = evaluation.cases[case]
            prediction_file = str(prediction_dir / f"{case}{raw.file_ending}")
            case_results.append(overlays.CaseResult(plan.row, target, case, dice, tuple(case_info.image_paths),
                                                    case_info.label_path, prediction_file))
        models.append({"row": plan.row, "training_domains": list(plan.training_domains), "model": str(fold_dir),
                       "checkpoint": prediction_checkpoint(settings, fold_dir), "status": status,
                       "predictions": str(prediction_dir), **prediction})

    cells_frame = pd.DataFrame(cells, columns=list(matrix.CELL_COLUMNS))
    rows = [plan.row for plan in plans]
    pooled_means = {metric: nan_mean(values) for metric, values in pooled.items()}
    if pooled_means:
        notes.append("The papers' averaging (each model's unseen-site cases pooled, then the mean over models): "
                     + ", ".join(f"{metric} {value:.3f}" for metric, value in pooled_means.items()) + ".")
    title = f"{dataset_name}: {settings.method}, {settings.protocol}{preset}{prompt_title(settings)}"
    files = matrix.write_all(output_dir, cells_frame, rows, targets, title, notes, prompts=prompt_label(settings))
    overlay_files = overlays.write_overlays(case_results, output_dir / "overlays")
    headline = {}
    for metric in matrix.metrics_of(cells_frame):
        frame = matrix.matrix_frame(cells_frame, metric, rows, targets)
        value = frame.loc[matrix.COLUMN_MEAN, matrix.ROW_MEAN]
        headline[f"{metric}_cross_domain_mean"] = nan_to_none(value)
    for metric, value in pooled_means.items():
        headline[f"{metric}_pooled_cross_domain_mean"] = nan_to_none(value)
    result = {
        "dataset": dataset_name,
        "settings": asdict(settings),
        "domains": domains,
        "targets": targets,
        "models": models,
        "headline": headline,
        "notes": notes,
        "files": {**{k: str(v) for k, v in files.items()}, "overlays": [str(p) for p in overlay_files]},
    }
    atomic_write_json(output_dir / "benchmark.json", result)
    return result


def print_result(result: dict[str, Any], stream=None) -> None:
    """The matrix.md tables and where the files are (on stdout by default)."""
    stream = stream or sys.stdout
    print(Path(result["files"]["markdown"]).read_text(encoding="utf-8"), file=stream)
    print(f"files: {Path(result['files']['csv']).parent}", file=stream)

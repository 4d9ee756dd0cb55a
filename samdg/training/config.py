"""What a training run needs, resolved from the plan and the command line (``samdg_train``'s arguments).

:class:`TrainingArgs` is what the user asked for (``None`` = take the plan's value);
:func:`resolve_run` turns it into a :class:`TrainingRun`: the plan with overrides applied, the dataset's
preprocessed cases, the fold's case lists and every number the loop uses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.paths import preprocessed_dataset_dir, resolve_dataset_name
from samdg.planning.plans import PLANS_NAME, Plans, apply_overrides
from samdg.training.dataset import PreprocessedCase, load_preprocessed_cases
from samdg.training.embedding_cache import CACHE_MODES
from samdg.training.splits import fold_cases, parse_fold
from samdg.utils.schema import to_plain


@dataclass
class TrainingArgs:
    dataset: str
    method: str
    fold: str
    epochs: int | None = None
    iters_per_epoch: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    source_domains: list[str] | None = None
    continue_training: bool = False
    embedding_cache: str = "off"
    overrides: dict[str, Any] = field(default_factory=dict)
    num_workers: int | None = None
    seed: int = 12345
    progress_bar: bool = True
    final_validation: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainingRun:
    args: TrainingArgs
    dataset_name: str
    fold: int | str
    plans: Plans
    label_spec: LabelSpec
    cases: dict[str, PreprocessedCase]
    train_cases: list[str]
    val_cases: list[str]
    epochs: int
    iters_per_epoch: int
    val_iterations: int
    global_batch_size: int
    num_workers: int
    augmentation: str
    method_settings: Any  # the method's settings dataclass (samdg.models.methods.settings.MethodSettings)
    preprocessed_dir: Path
    dataset_json_path: Path | None
    # One stage of a method that trains several in one call (espmedsam: distill, then segment; see
    # SegmentationMethod.training_stages): its name, and lines for its training log saying why it runs.
    stage: str = ""
    stage_notes: list[str] = field(default_factory=list)


def validation_iterations(iters_per_epoch: int) -> int:
    """nnU-Net validates 50 batches per 250 training batches; keep that ratio (at least 1, at most 50)."""
    return max(1, min(50, round(iters_per_epoch / 5)))


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise SamdgError(f"{name} must be at least 1, got {value}")


def _apply_method_input_size(plans: Plans, by_family: dict[str, int], method: str,
                             overrides: dict[str, Any]) -> None:
    """A method may prefer an input size per backbone family (DAPSAM trains ViT-B at 384). It replaces the plan's
    ``sam.input_size`` unless the user set that key, and the change is recorded as a decision."""
    if "sam.input_size" in overrides or not by_family:
        return
    from samdg.models.backbones import get_variant

    size = by_family.get(get_variant(plans.sam.variant).family, 0)
    if size and size != plans.sam.input_size:
        from samdg.planning.plans import Decision

        plans.decisions.append(Decision("sam.input_size", size, f"method {method} trains this backbone family at "
                                        f"{size} px (its input_size_by_family); planner chose {plans.sam.input_size}"))
        plans.sam.input_size = size


def plans_for_method(dataset_name: str, method: str, overrides: dict[str, Any],
                     source_domains: list[str] | None = None) -> Plans:
    """The dataset's saved plans, ``method``'s block checked and completed with the defaults of settings added
    since planning (or all defaults for a method registered after planning), the planner's cross-domain
    augmentation when ``source_domains`` are given, then the overrides applied (a bad key, type or value is a
    SamdgError naming the key)."""
    from samdg.models.methods import resolve_settings
    from samdg.planning.api import load_plans
    from samdg.planning.planner import choose_cross_domain_augmentation

    plans = choose_cross_domain_augmentation(load_plans(dataset_name), source_domains, overrides)
    plans.methods[method] = to_plain(resolve_settings(method, plans.methods.get(method)))
    if overrides:
        plans = apply_overrides(plans, overrides)
    by_family = resolve_settings(method, plans.methods[method]).input_size_by_family
    _apply_method_input_size(plans, by_family, method, overrides)
    return plans


def model_defining_plan(plans: Plans, method: str) -> dict[str, Any]:
    """The part of a plan (with overrides) that defines the model ``method`` trains: everything but the decision log,
    the other methods' settings and the number of data-loading workers, with the method's settings as its last
    stage trains them (a multi-stage method's ``stage: auto`` ends in the fold folder's model). Two runs with equal
    values train the same model; a difference means a reused or continued model is not the one asked for."""
    data = plans.to_dict()
    data.pop("decisions")
    data["methods"] = {method: _last_stage_settings(method, data["methods"].get(method))}
    data["training"].pop("num_workers")
    return data


def _last_stage_settings(method: str, block: dict[str, Any] | None) -> dict[str, Any] | None:
    """A multi-stage method's settings block as its last training stage has it; any other block as written."""
    from samdg.models.methods import get_method, list_methods, resolve_settings

    if block is None or method not in list_methods():
        return block
    try:
        stages = get_method(method).training_stages(resolve_settings(method, block))
    except SamdgError:  # a stale block: compared as written, so the difference names it
        return block
    return to_plain(stages[-1][1]) if len(stages) > 1 else block


def plan_differences(trained: dict[str, Any], asked: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two :func:`model_defining_plan` dicts, as ``key=trained (asked x)``."""
    differences = []
    for key in sorted(set(trained) | set(asked)):
        old, new = trained.get(key), asked.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += plan_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}={json.dumps(old)} (asked {json.dumps(new)})")
    return differences


def resolve_run(args: TrainingArgs, device_type: str, world_size: int = 1) -> TrainingRun:
    """Check the arguments against what exists on disk and gather everything the trainer needs."""
    from samdg.models.methods import get_method, resolve_settings

    get_method(args.method)  # unknown method -> error listing the registered ones
    fold = parse_fold(args.fold)
    if args.embedding_cache not in CACHE_MODES:
        raise SamdgError(f"--embedding-cache {args.embedding_cache}: choose one of {', '.join(CACHE_MODES)}")
    _positive("--epochs", args.epochs)
    _positive("--iters-per-epoch", args.iters_per_epoch)
    _positive("--batch-size", args.batch_size)
    if args.num_workers is not None and args.num_workers < 0:
        raise SamdgError(f"--num-workers must be >= 0, got {args.num_workers}")

    dataset_name = resolve_dataset_name(args.dataset)
    preprocessed_dir = preprocessed_dataset_dir(dataset_name)
    plans_path = preprocessed_dir / f"{PLANS_NAME}.json"
    plans = plans_for_method(dataset_name, args.method, args.overrides, args.source_domains)
    method_settings = resolve_settings(args.method, plans.methods[args.method])
    label_spec = LabelSpec.from_dataset_json(plans.labels, plans.regions_class_order, str(plans_path))

    cases = load_preprocessed_cases(preprocessed_dir / plans.data_identifier, label_spec.ignore_label,
                                    hint=f"; run samdg_plan_and_preprocess -d {dataset_name}")
    domains = {case_id: case.domain for case_id, case in cases.items()}
    train_cases, val_cases = fold_cases(preprocessed_dir, domains, fold, args.source_domains)

    training = plans.training
    # Precedence: command line > the method's own published default (GPU only) > the plan's training block.
    method_batch = method_settings.batch_size or None
    batch = args.batch_size or (
        (method_batch or training.batch_size) if device_type == "cuda" else training.batch_size_cpu)
    if batch % world_size:
        raise SamdgError(f"the global batch size {batch} does not divide by the {world_size} processes; pick a "
                         f"multiple of {world_size} with --batch-size")
    iters = args.iters_per_epoch or training.iterations_per_epoch
    # Augmentation is fine (the cache then holds K augmented views per slice), random crops are not: validation
    # and whole-volume prediction look up whole slices.
    if args.embedding_cache != "off" and plans.sam.inplane_crop is not None:
        raise SamdgError(f"--embedding-cache {args.embedding_cache} needs whole slices, but sam.inplane_crop is "
                         f"{plans.sam.inplane_crop} (random crops); use --embedding-cache off")
    dataset_json = preprocessed_dir / "dataset.json"
    return TrainingRun(
        args=args,
        dataset_name=dataset_name,
        fold=fold,
        plans=plans,
        label_spec=label_spec,
        cases=cases,
        train_cases=train_cases,
        val_cases=val_cases,
        epochs=args.epochs or method_settings.num_epochs or training.num_epochs,
        iters_per_epoch=iters,
        val_iterations=validation_iterations(iters),
        global_batch_size=batch,
        num_workers=training.num_workers if args.num_workers is None else args.num_workers,
        augmentation=training.augmentation,
        method_settings=method_settings,
        preprocessed_dir=preprocessed_dir,
        dataset_json_path=dataset_json if dataset_json.is_file() else None,
    )

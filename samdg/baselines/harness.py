"""How ``samdg_train`` and ``samdg_benchmark`` drive an external baseline (see :mod:`samdg.baselines`).

The CLIs call these when the method named on the command line is an external baseline; the rest of their work
(protocols, evaluation, matrix, overlays) is the same as for samdg's own methods.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from samdg.baselines import get_external_baseline
from samdg.errors import SamdgError


def _request(name: str, **fields: Any):
    baseline = get_external_baseline(name)
    module = baseline.load()
    return module, module.TrainRequest(**fields, **baseline.settings)


def unused_options(name: str, given: dict[str, bool]) -> str:
    """One line naming the options given that the baseline ignores ('' when none): it configures itself."""
    names = [option for option, is_given in given.items() if is_given]
    if not names:
        return ""
    return f"{name}: {', '.join(names)} do(es) not apply to this external baseline (it plans its own training)"


def train_from_cli(namespace: argparse.Namespace) -> Path:
    """``samdg_train DATASET nnunet FOLD [--source-domains A] [--epochs N] [--iters-per-epoch N]`` -> fold folder."""
    from samdg.training.splits import parse_domains, parse_fold

    fold = str(parse_fold(namespace.fold))
    refused = unused_options(namespace.method, {"--override": bool(namespace.override),
                                                "--embedding-cache": namespace.embedding_cache != "off",
                                                "--batch-size": namespace.batch_size is not None})
    if refused:
        raise SamdgError(refused)
    for option, value in (("--epochs", namespace.epochs), ("--iters-per-epoch", namespace.iters_per_epoch)):
        if value is not None and value < 1:
            raise SamdgError(f"{option} must be at least 1, got {value}")
    module, request = _request(namespace.method, dataset=namespace.dataset, fold=fold,
                               source_domains=parse_domains(namespace.source_domains), epochs=namespace.epochs,
                               iters_per_epoch=namespace.iters_per_epoch, device=namespace.device,
                               final_validation=namespace.final_validation, num_workers=namespace.num_workers)
    fold_dir, _ = module.train_model(request, log=lambda line: print(line, flush=True))
    return fold_dir


def train_for_benchmark(settings, dataset_name: str, training_domains: list[str],
                        log: Callable[[str], None]) -> tuple[Path, str]:
    """The fold-``all`` model of ``settings.method`` on ``training_domains`` -> (fold folder, trained | reused).
    ``settings`` is the benchmark's :class:`samdg.benchmark.runner.BenchmarkSettings`."""
    module, request = _request(settings.method, dataset=dataset_name, fold="all",
                               source_domains=sorted(training_domains), epochs=settings.epochs,
                               iters_per_epoch=settings.iters_per_epoch, device=settings.device,
                               num_processes=settings.num_processes)
    return module.train_model(request, log=log)


def predict_for_benchmark(settings, fold_dir: Path, cases: dict[str, list[str]], prediction_dir: Path,
                          file_ending: str):
    """Predict ``cases`` (id -> image files) into ``prediction_dir`` -> (PredictionReport, whether finished
    predictions were redone because the model changed)."""
    module = get_external_baseline(settings.method).load()
    return module.predict_cases(fold_dir, cases, prediction_dir, file_ending, settings.device, settings.mirroring)


def check_benchmark_settings(settings, log: Callable[[str], None]) -> None:
    """The baseline is installed; options it does not use are said once (they still apply to the other methods of
    a multi-method call)."""
    get_external_baseline(settings.method).load()
    ignored = unused_options(settings.method, {"--override": bool(settings.overrides),
                                               "--embedding-cache": settings.embedding_cache != "off",
                                               "-b": settings.predict_batch_size is not None})
    if ignored:
        log(f"{ignored}; ignored")

"""``samdg_benchmark -d ID -m METHOD --protocol single-source|leave-one-domain-out``: a cross-domain benchmark.

Trains (or reuses) one model per source selection, predicts the test cases of every domain, evaluates them and
writes the source x target matrix of Dice and HD95 (matrix.csv, matrix.md, matrix.png) and overlay PNGs of the
best and worst case per target. See documentation/cross_domain.md.

``samdg_benchmark -d ID --preset NAME`` runs a paper's protocol (samdg/benchmark/presets/NAME.json, see
documentation/datasets.md); options given on the command line win over the preset's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from samdg.cli.common import entry_point, parse_overrides
from samdg.errors import SamdgError


def build_parser() -> argparse.ArgumentParser:
    from samdg.baselines import method_choices_help
    from samdg.benchmark.preset import SPLITS, list_presets
    from samdg.benchmark.protocols import PROTOCOLS
    from samdg.training.embedding_cache import CACHE_MODES

    parser = argparse.ArgumentParser(
        prog="samdg_benchmark",
        description="Cross-domain benchmark of one method on a dataset with a 'domains' map: train (or reuse) the "
                    "models of the protocol, predict every domain's test cases, evaluate, and write the source x "
                    "target matrix of Dice and HD95 with overlays of the best and worst cases.",
    )
    parser.add_argument("-d", "--dataset", required=True,
                        help="dataset id or DatasetXXX_Name (planned and preprocessed)")
    parser.add_argument("-m", "--method",
                        help="method(s), comma-separated for one combined table (e.g. sam,desam,nnunet): "
                             f"{method_choices_help()} (required unless the preset sets one)")
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="single-source: one model per source domain, tested on every domain; "
                             "leave-one-domain-out: train on all domains but one, test on it (required unless "
                             "--preset)")
    parser.add_argument("--sources", metavar="A,B", help="single-source: the source domains to train on; "
                                                         "leave-one-domain-out: the domains to hold out (default: all)")
    parser.add_argument("--targets", metavar="A,B", help="the domains to test, the matrix columns (default: all)")
    parser.add_argument("--preset", metavar="NAME",
                        help=f"a paper's protocol ({', '.join(list_presets())}): sets the method, protocol, "
                             "sources, targets, split, plan overrides and --paper-metrics, and prints them; options "
                             "given on the command line win (documentation/datasets.md)")
    parser.add_argument("-o", "--output",
                        help="output folder (default $SAMDG_results/DatasetXXX/benchmark__<method>__<protocol or "
                             "preset>)")
    train = parser.add_argument_group("training (passed to samdg_train for models not trained yet)")
    train.add_argument("--epochs", type=int, help="epochs (default: the plan's)")
    train.add_argument("--iters-per-epoch", type=int, help="iterations per epoch (default: the plan's)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to train and predict (default auto: cuda when available)")
    train.add_argument("--embedding-cache", choices=CACHE_MODES, default="off",
                       help="cache frozen-encoder features while training (augmented: K views per slice)")
    train.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                       help="plans entry for training, e.g. training.augmentation=none (repeatable)")
    train.add_argument("--split", choices=SPLITS,
                       help="all (default): train on every case of the source domains; first90: DeSAM's split, "
                            "the first 90 %% of the source patients train and the last 10 %% validate")
    predict = parser.add_argument_group("prediction and evaluation")
    predict.add_argument("-b", "--batch-size", type=int, help="slices per forward pass when predicting")
    predict.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (4 passes)")
    predict.add_argument("--paper-metrics", action=argparse.BooleanOptionalAction, default=None,
                         help="also the papers' Dice over foreground slices only and per-image Dice, in extra "
                              "paper_* columns and tables beside the whole-volume metrics (they inflate Dice: no "
                              "penalty for false positives on empty slices)")
    predict.add_argument("--prompt", choices=("automatic", "gt-box"), default="automatic",
                         help="automatic (default: each method's prompt-free mode) or gt-box: evaluation only, every "
                              "class in every slice prompted by the box of its reference mask (methods with a "
                              "box-prompted mode: sam, dbsam, desam); tables are labelled 'ground-truth box prompts "
                              "(oracle)' and go to benchmark__<method>__<protocol>__gt-box")
    predict.add_argument("-np", "--num-processes", type=int, default=2, help="evaluation worker processes (default 2)")
    predict.add_argument("--disable-progress-bar", action="store_true", help="no progress bars")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    from samdg.benchmark.runner import BenchmarkSettings, print_result, run_benchmark

    args = build_parser().parse_args(argv)
    for name, value in (("--epochs", args.epochs), ("--iters-per-epoch", args.iters_per_epoch),
                        ("--batch-size", args.batch_size), ("-np", args.num_processes)):
        if value is not None and value < 1:
            raise SamdgError(f"{name} must be at least 1, got {value}")
    protocol = protocol_settings(args)
    settings = BenchmarkSettings(
        dataset=args.dataset, method=protocol["method"], protocol=protocol["protocol"], sources=protocol["sources"],
        targets=protocol["targets"], fold=protocol["split"], paper_metrics=protocol["paper_metrics"],
        preset=args.preset, epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch, device=args.device, embedding_cache=args.embedding_cache,
        overrides=protocol["overrides"], predict_batch_size=args.batch_size,
        mirroring=args.tta, output_dir=args.output, num_processes=args.num_processes, prompt=args.prompt,
        progress=not args.disable_progress_bar,
    )
    methods = parse_methods(settings.method)
    if len(methods) > 1:
        return run_several(settings, methods)
    result = run_benchmark(settings, log=lambda message: print(message, flush=True))
    print_result(result)
    failed = sum(len(model["failed"]) for model in result["models"])
    return 1 if failed else 0


def protocol_settings(args: argparse.Namespace) -> dict:
    """method, protocol, sources, targets, split, overrides and paper_metrics: the command line's, else the
    ``--preset``'s (printed with where each came from); -m and --protocol are required without a preset."""
    from samdg.benchmark.preset import describe, load_preset, merge

    given = {"method": args.method, "protocol": args.protocol, "sources": args.sources, "targets": args.targets,
             "split": args.split, "overrides": parse_overrides(args.override), "paper_metrics": args.paper_metrics}
    if args.preset:
        preset = load_preset(args.preset)
        chosen = merge(preset, given)
        print("\n".join(describe(preset, chosen)), flush=True)
        given = {key: value for key, (value, _) in chosen.items()}
    if not given["method"]:
        raise SamdgError("-m/--method is required" + (f" (preset {args.preset} sets no method)" if args.preset
                                                      else " (or --preset NAME)"))
    if not given["protocol"]:
        raise SamdgError("--protocol is required (or --preset NAME)")
    return {**given, "split": given["split"] or "all", "paper_metrics": bool(given["paper_metrics"])}


def parse_methods(text: str) -> list[str]:
    """``"sam, nnunet"`` -> ["sam", "nnunet"] (order kept, duplicates dropped); each must be a method or an
    external baseline."""
    from samdg.baselines import is_external_baseline, method_choices_help
    from samdg.models.methods import list_methods

    methods = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [m for m in methods if m not in list_methods() and not is_external_baseline(m)]
    if unknown or not methods:
        names = "', '".join(unknown) if unknown else ""
        raise SamdgError(f"unknown method '{names}'; registered methods: {method_choices_help()}")
    return methods


def run_several(settings, methods: list[str]) -> int:
    """One benchmark per method (each in its own folder; under ``-o`` in ``<output>/<method>``), then the
    combined table (comparison.md/.csv) in ``-o`` or ``benchmark__<m1>+<m2>...__<protocol>``."""
    from dataclasses import replace
    from pathlib import Path

    from samdg.benchmark.comparison import write_comparison
    from samdg.benchmark.runner import benchmark_dir, prompt_title, run_benchmark
    from samdg.paths import resolve_dataset_name

    if settings.prompt == "gt-box":  # every method checked before the first one trains
        from samdg.baselines import is_external_baseline
        from samdg.inference.box_prompts import check_box_prompts
        from samdg.models.methods import get_method

        for method in methods:
            check_box_prompts(None if is_external_baseline(method) else get_method(method), method)
    dataset_name = resolve_dataset_name(settings.dataset)
    output = Path(settings.output_dir) if settings.output_dir else benchmark_dir(
        dataset_name, "+".join(methods), settings.preset or settings.protocol, settings.prompt)
    results = []
    for method in methods:
        print(f"== {method}", flush=True)
        method_output = str(output / method) if settings.output_dir else None
        results.append(run_benchmark(replace(settings, method=method, output_dir=method_output),
                                     log=lambda message: print(message, flush=True)))
    files = write_comparison(output, results, f"{dataset_name}: {', '.join(methods)}, {settings.protocol}"
                                              f"{prompt_title(settings)}")
    print(files["markdown"].read_text(encoding="utf-8"))
    print(f"files: {output}")
    failed = sum(len(model["failed"]) for result in results for model in result["models"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

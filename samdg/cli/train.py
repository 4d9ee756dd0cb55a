"""``samdg_train DATASET METHOD FOLD``: train one fold of a method (see documentation/training.md).

Multi-GPU / multi-node: run the same command under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import os

from samdg.baselines import is_external_baseline
from samdg.cli.common import entry_point, parse_overrides
from samdg.errors import SamdgError

MAX_SEED = 2**32  # numpy's generators take seeds in [0, 2**32)


def check_seed(seed: int) -> None:
    """A seed numpy and torch both accept, said before anything is created."""
    if not 0 <= seed < MAX_SEED:
        raise SamdgError(f"--seed {seed}: must be between 0 and {MAX_SEED - 1}")


def build_parser() -> argparse.ArgumentParser:
    from samdg.baselines import method_choices_help
    from samdg.training.embedding_cache import CACHE_MODES
    from samdg.training.splits import FOLD_CHOICES

    parser = argparse.ArgumentParser(
        prog="samdg_train",
        description="Train a SAM-based method on one fold of a preprocessed dataset. Results go to "
                    "$SAMDG_results/DatasetXXX_Name/<method>__samdgPlans__2d/fold_<f>/.",
    )
    parser.add_argument("dataset", help="dataset id (5) or folder name (Dataset005_Prostate)")
    parser.add_argument("method", help=f"registered method or external baseline: {method_choices_help()}")
    parser.add_argument("fold", help=f"cross-validation fold: {', '.join(FOLD_CHOICES)}")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: the plan's training.num_epochs)")
    parser.add_argument("--iters-per-epoch", type=int,
                        help="iterations per epoch (default: the plan's training.iterations_per_epoch)")
    parser.add_argument("--batch-size", type=int,
                        help="global batch size, split across torchrun processes (default: the plan's "
                             "training.batch_size on cuda, batch_size_cpu on cpu)")
    parser.add_argument("--device", default="auto",
                        help="where to train: auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--source-domains", metavar="A,B",
                        help="train (and validate) only on the cases of these domains; the fold folder gets the "
                             "suffix __src-A+B")
    parser.add_argument("--c", dest="continue_training", action="store_true",
                        help="continue from this fold's last checkpoint")
    parser.add_argument("--embedding-cache", choices=CACHE_MODES, default="off",
                        help="cache frozen-encoder features: memory or disk (augmented: K views per slice); "
                             "default off")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a plans entry for this run, e.g. training.augmentation=none or "
                             "methods.sam.lora_rank=4 (repeatable; recorded in the results folder's plans.json)")
    parser.add_argument("--stage", choices=("auto", "teacher", "distill", "segment"),
                        help="training stage of a multi-stage method (espmedsam; default: the plan's, auto = the "
                             "stages the fold has not finished for this plan, then segmentation): same as "
                             "--override methods.<method>.stage=STAGE")
    parser.add_argument("--num-workers", type=int, help="data-loading processes (default: the plan's)")
    parser.add_argument("--seed", type=int, default=12345, help=f"random seed, 0 to {MAX_SEED - 1} (default 12345)")
    parser.add_argument("--no-pbar", dest="progress_bar", action="store_false", help="no progress bar")
    parser.add_argument("--no-final-validation", dest="final_validation", action="store_false",
                        help="skip the whole-volume validation after the last epoch")
    return parser


def args_from_namespace(namespace: argparse.Namespace):
    from samdg.training.config import TrainingArgs
    from samdg.training.splits import parse_domains, parse_fold

    parse_fold(namespace.fold)
    check_seed(namespace.seed)
    overrides = parse_overrides(namespace.override)
    if namespace.stage is not None:
        overrides[f"methods.{namespace.method}.stage"] = namespace.stage
    return TrainingArgs(
        dataset=namespace.dataset,
        method=namespace.method,
        fold=namespace.fold,
        epochs=namespace.epochs,
        iters_per_epoch=namespace.iters_per_epoch,
        batch_size=namespace.batch_size,
        device=namespace.device,
        source_domains=parse_domains(namespace.source_domains),
        continue_training=namespace.continue_training,
        embedding_cache=namespace.embedding_cache,
        overrides=overrides,
        num_workers=namespace.num_workers,
        seed=namespace.seed,
        progress_bar=namespace.progress_bar,
        final_validation=namespace.final_validation,
    )


@entry_point
def main(argv: list[str] | None = None) -> int:
    from samdg.training.trainer import train

    namespace = build_parser().parse_args(argv)
    if is_external_baseline(namespace.method):  # nnU-Net and the like: their own planning and trainer
        from samdg.baselines.harness import train_from_cli

        print(f"samdg: results in {train_from_cli(namespace)}")
        return 0
    output_dir = train(args_from_namespace(namespace))
    if os.environ.get("RANK", "0") == "0":
        print(f"samdg: results in {output_dir}")
    return 0


if __name__ == "__main__":
    main()

"""``samdg_plan_and_preprocess``: integrity check, fingerprint, plans and preprocessing of raw datasets.

    samdg_plan_and_preprocess -d 5                       # Dataset005_*, everything
    samdg_plan_and_preprocess -d 5 --verify_only         # only the integrity check
    samdg_plan_and_preprocess -d 5 -np 4 --override training.batch_size=8 --override sam.variant=vit_b
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from samdg.cli.common import entry_point, parse_overrides
from samdg.errors import SamdgError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samdg_plan_and_preprocess",
        description="Check raw datasets, extract their fingerprint, plan the SAM experiment and preprocess the "
                    "training cases into $SAMDG_preprocessed.")
    parser.add_argument("-d", nargs="+", required=True, metavar="ID",
                        help="dataset id(s) or DatasetXXX_Name folder name(s)")
    parser.add_argument("--verify_only", action="store_true", help="only run the integrity check")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint and redo every case")
    parser.add_argument("-np", type=int, default=None, metavar="N",
                        help="worker processes (default: half the CPU cores)")
    parser.add_argument("--variant", default=None, help="SAM variant (default: a ViT whose checkpoint is in "
                                                        "$SAMDG_weights, else litemedsam)")
    parser.add_argument("--checkpoint", default=None, help="weights file for the variant")
    parser.add_argument("--gpu-memory-gb", "--gpu_memory_gb", dest="gpu_memory_gb", type=float, default=None,
                        help="memory of the training GPU in GiB (default: free memory of this machine's GPU, else 80)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a plans entry (dotted key, JSON value), repeatable; see documentation/plans.md")
    parser.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    parser.add_argument("--no_pbar", action="store_true", help="no progress bars")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.utils.pool import default_num_processes

    overrides = parse_overrides(args.override)
    num_processes = args.np if args.np is not None else default_num_processes()
    if num_processes < 1:
        raise SamdgError(f"-np must be at least 1, got {num_processes}")
    for dataset in args.d:
        plan_and_preprocess(dataset, num_processes=num_processes, clean=args.clean, verify_only=args.verify_only,
                            variant=args.variant, checkpoint=args.checkpoint, gpu_memory_gb=args.gpu_memory_gb,
                            overrides=overrides, preprocess=not args.no_pp, progress=not args.no_pbar,
                            log=lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

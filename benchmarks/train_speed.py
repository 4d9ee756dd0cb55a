"""Training throughput, peak memory and validation Dice of the ``sam`` baseline on the synthetic dataset.

    python benchmarks/train_speed.py --out train_speed.json                    # on a CUDA GPU (H100 for the record)
    python benchmarks/train_speed.py --out /tmp/smoke.json --smoke             # CPU check that the script runs

What it does, in a scratch folder (``--work-dir``, default a temp folder) with its own SAMDG_* roots: writes the
synthetic 3-domain dataset (``samdg_make_synthetic``, 6 training cases per domain, 96x96x24), plans and
preprocesses it for LiteMedSAM, and trains ``sam`` on fold 0 with the real pretrained LiteMedSAM weights for a fixed
number of epochs x iterations (default 5 x 100, global batch from the plan unless ``--batch-size``), bf16 autocast
on CUDA. Reported:

- training slices/s: median over epochs 2..N of (iterations x global batch) / training time of the epoch
  (data loading included, validation excluded; epoch 1 is warm-up);
- peak GPU memory (``torch.cuda.max_memory_allocated``) over the run;
- validation Dice: slice-level pseudo Dice of the last epoch and whole-volume Dice of the held-out fold-0 cases
  (foreground mean over classes, preprocessed space).

Writes JSON to ``--out`` and a Markdown row next to it (same name, ``.md``) for documentation/benchmarks.md
("Training"). ``--smoke`` trains the tiny random TinyViT on the CPU for a few iterations (figures meaningless) to
check the script; ``--embedding-cache memory`` with ``--augmentation none`` measures the cached-encoder path (the
CPU demo's setting).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET_ID = 901


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON output file (a .md table is written next to it)")
    parser.add_argument("--work-dir", help="scratch folder for the dataset and results (default: a temp folder)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--variant", default="litemedsam")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iters-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the plan's)")
    parser.add_argument("--num-workers", type=int, help="loader processes (default: the plan's)")
    parser.add_argument("--augmentation", default="default", choices=("default", "dg_strong", "none"))
    parser.add_argument("--embedding-cache", default="off", choices=("off", "memory", "disk"))
    parser.add_argument("--no-volume-validation", action="store_true",
                        help="skip the whole-volume validation (slow on a CPU: every slice of every held-out case)")
    parser.add_argument("--smoke", action="store_true", help="tiny variant, CPU, 2 x 2 iterations")
    args = parser.parse_args(argv)
    if args.smoke:
        args.variant, args.device, args.epochs, args.iters_per_epoch = "tiny_tinyvit_test", "cpu", 2, 2
        args.batch_size, args.num_workers = args.batch_size or 2, 0
    return args


def run(args: argparse.Namespace, work: Path) -> dict:
    for kind in ("raw", "preprocessed", "results", "weights"):
        (work / kind).mkdir(parents=True, exist_ok=True)
        os.environ[f"SAMDG_{kind}"] = str(work / kind)

    import torch

    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.paths import raw_root
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training import TrainingArgs, train

    name = f"Dataset{DATASET_ID:03d}_Synthetic"
    if not (raw_root() / name / "dataset.json").is_file():
        shape = (32, 32, 6) if args.smoke else (96, 96, 24)
        make_synthetic_dataset(raw_root() / name, num_domains=3, cases_per_domain=6, test_cases_per_domain=0,
                               shape=shape)
    plan_and_preprocess(name, variant=args.variant, progress=False, log=lambda message: None)
    overrides = {"training.augmentation": args.augmentation}
    fold_dir = train(TrainingArgs(dataset=name, method="sam", fold="0", epochs=args.epochs,
                                  iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size, device=args.device,
                                  embedding_cache=args.embedding_cache, overrides=overrides,
                                  num_workers=args.num_workers, progress_bar=False,
                                  final_validation=not args.no_volume_validation))

    records = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    summary_file = fold_dir / "validation" / "summary.json"
    no_summary = {"foreground_mean": None, "mean": None}
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else no_summary
    training_args = json.loads((fold_dir / "training_args.json").read_text())
    steady = [r["slices_per_second"] for r in records[1:]] or [records[0]["slices_per_second"]]
    cuda = torch.cuda.is_available() and training_args["device"] != "cpu"
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "variant": args.variant,
        "epochs": args.epochs,
        "iters_per_epoch": args.iters_per_epoch,
        "global_batch_size": training_args["global_batch_size"],
        "augmentation": args.augmentation,
        "embedding_cache": args.embedding_cache,
        "num_workers": training_args["num_workers"],
        "precision": "bf16 autocast" if cuda else "fp32",
        "slices_per_second": round(statistics.median(steady), 2),
        "peak_memory_gib": max((r.get("peak_memory_gib", 0.0) for r in records), default=0.0) if cuda else None,
        "val_dice_slices_last_epoch": records[-1]["val_mean_dice"],
        "val_dice_volumes": summary["foreground_mean"],
        "val_dice_volumes_per_class": summary["mean"],
        "fold_dir": str(fold_dir),
    }


def markdown(result: dict) -> str:
    memory = "n/a (CPU)" if result["peak_memory_gib"] is None else f"{result['peak_memory_gib']:.2f} GiB"
    volumes = "not run" if result["val_dice_volumes"] is None else f"{result['val_dice_volumes']:.3f}"
    header = ("| device | variant | batch | augmentation / cache | slices/s | peak memory | val Dice (slices) | "
              "val Dice (volumes) |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    return header + (f"| {result['device']} ({result['precision']}) | {result['variant']} | "
                     f"{result['global_batch_size']} | "
                     f"{result['augmentation']} / {result['embedding_cache']} | {result['slices_per_second']:.1f} | "
                     f"{memory} | {result['val_dice_slices_last_epoch']:.3f} | {volumes} |\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    from samdg.utils.files import save_report

    if args.work_dir:
        result = run(args, Path(args.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="samdg_train_speed_") as scratch:
            result = run(args, Path(scratch))
            result["fold_dir"] = "(temporary)"
    print(json.dumps(result, indent=2))
    save_report(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

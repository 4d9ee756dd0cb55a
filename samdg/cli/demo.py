"""``samdg_demo``: the whole story on a synthetic multi-domain dataset, on the GPU if there is one, else the CPU.

make a 3-domain dataset -> plan and preprocess -> train the ``sam`` baseline (LiteMedSAM) on one domain ->
predict every test case -> evaluate per domain -> print the table. Each step is the same command a user runs,
called in-process; a rerun reuses what is already there (dataset, preprocessing, trained model, predictions).
On the CPU the encoder is frozen and each slice is encoded once (cached embeddings), which keeps it to minutes.
"""

from __future__ import annotations

import argparse
import sys

from samdg import paths
from samdg.cli.common import entry_point
from samdg.utils.device import DEVICE_CHOICES, resolve_device


def _say(step: str) -> None:
    print(f"\n=== samdg demo: {step} ===", flush=True)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="samdg_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset-id", type=int, default=901, help="id of the synthetic dataset (default 901)")
    parser.add_argument("-m", "--method", default="sam", help="method to train (default sam, the baseline)")
    parser.add_argument("--source", default="siteA", help="domain to train on (default siteA)")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default auto: a GPU if there is one)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 6 on the CPU, 20 on a GPU")
    parser.add_argument("--iters-per-epoch", type=int, default=None, help="default: 80 on the CPU, 100 on a GPU")
    parser.add_argument("--variant", default=None, help="SAM variant (default: the planner's choice, LiteMedSAM "
                        "unless a ViT checkpoint is in $SAMDG_weights)")
    args = parser.parse_args(argv)

    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.cli import evaluate, plan_and_preprocess, predict, train

    device = str(resolve_device(args.device))
    on_gpu = device.startswith("cuda")
    epochs = args.epochs or (20 if on_gpu else 6)
    # CPU: the plan's CPU batch (2 slices) and 480 steps. A step costs the same per slice at any batch size, and
    # the decoder learns the classes one after another (liver, spleen, then kidney), so in a few minutes more
    # steps of smaller batches get further than fewer large ones.
    iterations = args.iters_per_epoch or (100 if on_gpu else 80)

    _say(f"synthetic dataset {args.dataset_id} (3 domains)")
    name = paths.dataset_folder_name(args.dataset_id, "Synthetic")
    raw_folder = paths.raw_root() / name
    if (raw_folder / "dataset.json").is_file():
        print(f"reusing {raw_folder}")
    else:
        # On the CPU a LiteMedSAM encoder pass costs seconds per slice: fewer, thinner volumes keep the demo short.
        size = {} if on_gpu else {"cases_per_domain": 3, "test_cases_per_domain": 1, "shape": (96, 96, 16)}
        make_synthetic_dataset(raw_folder, **size)
        print(f"wrote {raw_folder}")

    _say("plan and preprocess")
    plan_and_preprocess.main(["-d", str(args.dataset_id), "-np", "2"]
                             + (["--variant", args.variant] if args.variant else []))

    _say(f"train '{args.method}' on domain {args.source} ({device}, {epochs} epochs x {iterations} iterations)")
    train_args = [str(args.dataset_id), args.method, "all", "--source-domains", args.source, "--device", device,
                  "--epochs", str(epochs), "--iters-per-epoch", str(iterations)]
    if not on_gpu:
        # frozen encoder, each slice encoded once; the whole-volume check is the evaluation below
        train_args += ["--embedding-cache", "memory", "--override", "training.augmentation=none",
                       "--no-final-validation"]
    train.main(train_args + ["--c"])

    predictions = paths.results_root() / name / f"demo_predictions__{args.method}__src-{args.source}"
    _say(f"predict every test case into {predictions}")
    predict.main(["-i", str(raw_folder / "imagesTs"), "-o", str(predictions), "-d", str(args.dataset_id),
                  "-m", args.method, "--source-domains", args.source, "--device", device,
                  "--batch-size", "16" if on_gpu else "4"])

    _say("evaluate per domain (whole volumes, every slice)")
    evaluate.main(["-ref", str(raw_folder / "labelsTs"), "-pred", str(predictions), "-d", str(args.dataset_id)])
    print(f"\nTrained on {args.source}; the other domains are unseen. Results: {predictions}", file=sys.stdout)
    return 0

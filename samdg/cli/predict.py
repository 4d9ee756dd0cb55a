"""``samdg_predict -i imagesTs -o predictions``: segment a folder of raw images with a trained model.

With exactly one trained model under ``$SAMDG_results`` nothing else is needed; otherwise ``-d``, ``-m``,
``--source-domains``, ``-f``, ``-chk`` or ``--model-dir`` select it (an ambiguous call lists the candidates).
See documentation/prediction.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.inference.box_prompts import BoxFilePrompts
from samdg.inference.model_selection import DEFAULT_CHECKPOINT, select_model
from samdg.inference.predictor import Predictor
from samdg.paths import check_output_folder
from samdg.utils.device import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samdg_predict",
        description="Predict every case of a folder of raw images ({case}_{XXXX}{ending}, as in imagesTr) and write "
                    "<case>{ending} label files with each input's exact geometry.",
    )
    parser.add_argument("-i", "--input", required=True, help="folder of raw images named {case}_0000{ending}, ...")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder (created; outside the raw data and the input folder; reruns skip the "
                             "cases prediction.json proves finished)")
    select = parser.add_argument_group("model selection (needed only when several trained models exist)")
    select.add_argument("-d", "--dataset", help="dataset id or DatasetXXX_Name")
    select.add_argument("-m", "--method", help="method name, e.g. sam")
    select.add_argument("--source-domains", help="model trained on these domains (comma-separated), or 'all' for the "
                                                 "model trained on every domain")
    select.add_argument("-f", "--folds", nargs="+",
                        help="folds to ensemble (numbers or 'all'); default: every numbered fold with the checkpoint, "
                             "else 'all'")
    select.add_argument("-chk", "--checkpoint", default=DEFAULT_CHECKPOINT,
                        help=f"checkpoint file name (default {DEFAULT_CHECKPOINT})")
    select.add_argument("--model-dir", help="a model folder (<method>__<plans>__2d) or one of its fold folders; "
                                            "no search in $SAMDG_results")
    run = parser.add_argument_group("prediction")
    run.add_argument("--device", default="auto",
                     help="auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    run.add_argument("-b", "--batch-size", type=int, help="slices per forward pass (default: the plan's batch size)")
    run.add_argument("--tta", action="store_true", help="mirroring test-time augmentation: average 4 in-plane flips "
                                                        "(4x the compute)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto (default: bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16, fp16")
    run.add_argument("--save-probabilities", action="store_true", help="also write <case>.npz with the per-class "
                                                                       "probabilities (float16)")
    run.add_argument("--overwrite", action="store_true",
                     help="predict every case again and replace files with output names that prediction.json does "
                          "not vouch for (default: skip cases it proves finished, refuse foreign files)")
    run.add_argument("--file-ending", help="input file ending (default: the training dataset's, else detected)")
    run.add_argument("--boxes", metavar="BOXES.json",
                     help="box prompts per case, slice and class in the raw images' voxel coordinates (format: "
                          "documentation/prediction.md); a slice without a box of a class is predicted empty for "
                          "it. For methods with a prompt encoder (sam, dbsam); default: automatic, no prompt")
    run.add_argument("--disable-progress-bar", action="store_true", help="no progress bar")
    return parser


def _check_folders(input_dir: Path, output_dir: Path) -> None:
    if input_dir.is_file():
        raise SamdgError(f"-i {input_dir}: is a file; give the folder that holds the {{case}}_0000 image files")
    if not input_dir.is_dir():
        raise SamdgError(f"-i {input_dir}: input folder not found")
    if output_dir.is_file():  # said before the model is loaded
        raise SamdgError(f"-o {output_dir}: is a file, not a folder; choose another output folder")
    check_output_folder(output_dir, "-o", (input_dir,))  # raw data and inputs are read-only


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    input_dir, output_dir = Path(args.input), Path(args.output)
    _check_folders(input_dir, output_dir)
    selection = select_model(args.dataset, args.method, args.folds, args.checkpoint, args.model_dir,
                             args.source_domains)
    model = selection.model
    print(f"model: {model.dataset}/{model.model_dir.name}"
          f"{' (sources ' + ','.join(model.source_domains) + ')' if model.source_domains else ''}, "
          f"fold(s) {', '.join(selection.folds)}, {args.checkpoint}", file=sys.stderr)
    boxes_file = Path(args.boxes) if args.boxes else None
    if boxes_file is not None and not boxes_file.is_file():  # said before the model is loaded
        raise SamdgError(f"--boxes {boxes_file}: file not found")
    predictor = Predictor.from_selection(selection, args.checkpoint, args.device, batch_size=args.batch_size,
                                         mirroring=args.tta, precision=args.precision,
                                         progress=not args.disable_progress_bar)
    if boxes_file is not None:
        predictor.use_box_prompts(BoxFilePrompts(boxes_file, predictor.label_spec))
    report = predictor.predict_folder(input_dir, output_dir, args.overwrite, args.save_probabilities, args.file_ending)
    print(report.summary_line(), file=sys.stderr)
    if report.failed:
        print("samdg: these cases failed (the others are written):", file=sys.stderr)
        for case_id, reason in sorted(report.failed.items()):
            print(f"  {case_id}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

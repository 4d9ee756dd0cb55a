"""samdg_evaluate: score predicted label maps against references, per case, per domain and pooled."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samdg.cli.common import entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samdg_evaluate",
        description="Dice, IoU, HD95 and ASSD (mm) per case and label over whole volumes, averaged per domain. "
                    "Writes per_case.csv, per_domain.csv and summary.json.",
    )
    parser.add_argument("-ref", required=True, help="folder of reference label files (<case><file_ending>)")
    parser.add_argument("-pred", required=True, help="folder of predicted label files with the same names")
    parser.add_argument("-d", dest="dataset", default=None,
                        help="dataset id or name whose raw dataset.json gives labels, regions, ignore label and "
                             "domains (default: dataset.json in -pred, else in the parent of -ref)")
    parser.add_argument("-o", dest="output", default=None,
                        help="output folder (default: the -pred folder); never inside SAMDG_raw or the -ref folder")
    parser.add_argument("-np", dest="num_processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip references without a prediction (listed in summary.json) instead of failing")
    parser.add_argument("--file-ending", default=None,
                        help="file ending such as .nii.gz (default: dataset.json's, else detected from -ref)")
    parser.add_argument("--paper-metrics", action="store_true",
                        help="also the papers' Dice over foreground slices only and per-image Dice (extra paper_* "
                             "columns; they inflate Dice: no penalty for false positives on empty slices)")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from samdg.paths import check_output_folder

    output = Path(args.output) if args.output else Path(args.pred)
    # said before anything is read: the tables must not land in the raw data or among the reference labels
    check_output_folder(output, "-o" if args.output else "-o (default: the -pred folder)", (Path(args.ref),))
    import pandas as pd

    from samdg.evaluation.aggregate import group_statistics, metric_columns
    from samdg.evaluation.evaluate import PER_CASE_FILE, PER_DOMAIN_FILE, SUMMARY_FILE, evaluate_folders
    from samdg.evaluation.inputs import find_dataset_json, setup_from_dataset_json
    from samdg.evaluation.report import per_domain_markdown

    setup = setup_from_dataset_json(find_dataset_json(args.ref, args.pred, args.dataset))
    for note in setup.notes:
        print(f"samdg: {note}", file=sys.stderr)
    extra = {"dataset_json": str(setup.dataset_json) if setup.dataset_json else None}
    summary = evaluate_folders(args.ref, args.pred, setup.label_spec, setup.domains, output, args.num_processes,
                               file_ending=args.file_ending or setup.file_ending, allow_missing=args.allow_missing,
                               extra=extra, paper_metrics=args.paper_metrics)

    unmapped = [c["case"] for c in summary["metric_per_case"] if setup.domains and c["case"] not in setup.domains]
    if unmapped:
        print(f"samdg: {len(unmapped)} case(s) are not in the 'domains' map of {setup.dataset_json} and were put in "
              f"domain 'default': {', '.join(unmapped)}", file=sys.stderr)
    skipped = summary["skipped"]
    if skipped["missing_prediction"]:
        print(f"samdg: skipped {len(skipped['missing_prediction'])} reference case(s) without a prediction: "
              f"{', '.join(skipped['missing_prediction'])}", file=sys.stderr)
    if skipped["no_reference"]:
        print(f"samdg: ignored {len(skipped['no_reference'])} prediction(s) without a reference: "
              f"{', '.join(skipped['no_reference'])}", file=sys.stderr)
    per_case = pd.read_csv(output / PER_CASE_FILE, keep_default_na=False, na_values=["NaN"])
    per_domain = pd.read_csv(output / PER_DOMAIN_FILE, keep_default_na=False, na_values=["NaN"])
    pooled = group_statistics(per_case, ["label"]) if per_domain["domain"].nunique() > 1 else None
    print(per_domain_markdown(per_domain, metric_columns(per_case), pooled=pooled))
    print("\nDice/IoU are NaN (left out of means) when a label is absent from both reference and prediction; "
          "HD95/ASSD are NaN when either mask is empty (see the 'missed' and 'false positive' columns).")
    if args.paper_metrics:
        print(summary["paper_metrics_note"])
    print(f"Wrote {output / PER_CASE_FILE}, {output / PER_DOMAIN_FILE} and {output / SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

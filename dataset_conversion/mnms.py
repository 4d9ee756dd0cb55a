"""``samdg_convert_mnms``: the M&Ms cardiac MR challenge (multi-vendor, multi-centre) -> the raw layout.

    samdg_convert_mnms -i ~/data/OpenDataset                 # -> $SAMDG_raw/Dataset222_MnMs

The download (``OpenDataset``, from www.ub.edu/mnms after accepting the data use agreement) holds the information
CSV (``201014_M&Ms_Dataset_Information_-_opendataset.csv``, or the later ``211230_..._diagnosis_opendataset.csv``;
the one ``.csv`` file of the folder is used, or give ``--info-csv``) and one folder per subject, named by its
External code, in ``Training/Labeled``, ``Training/Unlabeled``, ``Validation`` and ``Testing``; each holds
``<code>_sa.nii.gz`` (4D short-axis cine, X x Y x slices x frames) and, when labelled, ``<code>_sa_gt.nii.gz``.

Each labelled subject gives two 3D cases, ``<code>_ED`` and ``<code>_ES``: the image and label frames at the CSV's
``ED`` and ``ES`` columns (0-based frame indices), with the 4D file's affine and 3D voxel sizes. Labels are kept as
they are: 1 LV (blood pool), 2 MYO, 3 RV. The domain of a case is its ``Vendor`` letter (A Siemens, B Philips,
C GE, D Canon). ``Training/Labeled`` and ``Validation`` go to ``imagesTr``/``labelsTr`` and ``Testing`` to
``imagesTs``/``labelsTs`` (the challenge's own test set, so that every vendor has test cases for a
leave-one-vendor-out benchmark); ``Training/Unlabeled`` has no labels and is skipped. The input is only read;
every file is written atomically, and a rerun writes only what is missing.

What was verified, and where: the folder layout, file names, CSV columns (``External code``, ``Vendor``,
``Centre``, ``ED``, ``ES``), the use of ED/ES as 0-based indices into the 4th axis and the labels 1 LV blood pool,
2 LV myocardium, 3 RV: nnU-Net v2's ``Dataset114_MNMs.py`` conversion and other public M&Ms loaders (which read the
same CSV columns and ``<code>_sa.nii.gz`` / ``_sa_gt.nii.gz`` files). The nnU-Net code notes non-orthonormal
direction cosines in some Validation/Testing headers: the affine is kept as it is, not "repaired".
Checked, not assumed: a label frame at ED or ES that is empty (a 1-based index would do that) or a label value
outside 0..3 is an error naming the file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.common import (
    converter_parser,
    domain_table,
    input_folder,
    list_files,
    load_nifti,
    prepare_target,
    read_csv,
    require,
    write_dataset_json,
    write_nifti,
)
from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.utils.pool import run_parallel

CONVERTED_BY = "samdg_convert_mnms"
DEFAULT_ID = 222
DATASET_NAME = "MnMs"
LABELS = {"background": 0, "LV": 1, "MYO": 2, "RV": 3}
CSV_COLUMNS = ("External code", "Vendor", "ED", "ES")
PHASES = ("ED", "ES")
# Download folder -> (output split, labelled?)
SPLITS = {"Training/Labeled": ("Tr", True), "Training/Unlabeled": (None, False), "Validation": ("Tr", True),
          "Testing": ("Ts", True)}
_SUBJECT = re.compile(r"[A-Za-z0-9]+")


def find_info_csv(source: Path) -> Path:
    """The one ``.csv`` file directly in the download folder."""
    found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if len(found) != 1:
        what = "no .csv file" if not found else f"{len(found)} .csv files ({', '.join(p.name for p in found)})"
        raise SamdgError(f"{source}: {what}; the M&Ms information CSV (External code, Vendor, ED, ES) is expected "
                         "there; give it with --info-csv")
    return found[0]


def read_info_csv(path: Path) -> dict[str, tuple[str, int, int]]:
    """External code -> (vendor, ED frame, ES frame) from the M&Ms information CSV."""
    header, rows = read_csv(path)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SamdgError(f"{path}: no column(s) {', '.join(missing)}; the M&Ms information CSV has "
                         f"{', '.join(CSV_COLUMNS)}")
    info = {}
    for line, row in enumerate(rows, start=2):
        code, vendor = row["External code"].strip(), row["Vendor"].strip()
        try:
            frames = int(row["ED"]), int(row["ES"])
        except (TypeError, ValueError):
            raise SamdgError(f"{path}: line {line} ({code}): ED {row['ED']!r} and ES {row['ES']!r} must be frame "
                             "numbers") from None
        if not code or not vendor or min(frames) < 0:
            raise SamdgError(f"{path}: line {line}: needs an External code, a Vendor and ED/ES frames >= 0")
        if code in info:
            raise SamdgError(f"{path}: line {line}: External code {code} appears twice")
        info[code] = (vendor, *frames)
    return info


def subject_jobs(source: Path, target: Path, info: dict, info_csv: Path) -> tuple[list[tuple], dict[str, str], int]:
    """(jobs, case id -> vendor, unlabelled subjects skipped). A job: (code, image, label, ED, ES, [(case id,
    image path, label path)] for ED then ES)."""
    jobs, domains, skipped = [], {}, 0
    for split_folder, (split, labelled) in SPLITS.items():
        subjects = list_files(source / split_folder, _SUBJECT, "one folder per subject, named by its External code")
        if not labelled:
            skipped += len(subjects)
            continue
        for _, folder in subjects:
            code = folder.name
            names = re.compile(re.escape(code) + r"_sa(_gt)?\.nii\.gz")
            list_files(folder, names, f"{code}_sa.nii.gz and {code}_sa_gt.nii.gz")
            image = require(folder / f"{code}_sa.nii.gz", "the subject's 4D short-axis cine")
            label = require(folder / f"{code}_sa_gt.nii.gz", "the subject's 4D ground truth")
            if code not in info:
                raise SamdgError(f"{folder}: subject {code} is not in {info_csv}, so its vendor and ED/ES frames "
                                 "are unknown")
            vendor, ed, es = info[code]
            outputs = []
            for phase in PHASES:
                case = f"{code}_{phase}"
                domains[case] = vendor
                outputs.append((case, str(target / f"images{split}" / f"{case}_0000.nii.gz"),
                                str(target / f"labels{split}" / f"{case}.nii.gz")))
            jobs.append((code, str(image), str(label), ed, es, outputs))
    return jobs, domains, skipped


def _frames(path: Path, image, frames: tuple[int, int]) -> np.ndarray:
    """The 4D data of ``path``, checked to hold ``frames`` on its 4th axis."""
    if len(image.shape) != 4:
        raise SamdgError(f"{path}: is {len(image.shape)}D (shape {image.shape}), expected a 4D cine "
                         "(X, Y, slices, frames)")
    if max(frames) >= image.shape[3]:
        raise SamdgError(f"{path}: has {image.shape[3]} frames (0..{image.shape[3] - 1}), but the information CSV "
                         f"gives ED {frames[0]} and ES {frames[1]}")
    return np.asanyarray(image.dataobj)


def convert_subject(job: tuple) -> None:
    """A process-pool job: one subject's 4D image and label -> its ED and ES 3D cases."""
    _, image_file, label_file, ed, es, outputs = job
    if all(Path(p).is_file() for _, *paths in outputs for p in paths):
        return
    image_file, label_file = Path(image_file), Path(label_file)
    image, label = load_nifti(image_file), load_nifti(label_file)
    volume, labels = _frames(image_file, image, (ed, es)), _frames(label_file, label, (ed, es))
    if volume.shape != labels.shape:
        raise SamdgError(f"{label_file}: shape {labels.shape} differs from {image_file.name}'s {volume.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - set(LABELS.values()))
    if unknown:
        raise SamdgError(f"{label_file}: holds label value(s) {unknown[:5]}; M&Ms labels are 0 background, 1 LV, "
                         "2 MYO, 3 RV")
    for phase, frame, (case, image_path, label_path) in zip(PHASES, (ed, es), outputs):
        frame_labels = labels[..., frame].astype(np.uint8)
        if not frame_labels.any():
            raise SamdgError(f"{label_file}: frame {frame} ({phase} in the information CSV) has no labels; ED and ES "
                             "are 0-based frame numbers")
        for data, source, destination in ((volume[..., frame], image, image_path),
                                          (frame_labels, label, label_path)):
            header = source.header.copy()
            header.set_data_shape(data.shape)  # drops the time axis and its zoom, keeps the 3D voxel sizes
            write_nifti(Path(destination), np.ascontiguousarray(data), source.affine, header=header)


def convert_mnms(source_folder: str | Path, dataset_id: int = DEFAULT_ID, num_processes: int = 2,
                 info_csv: str | Path | None = None) -> tuple[Path, int]:
    """Convert the M&Ms ``OpenDataset`` folder into ``$SAMDG_raw/DatasetXXX_MnMs``; returns (folder, unlabelled
    subjects skipped)."""
    source = input_folder(source_folder)
    if not (source / "Training").is_dir() and (source / "OpenDataset").is_dir():
        source = source / "OpenDataset"  # the folder the archive unpacks into
    require(source / "Training", "the M&Ms OpenDataset folder (Training, Validation, Testing and the information "
            "CSV) as -i")
    info_path = Path(info_csv).expanduser() if info_csv else find_info_csv(source)
    info = read_info_csv(require(info_path, "the M&Ms information CSV"))
    target = prepare_target(dataset_id, DATASET_NAME, CONVERTED_BY,
                            {"input": str(source.resolve()), "info_csv": str(info_path.resolve())})
    jobs, domains, skipped = subject_jobs(source, target, info, info_path)
    list(run_parallel(convert_subject, jobs, num_processes, description="M&Ms subjects",
                      names=[job[0] for job in jobs]))
    write_dataset_json(
        target, CONVERTED_BY, channel_names={"0": "cine MR"}, labels=LABELS, file_ending=".nii.gz", domains=domains,
        num_training=sum(1 for job in jobs for _, path, _ in job[5] if "imagesTr" in Path(path).parts),
        description="M&Ms: multi-centre, multi-vendor cardiac cine MR at end-diastole (ED) and end-systole (ES); "
                    "domains are the vendors A (Siemens), B (Philips), C (GE), D (Canon)",
        reference="Campello et al., Multi-Centre, Multi-Vendor and Multi-Disease Cardiac Segmentation: The M&Ms "
                  "Challenge, IEEE Transactions on Medical Imaging 40(12), 2021",
        licence="M&Ms data use agreement (www.ub.edu/mnms)")
    return target, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = converter_parser(
        "samdg_convert_mnms", "Convert the M&Ms cardiac MR challenge (vendors A, B, C, D; LV, MYO, RV at ED and ES) "
        "into $SAMDG_raw.", DEFAULT_ID, "the unpacked M&Ms OpenDataset folder (Training, Validation, Testing and "
        "the information CSV)")
    parser.add_argument("--info-csv", default=None, help="the information CSV (default: the one .csv file in -i)")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target, skipped = convert_mnms(args.input, args.dataset_id, args.num_processes, args.info_csv)
    print(domain_table(target))
    if skipped:
        print(f"skipped {skipped} unlabelled subject(s) of Training/Unlabeled")
    return 0


if __name__ == "__main__":
    main()

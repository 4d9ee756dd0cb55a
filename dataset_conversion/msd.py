"""``samdg_convert_msd``: a Medical Segmentation Decathlon task folder -> the raw layout.

    samdg_convert_msd -i /data/Task05_Prostate               # -> $SAMDG_raw/Dataset005_Prostate
    samdg_convert_msd -i Task05_Prostate -overwrite_id 105 -np 4 --domains-json sites.json

MSD stores multi-modal cases as 4D NIfTI (Prostate: T2 and ADC). Each 4D image is split into one 3D file per
channel (``_0000``, ``_0001``) that keeps the 3D affine, spacing and header; 3D images are copied as ``_0000`` and
labels are copied. Files whose names start with ``.`` or ``_`` (macOS debris in the MSD archives) are skipped.
``dataset.json`` gets ``channel_names`` (from ``modality``), labels as name -> int, ``file_ending`` and
``numTraining``; the ``training``/``test`` lists are dropped. MSD tasks are single-site, so no ``domains`` map is
written unless ``--domains-json`` supplies one. Every file is written atomically and written files are skipped,
so an interrupted conversion resumes where it stopped.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.common import check_target, copy_as_nii_gz, input_folder, load_nifti
from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.paths import dataset_folder_name, raw_root
from samdg.utils.files import atomic_path, atomic_write_json, load_json
from samdg.utils.pool import run_parallel

CONVERTED_BY = "samdg_convert_msd"
ENDINGS = (".nii.gz", ".nii")
_TASK_FOLDER = re.compile(r"^Task(\d+)_(.+)$")
_DROPPED_KEYS = ("training", "test", "modality", "tensorImageSize")


def parse_task_name(folder_name: str) -> tuple[int, str]:
    """``Task05_Prostate`` -> (5, "Prostate"); extra underscores stay in the name (``Task05_My_Data``)."""
    match = _TASK_FOLDER.match(folder_name)
    if not match:
        raise SamdgError(f"-i '{folder_name}': not an MSD folder name of the form TaskXX_Name; give -overwrite_id to "
                         "convert it anyway")
    return int(match.group(1)), match.group(2)


def _case_files(folder: Path) -> dict[str, Path]:
    """Case id -> NIfTI file in ``folder``, skipping hidden and ``_``-prefixed files."""
    files = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or not path.is_file():
            continue
        for ending in ENDINGS:
            if path.name.endswith(ending):
                files[path.name[: -len(ending)]] = path
                break
    return files


def _split_channels(source: Path, destinations: list[Path]) -> None:
    """One 4D NIfTI (I,J,K,C) -> C 3D files with the same affine, 3D zooms and header fields."""
    import nibabel as nib

    image = load_nifti(source)
    volume = np.asanyarray(image.dataobj)  # one pass over the gzip stream, then cheap slices
    for channel, destination in enumerate(destinations):
        if destination.is_file():
            continue
        data = np.ascontiguousarray(volume[..., channel])
        header = image.header.copy()
        header.set_data_shape(data.shape)  # drops the 4th dim and its zoom, keeps the 3D ones
        out = nib.Nifti1Image(data, image.affine, header=header)
        out.set_data_dtype(image.get_data_dtype())
        with atomic_path(destination) as tmp:
            nib.save(out, str(tmp))


def _convert_image(job: tuple[str, list[str]]) -> None:
    """A process-pool job: write the channel files of one case (those that do not exist yet)."""
    source, destinations = Path(job[0]), [Path(p) for p in job[1]]
    if all(d.is_file() for d in destinations):
        return
    shape = load_nifti(source).shape
    if len(shape) == 4 and shape[3] == len(destinations):
        _split_channels(source, destinations)
    elif len(destinations) == 1 and (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        copy_as_nii_gz(source, destinations[0])
    else:
        raise SamdgError(f"{source}: shape {shape} does not hold the {len(destinations)} channel(s) declared in "
                         "dataset.json 'modality'")


def _convert_label(job: tuple[str, list[str]]) -> None:
    copy_as_nii_gz(Path(job[0]), Path(job[1][0]))  # skips a label already written (resume)


def _convert_labels_json(labels: dict, source: Path) -> dict[str, int]:
    """MSD's {"0": "background", "1": "PZ"} -> {"background": 0, "PZ": 1} (ordered by value)."""
    try:
        pairs = sorted((int(value), str(name)) for value, name in labels.items())
    except (AttributeError, ValueError):
        raise SamdgError(f"{source}: 'labels' must map integer strings to names, "
                         f"like {{\"0\": \"background\"}}") from None
    return {name: value for value, name in pairs}


def _load_domains(path: Path, case_ids: list[str]) -> dict[str, str]:
    domains = load_json(path)
    if not isinstance(domains, dict) or not all(isinstance(v, str) and v for v in domains.values()):
        raise SamdgError(f"{path}: must be a JSON object mapping case ids to domain names")
    missing = [c for c in case_ids if c not in domains]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise SamdgError(f"{path}: {len(missing)} case(s) have no domain: {shown}")
    unknown = sorted(set(domains) - set(case_ids))
    if unknown:
        print(f"samdg: warning: {path} names {len(unknown)} case(s) not in the dataset, ignored: "
              f"{', '.join(unknown[:10])}", file=sys.stderr)
    return {c: domains[c] for c in case_ids}


def convert_msd_dataset(source_folder: str | Path, overwrite_id: int | None = None, num_processes: int = 4,
                        domains_json: str | Path | None = None) -> Path:
    """Convert an MSD ``TaskXX_Name`` folder into ``$SAMDG_raw/DatasetXXX_Name``; returns the new folder."""
    source = input_folder(source_folder)
    for required in ("imagesTr", "labelsTr", "dataset.json"):
        if not (source / required).exists():
            raise SamdgError(f"{source / required}: not found; an MSD task folder holds imagesTr, labelsTr, imagesTs "
                             "and dataset.json")
    if overwrite_id is not None:
        match = _TASK_FOLDER.match(source.name)
        dataset_id, name = overwrite_id, match.group(2) if match else source.name
    else:
        dataset_id, name = parse_task_name(source.name)
    folder_name = dataset_folder_name(dataset_id, name)
    check_target(dataset_id, folder_name, CONVERTED_BY, id_option="-overwrite_id")
    target = raw_root() / folder_name

    msd_json = load_json(source / "dataset.json")
    modality = msd_json.get("modality", msd_json.get("channel_names"))
    if not isinstance(modality, dict) or not modality or "labels" not in msd_json:
        raise SamdgError(f"{source / 'dataset.json'}: needs 'modality' (e.g. {{\"0\": \"T2\"}}) and 'labels'")
    channel_names = {str(k): str(modality[k]) for k in sorted(modality, key=int)}
    labels = _convert_labels_json(msd_json["labels"], source / "dataset.json")

    training, labels_tr, test = (_case_files(source / sub) for sub in ("imagesTr", "labelsTr", "imagesTs"))
    if not training:
        raise SamdgError(f"{source / 'imagesTr'}: no .nii.gz images found")
    unlabelled = sorted(set(training) - set(labels_tr))
    if unlabelled:
        raise SamdgError(f"{source / 'labelsTr'}: no label for training case(s) {', '.join(unlabelled)}")

    def channel_paths(split: str, case_id: str) -> list[str]:
        return [str(target / split / f"{case_id}_{c:04d}.nii.gz") for c in range(len(channel_names))]

    image_jobs = [(str(path), channel_paths("imagesTr", case)) for case, path in training.items()]
    image_jobs += [(str(path), channel_paths("imagesTs", case)) for case, path in test.items()]
    label_jobs = [(str(labels_tr[case]), [str(target / "labelsTr" / f"{case}.nii.gz")]) for case in training]
    domains = _load_domains(Path(domains_json), [*training, *test]) if domains_json else None

    for folder in ("imagesTr", "labelsTr", *(("imagesTs",) if test else ())):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for convert, jobs in ((_convert_image, image_jobs), (_convert_label, label_jobs)):
        list(run_parallel(convert, jobs, num_processes, progress=False, description="MSD conversion",
                          names=[source for source, _ in jobs]))

    dataset_json = {k: v for k, v in msd_json.items()
                    if k not in _DROPPED_KEYS and k not in ("labels", "channel_names")}
    dataset_json.update(channel_names=channel_names, labels=labels, numTraining=len(training), file_ending=".nii.gz")
    if domains is not None:
        dataset_json["domains"] = domains
    dataset_json["converted_by"] = CONVERTED_BY
    atomic_write_json(target / "dataset.json", dataset_json)  # last: its presence marks a finished conversion
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samdg_convert_msd", description="Convert a Medical Segmentation Decathlon "
                                     "task folder to the samdg/nnU-Net v2 raw layout in $SAMDG_raw.")
    parser.add_argument("-i", "--input", required=True, help="the downloaded MSD folder, e.g. Task05_Prostate")
    parser.add_argument("-overwrite_id", "--overwrite-id", dest="overwrite_id", type=int, default=None,
                        help="use this dataset id instead of the MSD task number")
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=4,
                        help="worker processes (default 4)")
    parser.add_argument("--domains-json", default=None,
                        help="JSON file mapping every case id to a domain name, added as 'domains'")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overwrite_id is not None and args.overwrite_id < 0:
        raise SamdgError(f"-overwrite_id must be a non-negative integer, got {args.overwrite_id}")
    target = convert_msd_dataset(args.input, args.overwrite_id, max(1, args.num_processes), args.domains_json)
    dataset_json = load_json(target / "dataset.json")
    print(f"wrote {target}: {dataset_json['numTraining']} training cases, channels {dataset_json['channel_names']}")
    return 0


if __name__ == "__main__":
    main()

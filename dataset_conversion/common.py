"""What every ``samdg_convert_<dataset>`` command shares: the target folder, atomic resumable writing, the
one-line errors for a download that is not as expected, ``dataset.json`` with a ``domains`` map, and the domain
table printed at the end.

A converter knows its download's layout; this module knows samdg's. The usual shape of one::

    target = prepare_target(args.dataset_id, "SAMLProstate", CONVERTED_BY)
    check_entries(source, lambda path: path.name in SITES, "the site folders RUNMC, ...")  # else a one-line error
    for match, path in list_files(site_folder, CASE_FILE, "CaseNN.nii.gz and CaseNN_segmentation.nii.gz"): ...
    write_nifti(target / "imagesTr" / f"{case}_0000.nii.gz", volume, affine)   # skipped when already written
    write_dataset_json(target, CONVERTED_BY, channel_names=..., labels=..., file_ending=".nii.gz", domains=...)
    print(domain_table(target))

Every output file is written atomically (temp file + rename), so a file that exists is whole; a rerun after an
interruption skips it and writes only what is missing. ``dataset.json`` is written last: its presence marks a
finished conversion. The input folder is only read.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from samdg.errors import SamdgError, one_line
from samdg.paths import dataset_folder_name, preprocessed_root, raw_root, results_root
from samdg.utils.files import atomic_path, atomic_write_json, load_json, remove_stale_temp_files

# Entries that archives and desktops add to any folder; never part of a dataset.
_DEBRIS = re.compile(r"^(\..*|__MACOSX|Thumbs\.db|desktop\.ini)$", re.IGNORECASE)
RGB_CHANNEL_NAMES = {"0": "R", "1": "G", "2": "B"}  # nnU-Net v2's natural-image convention: one _0000.png per case
# Fundus optic disc and cup as nnU-Net regions: pixels are 1 (rim: disc outside the cup) or 2 (cup); the disc is
# both, the cup is 2, and the cup is painted last so that it stays visible inside the disc.
FUNDUS_LABELS = {"background": 0, "optic_disc": [1, 2], "optic_cup": [2]}
FUNDUS_REGIONS_CLASS_ORDER = [1, 2]
SETTINGS_FILE = "conversion.json"  # beside dataset.json: what a conversion was made from (see prepare_target)


def converter_parser(prog: str, description: str, default_id: int, input_help: str,
                     input_nargs: str | None = None) -> argparse.ArgumentParser:
    """The options every converter has: ``-i`` (the download; ``input_nargs="+"`` for several), ``-d`` (dataset
    id), ``-np`` (worker processes)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-i", "--input", required=True, nargs=input_nargs, help=input_help)
    parser.add_argument("-d", "--dataset-id", dest="dataset_id", type=int, default=default_id,
                        help=f"dataset id of the output DatasetXXX_Name (default {default_id})")
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=2,
                        help="worker processes (default 2)")
    return parser


def check_target(dataset_id: int, folder_name: str, converted_by: str, id_option: str = "-d") -> None:
    """The id must not belong to another dataset; our own unfinished (or finished) conversion may be resumed.
    ``id_option`` is the command's option that picks another id, for the hint."""
    if dataset_id < 0:
        raise SamdgError(f"dataset id must be a non-negative integer, got {dataset_id}")
    prefix = f"Dataset{dataset_id:03d}_"
    clashes = set()
    for root in (raw_root(), preprocessed_root(), results_root()):
        if root.is_dir():
            clashes.update(p.name for p in root.iterdir()
                           if p.is_dir() and p.name.startswith(prefix) and p.name != folder_name)
    if clashes:
        raise SamdgError(f"dataset id {dataset_id} is already taken by {', '.join(sorted(clashes))}; choose a free id "
                         f"with {id_option} N")
    existing_json = raw_root() / folder_name / "dataset.json"
    if existing_json.is_file() and load_json(existing_json).get("converted_by") != converted_by:
        raise SamdgError(f"{existing_json.parent}: already exists and was not made by {converted_by}; choose another "
                         f"id with {id_option} N")


def prepare_target(dataset_id: int, name: str, converted_by: str, settings: dict | None = None) -> Path:
    """``$SAMDG_raw/DatasetXXX_name`` after :func:`check_target`; temp files of a killed earlier run are removed.

    ``settings`` (the input folder and the options that change the output) are kept in ``conversion.json``: a rerun
    resumes only a conversion made with the same ones, since the files it skips would otherwise belong to another
    input or option (another rater, another layout) and mix with the new ones.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    check_target(dataset_id, folder_name, converted_by)
    target = raw_root() / folder_name
    for folder in (target, *(target.iterdir() if target.is_dir() else ())):
        remove_stale_temp_files(folder)
    if settings is not None:
        record = {"converted_by": converted_by, **settings}
        previous = target / SETTINGS_FILE
        if previous.is_file() and load_json(previous) != json.loads(json.dumps(record)):
            raise SamdgError(f"{target}: was converted with other settings ({previous}); choose another id with -d N "
                             "or delete that folder first")
        if not previous.is_file():
            atomic_write_json(previous, record)
    return target


def input_folder(path: str | Path) -> Path:
    """The ``-i`` download folder, ``~`` expanded; the one-line "folder not found" error when it is not a folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SamdgError(f"-i {folder}: folder not found")
    return folder


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows as dicts) of a CSV table (a UTF-8 byte-order mark is dropped); the one-line error naming
    ``path`` when it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SamdgError(f"{path}: cannot be read as CSV ({error})") from None


def require(path: Path, expected: str) -> Path:
    """``path`` itself if it exists; otherwise the one-line "missing" error, saying what should be there."""
    if not path.exists():
        raise SamdgError(f"{path}: missing; expected {expected}")
    return path


def unexpected(path: Path, expected: str) -> SamdgError:
    """The one-line error for a file the converter does not know (raise it)."""
    return SamdgError(f"{path}: unexpected file; expected {expected}")


def is_debris(path: Path) -> bool:
    """Dot files, ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``: what archives and desktops add to any folder."""
    return bool(_DEBRIS.match(path.name))


def check_entries(folder: Path, allowed: Callable[[Path], bool], expected: str) -> list[Path]:
    """The entries of ``folder`` in name order, debris skipped; one that ``allowed`` refuses is an
    :func:`unexpected` file (``expected`` says what belongs there)."""
    entries = [path for path in sorted(require(folder, expected).iterdir()) if not is_debris(path)]
    for path in entries:
        if not allowed(path):
            raise unexpected(path, expected)
    return entries


def list_files(folder: Path, pattern: re.Pattern, expected: str) -> list[tuple[re.Match, Path]]:
    """(match, path) of every entry of ``folder``, whose name must match ``pattern`` (full match), in name order.

    Any other entry (except archive and desktop debris: dot files, ``__MACOSX``, ``Thumbs.db``) is an
    :func:`unexpected` file: a converter that silently skipped it could drop cases. ``expected`` describes the
    names that belong there, for the message.
    """
    require(folder, expected)
    found = []
    for path in sorted(folder.iterdir()):
        if is_debris(path):
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            raise unexpected(path, expected)
        found.append((match, path))
    return found


def _skip(destination: Path) -> bool:
    return destination.is_file()  # atomic writes: a file that exists is complete


def load_nifti(path: Path):
    """A nibabel image, or the one-line error naming ``path``."""
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises many types for damaged files
        raise SamdgError(f"{path}: cannot be read as NIfTI ({one_line(error)})") from None


def copy_file(source: Path, destination: Path) -> None:
    """``source`` -> ``destination`` byte for byte."""
    if not _skip(destination):
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)


def copy_as_nii_gz(source: Path, destination: Path) -> None:
    """A NIfTI file -> ``destination`` (.nii.gz): ``.nii.gz`` byte for byte, ``.nii`` compressed, header kept."""
    if _skip(destination):
        return
    if source.name.endswith(".nii.gz"):
        copy_file(source, destination)
        return
    import nibabel as nib

    image = load_nifti(source)
    with atomic_path(destination) as tmp:
        nib.save(nib.Nifti1Image(image.dataobj, image.affine, header=image.header), str(tmp))


def write_nifti(destination: Path, data: np.ndarray, affine: np.ndarray, header=None) -> None:
    """(I,J,K) array + its 4x4 voxel-to-world affine -> ``destination`` (.nii.gz); the source header's fields
    (units, descriptions) are kept when given, its shape and data type follow ``data``."""
    if _skip(destination):
        return
    import nibabel as nib

    image = nib.Nifti1Image(data, affine, header=header)
    image.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(destination) as tmp:
        nib.save(image, str(tmp))


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour photograph (PNG, TIFF, BMP, JPEG) -> (Y,X,3) uint8; an alpha channel is dropped."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "P"):
                raise SamdgError(f"{path}: has colour mode {image.mode}; expected an 8-bit RGB photograph")
            return np.asarray(image.convert("RGB"))
    except SamdgError:
        raise
    except Exception as error:  # Pillow raises many types for damaged files
        raise SamdgError(f"{path}: cannot be read as an image ({one_line(error)})") from None


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit mask (grey, palette, or RGB drawn in grey) -> (Y,X) uint8, as ``PIL.Image.convert("L")`` gives it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "1", "RGB", "RGBA", "LA"):
                raise SamdgError(f"{path}: has colour mode {image.mode}; expected an 8-bit mask")
            return np.asarray(image.convert("L"))
    except SamdgError:
        raise
    except Exception as error:
        raise SamdgError(f"{path}: cannot be read as an image ({one_line(error)})") from None


def write_png(destination: Path, pixels: np.ndarray) -> None:
    """(Y,X) grey/label or (Y,X,3) RGB uint8 pixels -> ``destination`` (.png, lossless)."""
    if _skip(destination):
        return
    from PIL import Image

    if pixels.dtype != np.uint8:
        raise ValueError(f"write_png takes uint8 pixels, got {pixels.dtype}")
    with atomic_path(destination) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def convert_fundus_pair(image: Path, mask: Path, image_out: Path, label_out: Path,
                        label_map: Callable[[np.ndarray], np.ndarray]) -> None:
    """One fundus photograph -> RGB PNG and its rater mask -> PNG label map (``label_map``: (Y,X) uint8 grey mask
    -> (Y,X) uint8 labels, the dataset's own coding); a pair already written is skipped (resume)."""
    if image_out.is_file() and label_out.is_file():
        return
    pixels, mask_pixels = read_rgb(image), read_grey(mask)
    if mask_pixels.shape != pixels.shape[:2]:
        raise SamdgError(f"{mask}: size {mask_pixels.shape[::-1]} differs from its photograph {image.name} "
                         f"{pixels.shape[1::-1]}")
    write_png(image_out, pixels)
    write_png(label_out, label_map(mask_pixels))


def write_dataset_json(target: Path, converted_by: str, *, channel_names: dict, labels: dict, file_ending: str,
                       domains: dict[str, str], num_training: int, **extra) -> dict:
    """Write ``dataset.json`` (last: it marks a finished conversion) and return it.

    ``domains`` maps every case id, training and test, to its domain; ``extra`` adds keys such as
    ``regions_class_order``, ``description``, ``licence`` or ``reference``.
    """
    dataset_json = {"channel_names": channel_names, "labels": labels, "numTraining": num_training,
                    "file_ending": file_ending, **extra, "domains": domains, "converted_by": converted_by}
    atomic_write_json(target / "dataset.json", dataset_json)
    return dataset_json


def _axis_range(values: list[tuple], fmt: str) -> str:
    """Per-axis value (or min-max when the cases differ) joined with ' x '."""
    parts = []
    for axis in zip(*values):
        low, high = min(axis), max(axis)
        parts.append(format(low, fmt) if low == high else f"{format(low, fmt)}-{format(high, fmt)}")
    return " x ".join(parts)


def domain_table(target: Path) -> str:
    """A Markdown table of the written dataset: per domain, training and test cases, spacing and shape as samdg
    reads them (canonical Z x Y x X in mm and voxels; Y x X pixels for 2D images), min-max over the cases."""
    from samdg.dataset.raw import load_raw_dataset
    from samdg.imageio import read_header

    raw = load_raw_dataset(target)
    rows: dict[str, dict] = defaultdict(lambda: {"train": 0, "test": 0, "spacing": [], "shape": []})
    for split, cases in (("train", raw.training_cases), ("test", raw.test_cases)):
        for case in cases.values():
            shape, geometry = read_header(case.image_paths[0])
            row = rows[case.domain]
            row[split] += 1
            skip = 1 if geometry.is_2d else 0  # the dummy axis of a 2D image says nothing
            row["spacing"].append(tuple(geometry.spacing)[skip:])
            row["shape"].append(tuple(shape)[skip:])
    lines = [f"wrote {target}: {len(raw.training_cases)} training and {len(raw.test_cases)} test cases",
             "| domain | train | test | spacing (mm) | shape |", "|---|---|---|---|---|"]
    for domain in sorted(rows):
        row = rows[domain]
        lines.append(f"| {domain} | {row['train']} | {row['test']} | {_axis_range(row['spacing'], '.3g')} | "
                     f"{_axis_range(row['shape'], 'd')} |")
    return "\n".join(lines)

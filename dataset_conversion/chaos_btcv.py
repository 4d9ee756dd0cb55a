"""``samdg_convert_chaos_btcv``: CHAOS MR + BTCV (Synapse) CT -> one cross-modality abdomen dataset.

    samdg_convert_chaos_btcv -i ~/data/CHAOS_Train_Sets ~/data/RawData        # -> $SAMDG_raw/Dataset221_AbdomenCTMR

``-i`` takes the two unpacked downloads (or one folder holding both); each is recognised by its layout:

- CHAOS (chaos.grand-challenge.org, ``CHAOS_Train_Sets.zip``): ``[CHAOS_Train_Sets/][Train_Sets/]MR/<patient>/``
  with ``T2SPIR/DICOM_anon/*.dcm``, ``T2SPIR/Ground/*.png``, ``T1DUAL/DICOM_anon/InPhase/*.dcm``,
  ``T1DUAL/DICOM_anon/OutPhase/*.dcm`` and ``T1DUAL/Ground/*.png`` (one ground-truth series for both T1 echoes).
  CHAOS CT (``Train_Sets/CT``) is not used: its ground truth is the liver alone.
- BTCV (Synapse syn3193805, ``Abdomen/RawData.zip``): ``[RawData/]Training/img/img0001.nii.gz`` with
  ``Training/label/label0001.nii.gz``. ``Testing`` has no labels and is not used.

Output: one channel (named ``abdomen``, deliberately neither CT nor MR, so that every case gets samdg's per-case
z-score normalisation: a CT window would be wrong for the MR domains), labels background 0, liver 1, spleen 2,
right_kidney 3, left_kidney 4, and the domains ``CT`` (BTCV), ``MR-T2SPIR``, ``MR-T1in`` and ``MR-T1out`` (CHAOS;
the two T1-DUAL echoes are separate cases ``chaos_NN_t1in``/``chaos_NN_t1out`` that share one label). Every case
goes to ``imagesTr``: neither challenge published its test labels. The input is only read; every file is written
atomically, and a rerun writes only what is missing.

What was verified, and where:
- CHAOS folder layout and names (``Train_Sets/MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}``, ``Ground``,
  ``T2SPIR/DICOM_anon``, ``IMG-0002-00001.dcm`` / ``.png``): public conversion code of projects that read the
  download (SSL-ALPNet's ``png_gth_to_nii``, Teuwen's ``build_chaos_dataset.py``, several CHAOS loaders).
- Ground-truth grey levels liver 63 (55-70), right kidney 126 (110-135), left kidney 189 (175-200), spleen 252
  (240-255): nnU-Net v1's ``Task037_038_Chaos_Challenge.py`` (which writes submissions back in these levels) and
  the scripts above map the same windows; this converter maps the windows too and refuses any other grey level.
- Slice order: the organisers' evaluation code (emrekavur/CHAOS-evaluation, ``CHAOSmetrics.py``) states that "the
  orientation of the slices is determined by order of image names NOT by position tags"; it stacks the PNGs and
  the DICOM files each in (natural) name order (nnU-Net v1 and Teuwen's script pair PNG name order with MR slices
  sorted by position, which agrees for MR). So the k-th PNG labels the k-th DICOM file in name order, and
  the volume keeps that order. Its geometry is then read from the headers of those files, as that code does:
  Image Position (Patient) of every slice, Image Orientation (Patient) and Pixel Spacing; the slice step is
  (last position - first position) / (N - 1), and every slice must lie on that line (else an error names the
  file). Nothing is assumed about the slice direction, the spacing or the name order going up or down. Checked on
  the organisers' sample series (CHAOS-evaluation ``Data_3D``: 78 CT slices, names running head to feet): read as
  L-P-I, 0.727 x 0.727 x 2 mm.
- PNG rows/columns are the DICOM pixel rows/columns (both are the image as displayed; the organisers compare them
  voxel for voxel); a PNG of another size is an error.
- BTCV labels 1 spleen, 2 right kidney, 3 left kidney, 6 liver (of 13 organs; 4 gallbladder, 5 esophagus,
  7 stomach, 8 aorta, 9 IVC, 10 portal/splenic vein, 11 pancreas, 12/13 adrenal glands become background):
  the Synapse challenge's label list, as mapped by public multi-organ code; names ``img0001``/``label0001``:
  the loaders that read ``RawData/Training/{img,label}``.

Assumed (not verifiable without the download): that InPhase, OutPhase and T1DUAL/Ground hold the same number of
files and pair by name order (checked: a count mismatch is an error naming the folders); that BTCV's label files
share their image's grid (checked: a mismatch is an error naming both files).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.common import (
    converter_parser,
    copy_file,
    domain_table,
    input_folder,
    list_files,
    load_nifti,
    prepare_target,
    read_grey,
    write_dataset_json,
    write_nifti,
)
from samdg.cli.common import entry_point
from samdg.errors import SamdgError, one_line
from samdg.utils.pool import run_parallel

CONVERTED_BY = "samdg_convert_chaos_btcv"
DEFAULT_ID = 221
DATASET_NAME = "AbdomenCTMR"
LABELS = {"background": 0, "liver": 1, "spleen": 2, "right_kidney": 3, "left_kidney": 4}
# CHAOS Ground PNG grey-level windows (inclusive) -> label value.
CHAOS_GREY_WINDOWS = ((55, 70, LABELS["liver"]), (110, 135, LABELS["right_kidney"]),
                      (175, 200, LABELS["left_kidney"]), (240, 255, LABELS["spleen"]))
BTCV_ORGANS = {1: LABELS["spleen"], 2: LABELS["right_kidney"], 3: LABELS["left_kidney"], 6: LABELS["liver"]}
BTCV_MAX_LABEL = 13
# Domain -> (case id suffix, DICOM folder and Ground folder relative to a CHAOS MR patient folder).
CHAOS_DOMAINS = {
    "MR-T2SPIR": ("t2spir", "T2SPIR/DICOM_anon", "T2SPIR/Ground"),
    "MR-T1in": ("t1in", "T1DUAL/DICOM_anon/InPhase", "T1DUAL/Ground"),
    "MR-T1out": ("t1out", "T1DUAL/DICOM_anon/OutPhase", "T1DUAL/Ground"),
}
_CHAOS_ROOTS = ("MR", "Train_Sets/MR", "CHAOS_Train_Sets/Train_Sets/MR")
_BTCV_ROOTS = ("Training", "RawData/Training", "Abdomen/RawData/Training")
_PATIENT = re.compile(r"\d+")
_DICOM = re.compile(r".+\.dcm", re.IGNORECASE)
_PNG = re.compile(r".+\.png", re.IGNORECASE)
_BTCV_IMAGE = re.compile(r"img(\d+)\.nii\.gz")
_BTCV_LABEL = re.compile(r"label(\d+)\.nii\.gz")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# A slice may sit this fraction of the slice step off the line through the first and last slice (rounded headers).
_POSITION_TOLERANCE = 0.2


def natural_key(path: Path) -> list:
    """``IMG-2.dcm`` before ``IMG-10.dcm``: digit runs compare as numbers (the organisers sort names this way)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def find_roots(inputs: Sequence[str | Path]) -> tuple[Path, Path]:
    """(CHAOS ``MR`` folder, BTCV ``Training`` folder), each looked for at its known places under every input."""
    inputs = [input_folder(folder) for folder in inputs]

    def find(candidates: tuple[str, ...], what: str) -> Path:
        found = [folder / c for folder in inputs for c in candidates if (folder / c).is_dir()]
        if not found:
            places = ", ".join(f"<-i>/{c}" for c in candidates)
            raise SamdgError(f"-i {' '.join(map(str, inputs))}: no {what} folder found (looked for {places})")
        if len(found) > 1:
            raise SamdgError(f"-i: {what} found twice ({', '.join(map(str, found))}); give each download once")
        return found[0]

    return find(_CHAOS_ROOTS, "CHAOS MR"), find(_BTCV_ROOTS, "BTCV Training")


def _tag(reader, path: Path, tag: str, name: str, count: int) -> np.ndarray:
    if not reader.HasMetaDataKey(tag):
        raise SamdgError(f"{path}: the DICOM header has no {name} ({tag}); the slice geometry cannot be read")
    try:
        values = np.array([float(v) for v in reader.GetMetaData(tag).strip().split("\\")])
    except ValueError:
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise SamdgError(f"{path}: DICOM {name} ({tag}) is {reader.GetMetaData(tag).strip()!r}, expected {count} "
                         "numbers")
    return values


def read_dicom_slice(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One DICOM file -> (pixels (Y,X), position (3,) LPS mm, orientation (6,) row then column cosines,
    pixel spacing (2,) mm between rows then columns), all from the file's own header."""
    import SimpleITK as sitk  # lazy: only DICOM needs it

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        pixels = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as error:
        raise SamdgError(f"{path}: cannot be read as DICOM ({one_line(error)})") from None
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise SamdgError(f"{path}: holds pixel data of shape {pixels.shape}, expected one 2D slice")
    position = _tag(reader, path, "0020|0032", "Image Position (Patient)", 3)
    orientation = _tag(reader, path, "0020|0037", "Image Orientation (Patient)", 6)
    spacing = _tag(reader, path, "0028|0030", "Pixel Spacing", 2)
    return pixels, position, orientation, spacing


def stack_affine(files: list[Path], positions: np.ndarray, orientation: np.ndarray,
                 pixel_spacing: np.ndarray) -> np.ndarray:
    """The RAS voxel-to-world affine of slices stacked in ``files`` order (array axes I=column, J=row, K=slice).

    ``positions`` (K,3) are the slices' Image Position (Patient) in LPS. The K axis steps from the first to the last
    position, so slice k of the array is where its own header puts it, whichever way the names run.
    """
    if len(files) < 2:
        raise SamdgError(f"{files[0].parent}: holds {len(files)} slice; a volume needs at least 2")
    step = (positions[-1] - positions[0]) / (len(files) - 1)
    step_length = float(np.linalg.norm(step))
    if step_length < 1e-6:
        raise SamdgError(f"{files[0]} and {files[-1]}: the first and last slice have the same Image Position "
                         "(Patient); the series is not a stack of slices")
    expected = positions[0] + np.arange(len(files))[:, None] * step
    offsets = np.linalg.norm(positions - expected, axis=1)
    worst = int(np.argmax(offsets))
    if offsets[worst] > _POSITION_TOLERANCE * step_length:
        raise SamdgError(f"{files[worst]}: Image Position (Patient) {positions[worst].tolist()} is "
                         f"{offsets[worst]:.2f} mm off the evenly spaced stack from {files[0].name} to "
                         f"{files[-1].name} (step {step_length:.3f} mm); the slices are not evenly spaced")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    if abs(float(np.dot(normal, step / step_length))) < 0.99:
        raise SamdgError(f"{files[0].parent}: the slices are not stacked along their normal (sheared stack); "
                         "the series cannot be stored as a NIfTI volume without resampling")
    lps = np.column_stack([row_cosine * pixel_spacing[1], column_cosine * pixel_spacing[0], step])
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ lps
    affine[:3, 3] = LPS_TO_RAS @ positions[0]
    return affine


def read_dicom_volume(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """DICOM files in stacking order -> (volume (I,J,K) = (column, row, slice), RAS affine)."""
    slices, positions, geometry = [], [], None
    for path in files:
        pixels, position, orientation, spacing = read_dicom_slice(path)
        if geometry is None:
            geometry = (pixels.shape, orientation, spacing)
        elif (pixels.shape != geometry[0] or not np.allclose(orientation, geometry[1], atol=1e-4)
              or not np.allclose(spacing, geometry[2], atol=1e-4)):
            raise SamdgError(f"{path}: size, Image Orientation or Pixel Spacing differ from {files[0].name}; "
                             "the folder must hold one series")
        slices.append(pixels)
        positions.append(position)
    volume = np.stack(slices)  # (K, rows, columns)
    if volume.dtype.kind == "f":
        volume = volume.astype(np.float32)
    affine = stack_affine(files, np.array(positions), geometry[1], geometry[2])
    return np.ascontiguousarray(volume.transpose(2, 1, 0)), affine


def read_ground_truth(files: list[Path], slice_shape: tuple[int, int]) -> np.ndarray:
    """CHAOS Ground PNGs in stacking order -> labels (I,J,K) uint8, grey-level windows mapped to label values."""
    slices = []
    for path in files:
        grey = read_grey(path)
        if grey.shape != slice_shape:
            raise SamdgError(f"{path}: is {grey.shape[0]}x{grey.shape[1]} pixels, its DICOM slice "
                             f"{slice_shape[0]}x{slice_shape[1]}")
        labels = np.zeros(grey.shape, np.uint8)
        known = grey == 0
        for low, high, value in CHAOS_GREY_WINDOWS:
            inside = (grey >= low) & (grey <= high)
            labels[inside] = value
            known |= inside
        if not known.all():
            odd = sorted(set(np.unique(grey[~known]).tolist()))[:5]
            raise SamdgError(f"{path}: grey level(s) {odd} are none of CHAOS's organ codes (liver 63, right kidney "
                             "126, left kidney 189, spleen 252)")
        slices.append(labels)
    return np.ascontiguousarray(np.stack(slices).transpose(2, 1, 0))


def chaos_jobs(mr_root: Path, target: Path) -> tuple[list[tuple], dict[str, str]]:
    """One job per (patient, MR domain): (case id, [DICOM files], [PNG files], image path, label path)."""
    jobs, domains = [], {}
    for _, patient in list_files(mr_root, _PATIENT, "one folder per CHAOS patient, named by its number"):
        list_files(patient, re.compile(r"T1DUAL|T2SPIR"), "T1DUAL and T2SPIR")
        list_files(patient / "T2SPIR", re.compile(r"DICOM_anon|Ground"), "DICOM_anon and Ground")
        list_files(patient / "T1DUAL", re.compile(r"DICOM_anon|Ground"), "DICOM_anon and Ground")
        list_files(patient / "T1DUAL" / "DICOM_anon", re.compile(r"InPhase|OutPhase"), "InPhase and OutPhase")
        for domain, (suffix, dicom_folder, ground_folder) in CHAOS_DOMAINS.items():
            dicoms = sorted((p for _, p in list_files(patient / dicom_folder, _DICOM, "*.dcm slices")),
                            key=natural_key)
            pngs = sorted((p for _, p in list_files(patient / ground_folder, _PNG, "*.png ground-truth slices")),
                          key=natural_key)
            if len(dicoms) != len(pngs):
                raise SamdgError(f"{patient / ground_folder}: {len(pngs)} PNG slices for the {len(dicoms)} DICOM "
                                 f"slices of {patient / dicom_folder}")
            case = f"chaos_{int(patient.name):02d}_{suffix}"
            domains[case] = domain
            jobs.append((case, [str(p) for p in dicoms], [str(p) for p in pngs],
                         str(target / "imagesTr" / f"{case}_0000.nii.gz"), str(target / "labelsTr" / f"{case}.nii.gz")))
    return jobs, domains


def convert_chaos_case(job: tuple) -> None:
    """A process-pool job: one CHAOS MR series and its ground truth -> NIfTI image and label."""
    _, dicoms, pngs, image_path, label_path = job
    image_path, label_path = Path(image_path), Path(label_path)
    if image_path.is_file() and label_path.is_file():
        return
    volume, affine = read_dicom_volume([Path(p) for p in dicoms])
    labels = read_ground_truth([Path(p) for p in pngs], (volume.shape[1], volume.shape[0]))
    write_nifti(image_path, volume, affine)
    write_nifti(label_path, labels, affine)


def btcv_jobs(training: Path, target: Path) -> tuple[list[tuple], dict[str, str]]:
    """One job per BTCV training case: (case id, image file, label file, image path, label path)."""
    images = {m.group(1): p for m, p in list_files(training / "img", _BTCV_IMAGE,
                                                   "img0001.nii.gz, img0002.nii.gz, ...")}
    labels = {m.group(1): p for m, p in list_files(training / "label", _BTCV_LABEL,
                                                   "label0001.nii.gz, label0002.nii.gz, ...")}
    unlabelled, orphans = sorted(set(images) - set(labels)), sorted(set(labels) - set(images))
    if unlabelled:
        number = unlabelled[0]
        raise SamdgError(f"{training / 'label' / f'label{number}.nii.gz'}: missing; it labels {images[number]}")
    if orphans:
        number = orphans[0]
        raise SamdgError(f"{labels[number]}: unexpected file; there is no {training / 'img' / f'img{number}.nii.gz'}")
    jobs, domains = [], {}
    for number in sorted(images):
        case = f"btcv_{number}"
        domains[case] = "CT"
        jobs.append((case, str(images[number]), str(labels[number]),
                     str(target / "imagesTr" / f"{case}_0000.nii.gz"), str(target / "labelsTr" / f"{case}.nii.gz")))
    return jobs, domains


def convert_btcv_case(job: tuple) -> None:
    """A process-pool job: copy one BTCV CT as it is; its 13-organ label -> the 4 organs kept."""
    _, image_file, label_file, image_path, label_path = job
    image_file, label_file = Path(image_file), Path(label_file)
    if not Path(label_path).is_file():
        image, label = load_nifti(image_file), load_nifti(label_file)
        if image.shape[:3] != label.shape[:3] or not np.allclose(image.affine, label.affine, atol=1e-2):
            raise SamdgError(f"{label_file}: its grid (shape {label.shape}) differs from the one of {image_file} "
                             f"(shape {image.shape})")
        values = np.asanyarray(label.dataobj)
        if values.ndim != 3:
            raise SamdgError(f"{label_file}: is {values.ndim}D, expected a 3D label volume")
        rounded = np.rint(values)
        if not np.array_equal(rounded, values) or rounded.min() < 0 or rounded.max() > BTCV_MAX_LABEL:
            raise SamdgError(f"{label_file}: holds values outside the 13 BTCV organ labels 0..{BTCV_MAX_LABEL}")
        mapped = np.zeros(values.shape, np.uint8)
        for btcv_value, value in BTCV_ORGANS.items():
            mapped[rounded == btcv_value] = value
        write_nifti(Path(label_path), mapped, label.affine, header=label.header)
    copy_file(image_file, Path(image_path))


def convert_chaos_btcv(inputs: Sequence[str | Path], dataset_id: int = DEFAULT_ID, num_processes: int = 2) -> Path:
    """Convert the CHAOS and BTCV downloads into ``$SAMDG_raw/DatasetXXX_AbdomenCTMR``; returns the folder."""
    mr_root, btcv_training = find_roots(inputs)
    target = prepare_target(dataset_id, DATASET_NAME, CONVERTED_BY,
                            {"chaos_mr": str(mr_root.resolve()), "btcv_training": str(btcv_training.resolve())})
    chaos, chaos_domains = chaos_jobs(mr_root, target)
    btcv, btcv_domains = btcv_jobs(btcv_training, target)
    for function, jobs, what in ((convert_btcv_case, btcv, "BTCV CT"), (convert_chaos_case, chaos, "CHAOS MR")):
        list(run_parallel(function, jobs, num_processes, description=what, names=[job[0] for job in jobs]))
    domains = {**btcv_domains, **chaos_domains}
    write_dataset_json(
        target, CONVERTED_BY, channel_names={"0": "abdomen"}, labels=LABELS, file_ending=".nii.gz", domains=domains,
        num_training=len(domains),
        description="CHAOS MR (T2-SPIR, T1-DUAL in and out of phase) and BTCV CT, four abdominal organs",
        reference="CHAOS: Kavur et al., Medical Image Analysis 69 (2021) 101950; BTCV: Landman et al., MICCAI 2015 "
                  "Multi-Atlas Labeling Beyond the Cranial Vault",
        licence="CHAOS: CC BY-NC-SA 4.0; BTCV: Synapse terms of use (registration required)")
    return target


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = converter_parser(
        "samdg_convert_chaos_btcv", "Convert CHAOS MR (T2-SPIR, T1-DUAL in/out phase) and BTCV CT into one "
        "cross-modality abdomen dataset (liver, spleen, right and left kidney; domains CT, MR-T2SPIR, MR-T1in, "
        "MR-T1out) in $SAMDG_raw.", DEFAULT_ID,
        "the unpacked CHAOS_Train_Sets and BTCV RawData folders (or one folder holding both)", input_nargs="+")
    args = parser.parse_args(argv)
    target = convert_chaos_btcv(args.input, args.dataset_id, args.num_processes)
    print(domain_table(target))
    return 0


if __name__ == "__main__":
    main()

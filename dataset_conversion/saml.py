"""``samdg_convert_saml``: the multi-site prostate MRI set (SAML / MS-Net, 6 sites) -> the raw layout.

    samdg_convert_saml -i /data/Processed_data_nii            # -> $SAMDG_raw/Dataset201_SAMLProstate
    samdg_convert_saml -i /data/DeSAM/raw_data -d 211          # MaxStyle's re-distribution, as DeSAM ships it
    samdg_convert_saml -i /data/MaxStyle/reorganized -d 212    # MaxStyle's own archive
    samdg_convert_saml -i /data/Processed_data_nii --zonal     # RUNMC and BMC only, their two zone labels kept

Three downloads are read, told apart by their content:

1. **SAML** (https://liuquande.github.io/SAML/, Liu et al., MICCAI 2020): one folder per site, ``RUNMC``, ``BMC``,
   ``I2CVB``, ``UCL``, ``BIDMC``, ``HK`` (the MS-Net release calls the first two ``ISBI`` and ``ISBI_1.5``; both
   spellings are read), each holding ``CaseNN.nii.gz`` (T2) and ``CaseNN_segmentation.nii.gz`` (``BMC``:
   ``_Segmentation``). Case ids are ``{site}_CaseNN``.
2. **MaxStyle's re-distribution in the layout DeSAM uses** (Chen et al., MICCAI 2022; Gao et al., MICCAI 2024):
   ``imagesTr/prostate_NNN_0000.nii.gz``, ``labelsTr/prostate_NNN.nii.gz`` and ``prostate_patientid.csv`` with
   the columns ``patientid`` (the integer NNN) and ``center`` (``A-ISBI``, ``B-ISBI_1.5``, ``C-I2CVB``, ``D-UCL``,
   ``E-BIDMC``, ``F-HK``). Case ids are kept (``prostate_NNN``), centres are renamed to the SAML site names so both
   downloads give the same domains, and the ``domains`` map lists the cases in the CSV's order: DeSAM's
   validation split is the last 10 % of each centre's patients in that order.
3. **MaxStyle's own archive** (``reorganized/``): ``{A-ISBI, B-ISBI_1.5, C-I2CVB, D-UCL, E-BIDMC, F-HK}/patient_N/``
   with ``t2_img_clipped.nii.gz`` and ``label_clipped.nii.gz``. Case ids are ``{site}_patient_N``; its seventh
   folder, ``G-MedicalDecathlon`` (MSD Task05, MaxStyle's training set), is not one of the six sites and is skipped
   (``samdg_convert_msd`` converts MSD).

Every case goes to ``imagesTr`` (the protocols choose source and target sites), the ``domains`` map gives its site.
Images are copied byte for byte (``.nii`` is compressed to ``.nii.gz``), so orientation and spacing are the
download's own. Labels: the ``RUNMC`` and ``BMC`` masks carry two values, 1 and 2 (the NCI-ISBI 2013 central
gland and peripheral zone), the other sites' masks are binary; the output is binary, ``prostate = mask > 0``, as
DAPSAM and HarmoFL read it. ``--zonal`` keeps the two values instead and converts only those two sites. Labels
are written on their image's voxel-to-world matrix; a mask whose shape, or matrix beyond 0.01 mm, differs from its
image's, or with a value other than 0, 1 and 2, is an error naming the file.

Verified: site folders, file names and case counts (30/30/19/13/12/12) from the site CSVs of DAPSAM
(wkklavis/DAPSAM ``prostate/datasets``) and the file lists of HarmoFL (med-air/HarmoFL ``data/prostate/*-dir.npy``);
the values 0/1/2 on the two ISBI sites and 0/1 elsewhere from HarmoFL (``label > 1 -> 1``), DAPSAM's loader and
LIU-YUXI/FedFMS issue #5; the 384 x 384 axial resize from the SAML README history; the DeSAM layout, CSV columns,
centre names and ``int(name[9:12])`` patient ids from DeSAM's ``precompute_embeddings.py`` and ``utils/utils.py``;
MaxStyle's archive layout, binary labels and 0.625 x 0.625 x 3.6 mm resampling from the MaxStyle README and its
``IMAGE_FORMAT_NAME``/``LABEL_FORMAT_NAME`` in ``src/dataset_loader``. Assumed: which of the
two ISBI zone values is the central gland (not stated by any of these sources, so the zonal labels are named
``zone_1`` and ``zone_2``); the content of ``prostate_patientid.csv`` beyond its two columns (it is an issue
attachment, DeSAM issue #16).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.common import (
    check_entries,
    converter_parser,
    copy_as_nii_gz,
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

CONVERTED_BY = "samdg_convert_saml"
DEFAULT_ID = 201
SITES = ("RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK")
ZONAL_SITES = ("RUNMC", "BMC")  # NCI-ISBI 2013 cases: central gland and peripheral zone drawn apart
_SITE_FOLDERS = {"RUNMC": "RUNMC", "ISBI": "RUNMC", "BMC": "BMC", "ISBI_1.5": "BMC", "I2CVB": "I2CVB",
                 "HCRUDB": "I2CVB", "UCL": "UCL", "BIDMC": "BIDMC", "HK": "HK"}
_CENTRES = {"A-ISBI": "RUNMC", "B-ISBI_1.5": "BMC", "C-I2CVB": "I2CVB", "D-UCL": "UCL", "E-BIDMC": "BIDMC",
            "F-HK": "HK"}
_SAML_FILE = re.compile(r"(?P<case>Case\d+)(?P<mask>_[Ss]egmentation)?(?P<ending>\.nii\.gz|\.nii)")
_SAML_EXPECTED = "CaseNN.nii.gz and CaseNN_segmentation.nii.gz"
_MSD_FOLDER = "G-MedicalDecathlon"  # MaxStyle's 7th folder: not a SAML site
_MAXSTYLE_FILES = ("t2_img_clipped.nii.gz", "label_clipped.nii.gz")
_DESAM_CSV = "prostate_patientid.csv"
_DESAM_IMAGE = re.compile(r"(?P<case>.+\D(?P<number>\d+))_0000\.nii\.gz")
_DESAM_LABEL = re.compile(r"(?P<case>.+\D(?P<number>\d+))\.nii\.gz")
_VALUES = (0, 1, 2)
GRID_TOLERANCE = 1e-2  # mm and relative: header rounding between a mask and its image, not a different grid
BINARY_LABELS = {"background": 0, "prostate": 1}
ZONAL_LABELS = {"background": 0, "zone_1": 1, "zone_2": 2}


def _saml_cases(source: Path, sites: Sequence[str]) -> list[tuple[str, str, Path, Path]]:
    """(case id, site, image, mask) of the SAML site folders, in site then file-name order."""
    folders: dict[str, Path] = {}
    for path in check_entries(source, lambda path: path.is_dir() and path.name in _SITE_FOLDERS,
                              f"the site folders {', '.join(SITES)}"):
        site = _SITE_FOLDERS[path.name]
        if site in folders:
            raise SamdgError(f"{path}: holds site {site} like {folders[site]}; keep one of the two")
        folders[site] = path
    cases = []
    for site in sites:
        aliases = [name for name, alias in _SITE_FOLDERS.items() if alias == site and name != site]
        folder = require(folders.get(site, source / site), f"the site folder {site}"
                         + (f" (or {' / '.join(aliases)}, its other name)" if aliases else ""))
        images, masks = {}, {}
        for match, path in list_files(folder, _SAML_FILE, _SAML_EXPECTED):
            (masks if match.group("mask") else images)[match.group("case")] = path
        for case in sorted(set(images) | set(masks)):
            if case not in masks:
                raise SamdgError(f"{folder / (case + '_segmentation.nii.gz')}: missing; expected the mask of "
                                 f"{images[case].name}")
            if case not in images:
                raise SamdgError(f"{folder / (case + '.nii.gz')}: missing; expected the image of {masks[case].name}")
            cases.append((f"{site}_{case}", site, images[case], masks[case]))
    return cases


def _read_centres(csv_path: Path) -> list[tuple[int, str]]:
    """(patient id, SAML site) rows of DeSAM's ``prostate_patientid.csv``, in file order."""
    _, rows = read_csv(csv_path)
    if not rows or not {"patientid", "center"} <= set(rows[0]):
        raise SamdgError(f"{csv_path}: expected the columns patientid and center")
    centres, lines = [], {}
    for line, row in enumerate(rows, start=2):
        centre = (row["center"] or "").strip()
        if centre not in _CENTRES or not (row["patientid"] or "").strip().isdigit():
            raise SamdgError(f"{csv_path}: line {line}: expected an integer patientid and a center among "
                             f"{', '.join(_CENTRES)}, got {row['patientid']!r}, {row['center']!r}")
        patient = int(row["patientid"])
        if patient in lines:
            raise SamdgError(f"{csv_path}: line {line}: patient {patient} is already on line {lines[patient]}")
        lines[patient] = line
        centres.append((patient, _CENTRES[centre]))
    return centres


def _desam_cases(source: Path, sites: Sequence[str]) -> list[tuple[str, str, Path, Path]]:
    """(case id, site, image, mask) of the DeSAM layout, in the CSV's order, for the chosen sites."""
    check_entries(source, lambda path: path.name in ("imagesTr", "labelsTr", _DESAM_CSV, "dataset.json"),
                  f"imagesTr, labelsTr and {_DESAM_CSV}")
    images = {int(m.group("number")): (m.group("case"), p) for m, p in
              list_files(source / "imagesTr", _DESAM_IMAGE, "prostate_NNN_0000.nii.gz")}
    labels = {int(m.group("number")): (m.group("case"), p) for m, p in
              list_files(source / "labelsTr", _DESAM_LABEL, "prostate_NNN.nii.gz")}
    centres = _read_centres(require(source / _DESAM_CSV, "DeSAM's patient-to-centre table (DeSAM issue #16)"))
    listed = {patient for patient, _ in centres}
    for patient, (case, path) in sorted({**labels, **images}.items()):
        if patient not in listed:
            raise SamdgError(f"{path}: patient {patient} has no row in {source / _DESAM_CSV}")
    cases = []
    for patient, site in centres:
        if patient not in images:
            raise SamdgError(f"{source / 'imagesTr' / f'prostate_{patient:03d}_0000.nii.gz'}: missing; expected the "
                             f"image of patient {patient}, listed in {_DESAM_CSV}")
        if patient not in labels:
            raise SamdgError(f"{source / 'labelsTr' / f'prostate_{patient:03d}.nii.gz'}: missing; expected the mask "
                             f"of patient {patient}, listed in {_DESAM_CSV}")
        if site in sites:
            case, image = images[patient]
            cases.append((case, site, image, labels[patient][1]))
    return cases


def _maxstyle_cases(source: Path, sites: Sequence[str]) -> list[tuple[str, str, Path, Path]]:
    """(case id, site, image, mask) of MaxStyle's archive, in site then patient-number order."""
    check_entries(source, lambda path: path.is_dir() and (path.name in _CENTRES or path.name == _MSD_FOLDER),
                  f"the folders {', '.join(_CENTRES)} (and {_MSD_FOLDER})")
    folders = {site: centre for centre, site in _CENTRES.items()}
    cases = []
    for site in sites:
        site_folder = source / folders[site]
        patients = check_entries(site_folder, Path.is_dir, "patient folders such as patient_1")
        for patient in sorted(patients, key=lambda p: (int(re.sub(r"\D", "", p.name) or 0), p.name)):
            check_entries(patient, lambda path: path.name in _MAXSTYLE_FILES, " and ".join(_MAXSTYLE_FILES))
            image, mask = (require(patient / name, f"MaxStyle's {name}") for name in _MAXSTYLE_FILES)
            cases.append((f"{site}_{patient.name}", site, image, mask))
    return cases


def _layout(source: Path) -> str:
    """``desam``, ``maxstyle`` or ``saml``, from what the download's top folder holds."""
    if (source / "imagesTr").is_dir() or (source / _DESAM_CSV).exists():
        return "desam"
    if any((source / name).is_dir() for name in (*_CENTRES, _MSD_FOLDER)):
        return "maxstyle"
    return "saml"


def _convert_case(job: tuple[str, str, str, str, bool]) -> None:
    """A process-pool job: copy one image and write its mask as binary (or zonal) uint8 labels on its grid."""
    image, mask, image_out, label_out, zonal = job
    image, mask, image_out, label_out = Path(image), Path(mask), Path(image_out), Path(label_out)
    if image_out.is_file() and label_out.is_file():
        return
    label_image, grid = load_nifti(mask), load_nifti(image)
    if label_image.shape != grid.shape:
        raise SamdgError(f"{mask}: shape {label_image.shape} differs from its image {image.name} {grid.shape}")
    if not np.allclose(label_image.affine, grid.affine, rtol=GRID_TOLERANCE, atol=GRID_TOLERANCE):
        raise SamdgError(f"{mask}: its voxel-to-world matrix differs from its image {image.name} beyond "
                         f"{GRID_TOLERANCE} (mask {np.round(label_image.affine[:3], 3).tolist()}, image "
                         f"{np.round(grid.affine[:3], 3).tolist()})")
    values = np.rint(np.asanyarray(label_image.dataobj)).astype(np.int16)
    unknown = sorted(set(np.unique(values).tolist()) - set(_VALUES))
    if unknown:
        raise SamdgError(f"{mask}: unexpected label value(s) {unknown[:5]}; the SAML masks hold 0, 1 and 2")
    copy_as_nii_gz(image, image_out)
    labels = values if zonal else (values > 0)
    # the image's own matrix: rounding noise in the mask header would fail samdg's grid check (1e-3) otherwise
    write_nifti(label_out, labels.astype(np.uint8), grid.affine, label_image.header)


def convert_saml(source_folder: str | Path, dataset_id: int = DEFAULT_ID, zonal: bool = False,
                 num_processes: int = 1) -> Path:
    """Convert a SAML (or DeSAM-layout MaxStyle) download into ``$SAMDG_raw/DatasetXXX_SAMLProstate``."""
    source = input_folder(source_folder)
    sites = ZONAL_SITES if zonal else SITES
    layout = _layout(source)
    cases = {"desam": _desam_cases, "maxstyle": _maxstyle_cases, "saml": _saml_cases}[layout](source, sites)
    target = prepare_target(dataset_id, "SAMLProstateZonal" if zonal else "SAMLProstate", CONVERTED_BY,
                            {"input": str(source.resolve()), "layout": layout, "zonal": zonal})
    jobs = [(str(image), str(mask), str(target / "imagesTr" / f"{case}_0000.nii.gz"),
             str(target / "labelsTr" / f"{case}.nii.gz"), zonal) for case, _, image, mask in cases]
    list(run_parallel(_convert_case, jobs, num_processes, description="SAML cases",
                      names=[case for case, *_ in cases]))
    write_dataset_json(
        target, CONVERTED_BY, channel_names={"0": "T2"}, labels=ZONAL_LABELS if zonal else BINARY_LABELS,
        file_ending=".nii.gz", domains={case: site for case, site, *_ in cases}, num_training=len(cases),
        description="Multi-site prostate T2 MRI (SAML: NCI-ISBI 2013, I2CVB, PROMISE12), one domain per site"
                    + {"desam": " (MaxStyle's re-distribution, DeSAM layout)", "maxstyle": " (MaxStyle's archive)",
                       "saml": ""}[layout],
        reference="Liu, Dou, Heng. Shape-aware Meta-learning for Generalizing Prostate MRI Segmentation to Unseen "
                  "Domains. MICCAI 2020",
    )
    return target


def build_parser():
    parser = converter_parser(
        "samdg_convert_saml", "Convert the SAML multi-site prostate MRI download (or MaxStyle's re-distribution in "
        "DeSAM's layout) to the samdg/nnU-Net v2 raw layout in $SAMDG_raw, one domain per site.", DEFAULT_ID,
        "the unpacked download: the folder holding the six site folders, DeSAM's raw_data folder (imagesTr, "
        "labelsTr, prostate_patientid.csv) or MaxStyle's reorganized folder (A-ISBI .. F-HK)")
    parser.add_argument("--zonal", action="store_true",
                        help="keep the two zone labels of RUNMC and BMC (only those two sites are converted)")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = convert_saml(args.input, args.dataset_id, args.zonal, args.num_processes)
    print(domain_table(target))
    return 0


if __name__ == "__main__":
    main()

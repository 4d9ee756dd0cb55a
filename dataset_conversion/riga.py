"""``samdg_convert_riga``: RIGA+ fundus photographs (optic disc and cup, 5 domains) -> the 2D raw layout.

    samdg_convert_riga -i /data/RIGAPlus                # -> $SAMDG_raw/Dataset202_RIGAPlus
    samdg_convert_riga -i /data/RIGAPlus --rater 3 -d 212

RIGA+ (Hu et al., Zenodo record 6325549, ``RIGAPlus.zip``) repackages RIGA (Almazroa et al., 2018) for domain
adaptation. Unpacked, it holds ``RIGA/{domain}/{collection}/imageN.tif`` (800 x 800 colour crops around the optic
nerve head), ``RIGA-mask/{domain}/{collection}/imageN-R.tif`` (one mask per ophthalmologist R = 1..6) and the
repackagers' split CSVs (``BinRushed_train.csv``, ...). Domains: ``BinRushed`` (collections ``BinRushed1..4``),
``Magrabia`` (``MagrabiFemale``, ``MagrabiaMale``), ``MESSIDOR_Base1..3`` (``Labeled``; the ``Unlabeled``
photographs RIGA+ adds for adaptation carry no mask and are skipped).

Each labelled photograph becomes one case ``{domain}_{collection}_{stem}``: in ``imagesTs``/``labelsTs`` when a
``*_test.csv`` of the download lists it (column ``image``, paths relative to the download), else in
``imagesTr``/``labelsTr``. DAPSAM trains on the train part of its source: its lists hold 156 BinRushed and 76
Magrabia photographs, 80 % of RIGA's 195 and 95. Images are RGB PNG (nnU-Net v2's natural-image convention,
``channel_names`` R, G, B, one ``_0000.png``); the rater-R mask (``--rater``, default 1 as DAPSAM) becomes a PNG
label map read the way DAPSAM reads it: disc = value > 0, cup = value 128, written as 1 = rim (disc outside the
cup) and 2 = cup with the nnU-Net regions ``optic_disc = [1, 2]`` and ``optic_cup = [2]``. Pixels are copied as
they are (no resize; the papers' 512 x 512 resize belongs to the plans); 2D images carry no physical spacing.

Verified: folder and file names, the ``image,mask`` CSV columns, the ``-R`` rater suffix and rater 1
(``convert_labeled_list(..., r=1)``), the disc ``> 0`` / cup ``== 128`` coding and the image counts of the five
domains from DAPSAM (wkklavis/DAPSAM ``fundus/datasets``: its CSVs and ``RIGA_dataloader.py``); cup 128 inside a
rim of 255, six raters, the Zenodo record, the ``Unlabeled`` folders and ``BinRushed_train.csv`` from a public
RIGA+ fetcher. Assumed: that masks are single-channel 8-bit TIFFs (a grey RGB mask is read as grey, anything else
is an error naming the file); that RIGA+'s test CSVs end in ``_test.csv`` and have DAPSAM's ``image`` column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.common import (
    FUNDUS_LABELS,
    FUNDUS_REGIONS_CLASS_ORDER,
    RGB_CHANNEL_NAMES,
    check_entries,
    convert_fundus_pair,
    converter_parser,
    domain_table,
    input_folder,
    list_files,
    prepare_target,
    read_csv,
    require,
    write_dataset_json,
)
from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.utils.pool import run_parallel

CONVERTED_BY = "samdg_convert_riga"
DEFAULT_ID = 202
DOMAINS = ("BinRushed", "Magrabia", "MESSIDOR_Base1", "MESSIDOR_Base2", "MESSIDOR_Base3")
RATERS = range(1, 7)
_UNLABELLED = "Unlabeled"
_PHOTOGRAPH = re.compile(r"(?P<stem>image\d+)\.tif")
CUP_VALUE = 128


def _cases(source: Path, rater: int) -> list[tuple[str, str, Path, Path]]:
    """(case id, domain, photograph, mask) of every labelled photograph, in domain, collection, name order."""
    check_entries(source, lambda path: path.name in ("RIGA", "RIGA-mask") or path.suffix == ".csv",
                  "the folders RIGA and RIGA-mask (and RIGA+'s split CSVs)")
    photographs, masks = source / "RIGA", source / "RIGA-mask"
    check_entries(photographs, lambda path: path.name in DOMAINS, f"the domain folders {', '.join(DOMAINS)}")
    cases = []
    for domain in DOMAINS:
        collections = check_entries(photographs / domain, Path.is_dir, f"{domain}'s collection folders (for example "
                                                                       f"{domain}1 or Labeled)")
        for collection in collections:
            if collection.name == _UNLABELLED:
                continue
            for match, image in list_files(collection, _PHOTOGRAPH, "imageN.tif"):
                stem = match.group("stem")
                mask = masks / domain / collection.name / f"{stem}-{rater}.tif"
                require(mask, f"rater {rater}'s mask of {image}")
                cases.append((f"{domain}_{collection.name}_{stem}", domain, image, mask))
    return cases


def _test_photographs(source: Path) -> set[Path]:
    """The photographs the download's ``*_test.csv`` files list (column ``image``, relative to ``source``)."""
    listed = set()
    for table in sorted(source.glob("*_test.csv")):
        _, rows = read_csv(table)
        for line, row in enumerate(rows, start=2):
            if not (row.get("image") or "").strip():
                raise SamdgError(f"{table}: line {line}: expected a path in the column 'image'")
            path = source / row["image"].strip()
            if not path.is_file():
                raise SamdgError(f"{table}: line {line}: {path} does not exist")
            listed.add(path)
    return listed


def label_map(mask: np.ndarray) -> np.ndarray:
    """A RIGA mask (Y,X) uint8 -> labels (Y,X) uint8: 1 where disc (> 0) but not cup, 2 where cup (== 128)."""
    labels = (mask > 0).astype(np.uint8)
    labels[mask == CUP_VALUE] = 2
    return labels


def _convert_case(job: tuple[str, str, str, str]) -> None:
    """A process-pool job: one photograph -> RGB PNG, its mask -> PNG label map."""
    convert_fundus_pair(*(Path(p) for p in job), label_map=label_map)


def convert_riga(source_folder: str | Path, dataset_id: int = DEFAULT_ID, rater: int = 1,
                 num_processes: int = 1) -> Path:
    """Convert an unpacked RIGA+ download into ``$SAMDG_raw/DatasetXXX_RIGAPlus``; returns the new folder."""
    source = input_folder(source_folder)
    if rater not in RATERS:
        raise SamdgError(f"--rater must be one of 1..6 (RIGA's six ophthalmologists), got {rater}")
    cases, test = _cases(source, rater), _test_photographs(source)
    settings = {"input": str(source.resolve()), "rater": rater,
                "test": sorted(str(path.relative_to(source)) for path in test)}
    target = prepare_target(dataset_id, "RIGAPlus", CONVERTED_BY, settings)
    folders = {image: ("imagesTs", "labelsTs") if image in test else ("imagesTr", "labelsTr") for _, _, image, _ in
               cases}
    jobs = [(str(image), str(mask), str(target / folders[image][0] / f"{case}_0000.png"),
             str(target / folders[image][1] / f"{case}.png")) for case, _, image, mask in cases]
    list(run_parallel(_convert_case, jobs, num_processes, description="RIGA+ photographs",
                      names=[case for case, *_ in cases]))
    write_dataset_json(
        target, CONVERTED_BY, channel_names=RGB_CHANNEL_NAMES, labels=FUNDUS_LABELS, file_ending=".png",
        domains={case: domain for case, domain, *_ in cases},
        num_training=sum(folders[image][0] == "imagesTr" for _, _, image, _ in cases),
        regions_class_order=FUNDUS_REGIONS_CLASS_ORDER, rater=rater,
        description="RIGA+ fundus photographs, optic disc and cup, one domain per source (BinRushed, Magrabia, "
                    "MESSIDOR Base1-3)",
        reference="Almazroa et al. Retinal fundus images for glaucoma analysis: the RIGA dataset. SPIE Medical "
                  "Imaging 2018; RIGA+: Hu et al., Zenodo 6325549",
    )
    return target


def build_parser():
    parser = converter_parser(
        "samdg_convert_riga", "Convert the RIGA+ fundus download to the samdg/nnU-Net v2 raw layout in $SAMDG_raw "
        "(RGB PNG, optic disc and cup as nnU-Net regions, one domain per source).", DEFAULT_ID,
        "the unpacked RIGAPlus.zip: the folder holding RIGA and RIGA-mask")
    parser.add_argument("--rater", type=int, default=1, help="which ophthalmologist's masks, 1..6 (default 1, as "
                                                             "DAPSAM)")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = convert_riga(args.input, args.dataset_id, args.rater, args.num_processes)
    print(domain_table(target))
    return 0


if __name__ == "__main__":
    main()

"""``samdg_convert_dofe``: the DoFE fundus benchmark (optic disc and cup, 4 domains) -> the 2D raw layout.

    samdg_convert_dofe -i /data/Fundus                 # -> $SAMDG_raw/Dataset203_DoFEFundus

The DoFE release (Wang et al., TMI 2020; the Google Drive archive linked from emma-sjwang/Dofe, also used by
FedDG-ELCFS) holds ``Domain1..4/{train,test}/ROIs/{image,mask}/NAME.png``: Domain1 Drishti-GS
(``gdrishtiGS_002.png``), Domain2 RIM-ONE-r3, Domain3 REFUGE training, Domain4 REFUGE validation (``V0029.png``);
image and mask share the file name. Masks are grey: 0 = cup, 128 = rim, 255 = background.

Each ``train`` pair becomes a case ``{domain}_{stem}`` in ``imagesTr``/``labelsTr`` and each ``test`` pair one in
``imagesTs``/``labelsTs`` (samdg's evaluation extension), every case with its domain in the ``domains`` map.
Images are written as RGB PNG (nnU-Net v2's natural-image convention, ``channel_names`` R, G, B, one
``_0000.png``); masks are read with DoFE's own thresholds (grey > 200 background, 51..200 rim, <= 50 cup, which
also absorbs resampling halos) and written as 1 = rim, 2 = cup with the nnU-Net regions ``optic_disc = [1, 2]``
and ``optic_cup = [2]``. Pixels are kept as they are: DoFE's crop of Domain4 and its 256 x 256 resize belong to
the plans, not to the raw data.

Verified: the folder layout, the shared image/mask file names, the file-name prefixes of each source and the mask
thresholds from DoFE's ``dataloaders/fundus_dataloader.py`` and ``custom_transforms.Normalize_tf`` (and
``to_multilabel``: cup inside the disc); cup = 0 and disc = {0, 128} from third-party loaders of the same
archive. Assumed: the Google Drive archive unpacks to the folder holding ``Domain1..4`` (give that folder as
``-i``).
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
    require,
    write_dataset_json,
)
from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.utils.pool import run_parallel

CONVERTED_BY = "samdg_convert_dofe"
DEFAULT_ID = 203
DOMAINS = ("Domain1", "Domain2", "Domain3", "Domain4")
SOURCES = {"Domain1": "Drishti-GS", "Domain2": "RIM-ONE-r3", "Domain3": "REFUGE train", "Domain4": "REFUGE val"}
SPLITS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
_PNG = re.compile(r"(?P<stem>[^/]+)\.png")
BACKGROUND_ABOVE, CUP_AT_MOST = 200, 50  # DoFE's Normalize_tf thresholds on the grey mask


def _cases(source: Path) -> list[tuple[str, str, str, Path, Path]]:
    """(case id, domain, split, image, mask) of every pair, in domain, split, name order."""
    check_entries(source, lambda path: path.name in DOMAINS, f"the domain folders {', '.join(DOMAINS)}")
    cases, seen = [], {}
    for domain in DOMAINS:
        domain_folder = require(source / domain, f"the DoFE domain folder {domain} ({SOURCES[domain]})")
        check_entries(domain_folder, lambda path: path.name in SPLITS, "the folders train and test")
        for split in SPLITS:
            rois = require(domain_folder / split / "ROIs", "the folders ROIs/image and ROIs/mask")
            check_entries(rois, lambda path: path.name in ("image", "mask"), "the folders image and mask")
            images = {m.group("stem"): p for m, p in list_files(rois / "image", _PNG, "NAME.png")}
            masks = {m.group("stem"): p for m, p in list_files(rois / "mask", _PNG, "NAME.png, as its image")}
            for stem in sorted(set(images) | set(masks)):
                if stem not in masks:
                    raise SamdgError(f"{rois / 'mask' / (stem + '.png')}: missing; expected the mask of "
                                     f"{images[stem]}")
                if stem not in images:
                    raise SamdgError(f"{rois / 'image' / (stem + '.png')}: missing; expected the image of "
                                     f"{masks[stem]}")
                case = f"{domain}_{stem}"
                if case in seen:
                    raise SamdgError(f"{images[stem]}: {stem} is also in {seen[case]}; a name must be unique "
                                     "within a domain")
                seen[case] = images[stem]
                cases.append((case, domain, split, images[stem], masks[stem]))
    return cases


def label_map(mask: np.ndarray) -> np.ndarray:
    """A DoFE mask (Y,X) uint8 -> labels (Y,X) uint8: 0 background (> 200), 1 rim (51..200), 2 cup (<= 50)."""
    labels = np.where(mask > BACKGROUND_ABOVE, 0, 1).astype(np.uint8)
    labels[mask <= CUP_AT_MOST] = 2
    return labels


def _convert_case(job: tuple[str, str, str, str]) -> None:
    """A process-pool job: one fundus ROI -> RGB PNG, its mask -> PNG label map."""
    convert_fundus_pair(*(Path(p) for p in job), label_map=label_map)


def convert_dofe(source_folder: str | Path, dataset_id: int = DEFAULT_ID, num_processes: int = 1) -> Path:
    """Convert the unpacked DoFE fundus archive into ``$SAMDG_raw/DatasetXXX_DoFEFundus``; returns the folder."""
    source = input_folder(source_folder)
    cases = _cases(source)
    target = prepare_target(dataset_id, "DoFEFundus", CONVERTED_BY, {"input": str(source.resolve())})
    jobs = [(str(image), str(mask), str(target / SPLITS[split][0] / f"{case}_0000.png"),
             str(target / SPLITS[split][1] / f"{case}.png")) for case, _, split, image, mask in cases]
    list(run_parallel(_convert_case, jobs, num_processes, description="DoFE images",
                      names=[case for case, *_ in cases]))
    write_dataset_json(
        target, CONVERTED_BY, channel_names=RGB_CHANNEL_NAMES, labels=FUNDUS_LABELS, file_ending=".png",
        domains={case: domain for case, domain, *_ in cases},
        num_training=sum(split == "train" for _, _, split, *_ in cases),
        regions_class_order=FUNDUS_REGIONS_CLASS_ORDER, sources=SOURCES,
        description="DoFE fundus optic disc and cup ROIs, 4 domains (Drishti-GS, RIM-ONE-r3, REFUGE train, REFUGE "
                    "val); test splits in imagesTs/labelsTs",
        reference="Wang, Yu, Li, Yang, Fu, Heng. DoFE: Domain-oriented Feature Embedding for Generalizable Fundus "
                  "Image Segmentation on Unseen Datasets. IEEE TMI 2020",
    )
    return target


def build_parser():
    return converter_parser(
        "samdg_convert_dofe", "Convert the DoFE fundus archive (Domain1..4) to the samdg/nnU-Net v2 raw layout in "
        "$SAMDG_raw (RGB PNG, optic disc and cup as nnU-Net regions, test splits in imagesTs/labelsTs).",
        DEFAULT_ID, "the unpacked DoFE archive: the folder holding Domain1 .. Domain4")


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = convert_dofe(args.input, args.dataset_id, args.num_processes)
    print(domain_table(target))
    return 0


if __name__ == "__main__":
    main()

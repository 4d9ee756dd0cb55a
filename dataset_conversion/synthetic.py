"""``samdg_make_synthetic``: a small multi-domain 3D dataset in the raw layout, for the demo and the tests.

Every case is a random abdomen-like phantom (liver, kidneys, spleen, plus unlabelled fat, muscle and spine) imaged
by one of up to six synthetic sites that differ the way MRI sites, and CT and MR, do: contrast and gamma, bias
field, noise, voxel spacing and field-of-view shape, origin, and on-disk orientation (see
:mod:`dataset_conversion.synthetic_domains`). ``dataset.json`` carries samdg's ``domains`` map (case id -> site).

    samdg_make_synthetic -d 901                       # $SAMDG_raw/Dataset901_Synthetic, 3 sites, seconds to run
    samdg_make_synthetic -d 902 --domains 6 --cases-per-domain 20 --shape 128x128x32 --modality CT
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_conversion.synthetic_domains import LABELS, MAX_DOMAINS, SITES, field_of_view, render_case
from samdg.cli.common import entry_point
from samdg.errors import SamdgError
from samdg.paths import dataset_folder_name, raw_root
from samdg.utils.files import atomic_path, atomic_write_json, load_json
from samdg.utils.pool import run_parallel

MODALITIES = ("MR", "CT")
MIN_SHAPE = (16, 16, 4)


def _save_nifti(array_ras: np.ndarray, affine_ras: np.ndarray, orientation: str, path: Path) -> None:
    """Write a canonical RAS array stored in the site's on-disk orientation (the affine says how)."""
    import nibabel as nib

    image = nib.Nifti1Image(array_ras, affine_ras)
    target = nib.orientations.axcodes2ornt(tuple(orientation))
    image = image.as_reoriented(nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), target))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.set_data_dtype(array_ras.dtype)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _make_case(job: tuple) -> None:
    """Render and write one case (a process-pool job; the RNG is seeded by (seed, site index, case index))."""
    folder, case_id, split, site_index, case_index, shape, seed, modality = job
    site = SITES[site_index].for_modality(modality)
    rng = np.random.default_rng([seed, site_index, case_index])
    image, label, affine = render_case(site, field_of_view(shape), rng)
    images, labels = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
    _save_nifti(image, affine, site.orientation, Path(folder) / images / f"{case_id}_0000.nii.gz")
    _save_nifti(label, affine, site.orientation, Path(folder) / labels / f"{case_id}.nii.gz")


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not overwrite:
        raise SamdgError(f"{folder}: already exists; pass --overwrite to replace it")
    json_path = folder / "dataset.json"
    if json_path.is_file() and "synthetic" not in load_json(json_path):
        raise SamdgError(f"{folder}: holds a dataset not made by samdg_make_synthetic; --overwrite will not delete it")
    shutil.rmtree(folder)


def make_synthetic_dataset(
    output_folder: str | Path,
    num_domains: int = 3,
    cases_per_domain: int = 6,
    test_cases_per_domain: int = 2,
    shape: Sequence[int] = (96, 96, 24),
    seed: int = 0,
    modality: str = "MR",
    overwrite: bool = False,
    num_processes: int = 1,
) -> dict:
    """Write a synthetic multi-domain dataset to ``output_folder`` and return its dataset.json content.

    ``shape`` is (R, A, S) voxels of the reference site (1 x 1 x 3 mm); other sites cover the same field of view
    with their own spacing. Case ids are ``synth_{site}_{NNN}``: training cases first, then test cases
    (``imagesTs``/``labelsTs``). The same arguments always give the same voxels.
    """
    folder = Path(output_folder)
    shape = tuple(int(s) for s in shape)
    if not 1 <= num_domains <= MAX_DOMAINS:
        raise SamdgError(f"--domains must be between 1 and {MAX_DOMAINS}, got {num_domains}")
    if cases_per_domain < 1 or test_cases_per_domain < 0:
        raise SamdgError("--cases-per-domain must be >= 1 and --test-cases-per-domain >= 0")
    if len(shape) != 3 or any(s < m for s, m in zip(shape, MIN_SHAPE)):
        raise SamdgError(f"--shape must be three sizes of at least {'x'.join(map(str, MIN_SHAPE))}, got {shape}")
    if modality not in MODALITIES:
        raise SamdgError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality}")
    _prepare_folder(folder, overwrite)

    jobs, domains, num_training = [], {}, 0
    for site_index, site in enumerate(SITES[:num_domains]):
        for case_index in range(cases_per_domain + test_cases_per_domain):
            case_id = f"synth_{site.name}_{case_index:03d}"
            split = "train" if case_index < cases_per_domain else "test"
            num_training += split == "train"
            domains[case_id] = site.name
            jobs.append((str(folder), case_id, split, site_index, case_index, shape, seed, modality))
    list(run_parallel(_make_case, jobs, num_processes, progress=False, description="synthetic cases",
                      names=[job[1] for job in jobs]))

    dataset_json = {
        "name": folder.name,
        "description": "Synthetic abdomen-like phantoms imaged by simulated sites (samdg_make_synthetic)",
        "channel_names": {"0": modality},
        "labels": dict(LABELS),
        "numTraining": num_training,
        "numTest": len(jobs) - num_training,
        "file_ending": ".nii.gz",
        "domains": domains,
        "synthetic": {
            "seed": seed,
            "reference_shape": list(shape),
            "modality": modality,
            "sites": {site.name: site.for_modality(modality).to_dict() for site in SITES[:num_domains]},
        },
    }
    atomic_write_json(folder / "dataset.json", dataset_json)  # written last: its presence marks a finished dataset
    return dataset_json


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise SamdgError(f"--shape '{text}': expected three integers like 96x96x24") from None
    if len(values) != 3:
        raise SamdgError(f"--shape '{text}': expected three integers like 96x96x24")
    return values


def _check_id_free(dataset_id: int, folder_name: str) -> None:
    """Another raw folder with the same id would make ``-d`` ambiguous later."""
    root = raw_root()
    if not root.is_dir():
        return
    prefix = f"Dataset{dataset_id:03d}_"
    clashes = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != folder_name]
    if clashes:
        raise SamdgError(f"dataset id {dataset_id} is already used by {', '.join(sorted(clashes))} in {root}; "
                         "pick another -d")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samdg_make_synthetic",
        description="Write a small synthetic multi-domain 3D dataset (nnU-Net v2 raw layout + 'domains' map) to "
                    "$SAMDG_raw.",
    )
    parser.add_argument("-d", "--dataset-id", type=int, default=901, help="dataset id (default 901)")
    parser.add_argument("--name", default="Synthetic", help="dataset name: DatasetXXX_<name> (default Synthetic)")
    parser.add_argument("--domains", type=int, default=3, help=f"number of sites, 1 to {MAX_DOMAINS} (default 3)")
    parser.add_argument("--cases-per-domain", type=int, default=6, help="training cases per site (default 6)")
    parser.add_argument("--test-cases-per-domain", type=int, default=2,
                        help="test cases per site in imagesTs/labelsTs (default 2)")
    parser.add_argument("--shape", default="96x96x24",
                        help="voxels R x A x S of the 1x1x3 mm reference site (default 96x96x24)")
    parser.add_argument("--modality", choices=MODALITIES, default="MR",
                        help="MR contrasts (default) or CT in Hounsfield units")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same data")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing synthetic dataset folder")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dataset_id < 0:
        raise SamdgError(f"-d/--dataset-id must be a non-negative integer, got {args.dataset_id}")
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise SamdgError(f"--name '{args.name}' is not a valid folder name")
    folder_name = dataset_folder_name(args.dataset_id, args.name)
    _check_id_free(args.dataset_id, folder_name)
    folder = raw_root() / folder_name
    dataset_json = make_synthetic_dataset(
        folder, args.domains, args.cases_per_domain, args.test_cases_per_domain, _parse_shape(args.shape),
        args.seed, args.modality, args.overwrite, max(1, args.num_processes),
    )
    sites = ", ".join(dataset_json["synthetic"]["sites"])
    print(f"wrote {folder}: {dataset_json['numTraining']} training and {dataset_json['numTest']} test cases "
          f"from {sites}")
    return 0


if __name__ == "__main__":
    main()

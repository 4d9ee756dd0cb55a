"""Small raw datasets built in code (nibabel / Pillow), shared by the planning and preprocessing tests.

Every builder writes ``$SAMDG_raw/DatasetXXX_Name`` in the nnU-Net layout and returns the folder. Volumes are
built as RAS arrays (I,J,K) = (R,A,S) and can be stored in another on-disk orientation.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def save_nifti(array_ras: np.ndarray, spacing_ras, path: Path, orientation: str = "RAS") -> None:
    """Write an (R,A,S)-ordered array with voxel size ``spacing_ras`` in the on-disk ``orientation``."""
    affine = np.diag([*spacing_ras, 1.0])
    image = nib.Nifti1Image(array_ras, affine)
    if orientation != "RAS":
        transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                                    nib.orientations.axcodes2ornt(tuple(orientation)))
        image = image.as_reoriented(transform)
    image.set_data_dtype(array_ras.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def write_dataset_json(folder: Path, channel_names: dict, labels: dict, file_ending: str, num_training: int,
                       domains: dict | None = None, **extra) -> None:
    meta = {"channel_names": channel_names, "labels": labels, "numTraining": num_training, "file_ending": file_ending,
            **extra}
    if domains is not None:
        meta["domains"] = domains
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def ct_case(rng: np.random.Generator, shape=(40, 36, 12), air: float = -1000.0) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, label uint8) in RAS order: a body ellipse, an organ (label 1) and a bone (label 2)."""
    body = _ellipsoid(shape, np.array(shape) / 2, (shape[0] * 0.45, shape[1] * 0.42, shape[2] * 2))
    organ = _ellipsoid(shape, (shape[0] * 0.4, shape[1] * 0.5, shape[2] * 0.5),
                       (shape[0] * 0.15, shape[1] * 0.15, shape[2] * 0.35))
    bone = _ellipsoid(shape, (shape[0] * 0.62, shape[1] * 0.35, shape[2] * 0.5), (3, 3, shape[2] * 0.45))
    image = np.full(shape, air) + rng.normal(0, 5, shape)
    image[body] = 40 + rng.normal(0, 15, int(body.sum()))
    image[organ] = 110 + rng.normal(0, 10, int(organ.sum()))
    image[bone] = 700 + rng.normal(0, 40, int(bone.sum()))
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[bone] = 2
    return np.round(image).astype(np.int16), label


def make_ct_dataset(raw_root: Path, dataset_id: int = 801, num_cases: int = 3, spacing=(0.8, 0.8, 2.5),
                    shape=(40, 36, 12), domains: dict | None = None, air: float = -1000.0, seed: int = 0) -> Path:
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_CTlike"
    rng = np.random.default_rng(seed)
    for i in range(num_cases):
        image, label = ct_case(rng, shape, air)
        save_nifti(image, spacing, folder / "imagesTr" / f"case{i}_0000.nii.gz")
        save_nifti(label, spacing, folder / "labelsTr" / f"case{i}.nii.gz")
    write_dataset_json(folder, {"0": "CT"}, {"background": 0, "organ": 1, "bone": 2}, ".nii.gz", num_cases, domains)
    return folder


def mr_case(rng: np.random.Generator, shape=(36, 32, 10), gain: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Two channels (T2-like, ADC-like) with a zero background border and a two-class label, RAS order."""
    body = _ellipsoid(shape, np.array(shape) / 2, (shape[0] * 0.35, shape[1] * 0.35, shape[2] * 2))
    inner = _ellipsoid(shape, np.array(shape) / 2, (shape[0] * 0.12, shape[1] * 0.12, shape[2] * 0.4))
    outer = _ellipsoid(shape, np.array(shape) / 2, (shape[0] * 0.2, shape[1] * 0.2, shape[2] * 0.45)) & ~inner
    channels = []
    for base, organ_value in ((300.0, 600.0), (900.0, 500.0)):
        image = np.zeros(shape, np.float32)
        image[body] = gain * (base + rng.normal(0, 20, int(body.sum())))
        image[inner | outer] = gain * (organ_value + rng.normal(0, 20, int((inner | outer).sum())))
        channels.append(np.clip(image, 1, None) * body)
    label = np.zeros(shape, np.uint8)
    label[outer] = 1
    label[inner] = 2
    return channels, label


def make_mr_dataset(raw_root: Path, dataset_id: int = 802, num_cases: int = 3, spacing=(0.6, 0.6, 3.6),
                    shape=(36, 32, 10), orientations=("RAS", "LPS", "LAS"), seed: int = 1) -> Path:
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_MRlike"
    rng = np.random.default_rng(seed)
    for i in range(num_cases):
        channels, label = mr_case(rng, shape, gain=1.0 + i)
        orientation = orientations[i % len(orientations)]
        for c, channel in enumerate(channels):
            save_nifti(channel, spacing, folder / "imagesTr" / f"mr{i}_{c:04d}.nii.gz", orientation)
        save_nifti(label, spacing, folder / "labelsTr" / f"mr{i}.nii.gz", orientation)
    write_dataset_json(folder, {"0": "T2", "1": "ADC"}, {"background": 0, "PZ": 1, "TZ": 2}, ".nii.gz", num_cases)
    return folder


def make_multichannel_dataset(raw_root: Path, dataset_id: int = 803, names=("T1", "T1c", "T2", "FLAIR"),
                              num_cases: int = 2, spacing=(1.0, 1.0, 1.0), shape=(20, 18, 16)) -> Path:
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_Multi"
    rng = np.random.default_rng(3)
    for i in range(num_cases):
        tumour = _ellipsoid(shape, np.array(shape) / 2, (4, 4, 4))
        for c in range(len(names)):
            image = (rng.normal(100 + 50 * c, 10, shape) + 200 * tumour).astype(np.float32)
            save_nifti(image, spacing, folder / "imagesTr" / f"b{i}_{c:04d}.nii.gz")
        save_nifti(tumour.astype(np.uint8), spacing, folder / "labelsTr" / f"b{i}.nii.gz")
    write_dataset_json(folder, {str(c): n for c, n in enumerate(names)}, {"background": 0, "tumour": 1}, ".nii.gz",
                       num_cases)
    return folder


def make_png_dataset(raw_root: Path, dataset_id: int = 804, rgb: bool = False, num_cases: int = 3,
                     shape=(48, 64)) -> Path:
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{'Fundus' if rgb else 'Grey'}"
    rng = np.random.default_rng(4)
    for i in range(num_cases):
        disc = _ellipsoid(shape, (shape[0] * 0.5, shape[1] * 0.4), (8, 10))
        cup = _ellipsoid(shape, (shape[0] * 0.5, shape[1] * 0.4), (3, 4))
        grey = np.clip(rng.normal(60, 10, shape) + 120 * disc + 50 * cup, 0, 255).astype(np.uint8)
        pixels = np.stack([grey, grey // 2, 255 - grey], axis=-1) if rgb else grey
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "imagesTr" / f"img{i}_0000.png")
        Image.fromarray((disc.astype(np.uint8) + cup.astype(np.uint8))).save(folder / "labelsTr" / f"img{i}.png")
    channels = {"0": "fundus"} if rgb else {"0": "X-ray"}
    write_dataset_json(folder, channels, {"background": 0, "disc": 1, "cup": 2}, ".png", num_cases)
    return folder


def fingerprint_stub(spacings, shapes, modalities=("CT",), is_2d=False, channel_names=None, stats=None) -> dict:
    """A minimal fingerprint dict for planner unit tests that need no files."""
    stats = stats or {str(c): {"percentile_00_5": -100.0, "percentile_99_5": 300.0, "image_min": -1024.0,
                               "image_max": 2000.0} for c in range(len(modalities))}
    return {"dataset_name": "Dataset999_Stub", "is_2d": is_2d, "modalities": list(modalities),
            "channel_names": channel_names or {str(c): m for c, m in enumerate(modalities)},
            "spacings": [list(s) for s in spacings], "shapes_after_crop": [list(s) for s in shapes],
            "foreground_intensity_properties_per_channel": stats}


def stub_dataset_json(modalities=("CT",)) -> dict:
    return {"channel_names": {str(c): m for c, m in enumerate(modalities)},
            "labels": {"background": 0, "organ": 1, "bone": 2}, "file_ending": ".nii.gz"}


def run_plan_and_preprocess(capsys, *args) -> tuple[int, str, str]:
    """``samdg_plan_and_preprocess ARGS`` -> (exit code, stdout, stderr), whether it returns or exits."""
    from samdg.cli.plan_and_preprocess import main

    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err

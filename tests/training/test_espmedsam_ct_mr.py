"""ESP-MedSAM across modalities on the real abdomen pair: one controller per domain, trained on CT, predicting MR
(an unseen domain: the unseen-controller rule), through samdg_plan_and_preprocess, samdg_train and samdg_predict."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from samdg.cli import plan_and_preprocess, predict
from samdg.cli.train import main as train_main
from samdg.training.checkpoint import load_checkpoint

DATASET = "Dataset943_EspCTMR"
PAIRS = {"ct": ("example_ct_sm", "example_seg"), "mr": ("example_mr_sm", "example_seg_mr")}
SHARED_ORGANS = {1: 1, 2: 2, 3: 3, 5: 4}  # spleen, kidney_right, kidney_left, liver (same ids in CT and MR maps)


def write_raw_pair(raw, shared_data) -> None:
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for case, (image_name, label_name) in PAIRS.items():
        (raw / "imagesTr" / f"{case}_0000.nii.gz").write_bytes((shared_data / f"{image_name}.nii.gz").read_bytes())
        label = nib.load(shared_data / f"{label_name}.nii.gz")
        values = np.asarray(label.dataobj)
        reduced = np.zeros_like(values)
        for old, new in SHARED_ORGANS.items():
            reduced[values == old] = new
        nib.save(nib.Nifti1Image(reduced, label.affine, label.header), raw / "labelsTr" / f"{case}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "image"}, "file_ending": ".nii.gz", "numTraining": 2,
        "domains": {"ct": "CT", "mr": "MR"},
        "labels": {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 4}}))


def test_train_on_ct_with_domain_controllers_and_predict_mr(samdg_roots, shared_data, tmp_path):
    raw = samdg_roots["raw"] / DATASET
    write_raw_pair(raw, shared_data)
    assert plan_and_preprocess.main(["-d", DATASET, "--variant", "tiny_vit_test", "-np", "1", "--no_pbar"]) == 0
    assert train_main([DATASET, "espmedsam", "all", "--source-domains", "CT", "--device", "cpu", "--epochs", "1",
                       "--iters-per-epoch", "1", "--batch-size", "2", "--num-workers", "0", "--no-pbar",
                       "--override", "methods.espmedsam.controller_key=domain", "--no-final-validation"]) == 0
    fold_dir = samdg_roots["results"] / DATASET / "espmedsam__samdgPlans__2d" / "fold_all__src-CT"
    assert load_checkpoint(fold_dir / "checkpoint_final.pth")["method_settings"]["controllers"] == ["CT"]

    inputs = tmp_path / "mr_only"
    inputs.mkdir()
    (inputs / "mr_0000.nii.gz").write_bytes((raw / "imagesTr" / "mr_0000.nii.gz").read_bytes())
    output = tmp_path / "predicted"
    assert predict.main(["-i", str(inputs), "-o", str(output), "-d", DATASET, "-m", "espmedsam",
                         "--source-domains", "CT", "-f", "all", "--device", "cpu", "--disable-progress-bar"]) == 0
    written, source = nib.load(output / "mr.nii.gz"), nib.load(inputs / "mr_0000.nii.gz")
    assert written.shape == source.shape
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3, 4}

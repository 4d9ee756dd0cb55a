"""ESP-MedSAM across modalities on the real abdomen pair: one controller per domain, trained on CT, predicting MR
(an unseen domain: the unseen-controller rule), through samdg_plan_and_preprocess, samdg_train and samdg_predict."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from real_ct_mr import write_real_pair

from samdg.cli import plan_and_preprocess, predict
from samdg.cli.train import main as train_main
from samdg.training.checkpoint import load_checkpoint

DATASET = "Dataset943_EspCTMR"


def test_train_on_ct_with_domain_controllers_and_predict_mr(samdg_roots, shared_data, tmp_path):
    raw = samdg_roots["raw"] / DATASET
    write_real_pair(raw, shared_data)
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

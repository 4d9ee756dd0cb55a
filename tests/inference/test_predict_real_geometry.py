"""Geometry through prediction on the real abdomen CT (stored RAS) and MR (stored LPS).

1. The export the predictor uses, fed the one-hot of the real reference label as "probabilities", writes a file
   equal to the reference voxel for voxel, with the same affine and on-disk orientation: every preprocessing step
   is inverted and the orientation is preserved end to end.
2. A tiny random model predicting both raw volumes writes files with the inputs' shape, affine, zooms and axis
   codes.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from real_ct_mr import PAIRS, write_real_pair

from samdg.imageio import read_case, read_label
from samdg.inference import Predictor
from samdg.inference.export import export_prediction
from samdg.labels import LabelSpec
from samdg.preprocessing.pipeline import preprocess_case

DATASET = "Dataset942_RealCTMR"


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory, shared_data):
    """A raw dataset of the two real cases (labels reduced to the 4 shared organs), planned for a tiny variant."""
    from samdg.preprocessing.api import plan_and_preprocess

    base = tmp_path_factory.mktemp("real942")
    raw = base / "raw" / DATASET
    write_real_pair(raw, shared_data)
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("raw", "preprocessed", "results", "weights"):
            (base / kind).mkdir(exist_ok=True)
            patch.setenv(f"SAMDG_{kind}", str(base / kind))
        plans = plan_and_preprocess(DATASET, variant="tiny_vit_test", preprocess=False, progress=False,
                                    log=lambda message: None)
    return raw, plans


@pytest.mark.parametrize("case, axcodes", [("ct", ("R", "A", "S")), ("mr", ("L", "P", "S"))])
def test_export_of_the_reference_one_hot_gives_back_the_reference_file(real_pair, tmp_path, case, axcodes):
    raw, plans = real_pair
    spec = LabelSpec.from_dataset_json(plans.labels)
    label_file = raw / "labelsTr" / f"{case}.nii.gz"
    image, geometry = read_case([raw / "imagesTr" / f"{case}_0000.nii.gz"])
    label, _ = read_label(label_file)
    _, seg, properties = preprocess_case(image, geometry, plans, label)
    one_hot = np.stack([seg[0] == values[0] for values in spec.classes]).astype(np.float32)

    export_prediction(one_hot, properties, plans, spec, tmp_path / f"{case}.nii.gz")
    written, reference = nib.load(tmp_path / f"{case}.nii.gz"), nib.load(label_file)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(reference.affine) == axcodes
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(reference.dataobj))
    assert len(np.unique(np.asarray(written.dataobj))) == 5, "all four organs survive the round trip"


def test_prediction_keeps_shape_affine_and_orientation(real_pair, tmp_path):
    from samdg.training.checkpoint import build_untrained

    raw, plans = real_pair
    spec = LabelSpec.from_dataset_json(plans.labels)
    method = build_untrained("sam", plans.sam.variant, plans.sam.input_size, plans.methods["sam"], spec,
                             pretrained=False)
    predictor = Predictor([method], plans, spec, device="cpu", batch_size=16, progress=False)
    cases = {case: [raw / "imagesTr" / f"{case}_0000.nii.gz"] for case in PAIRS}
    report = predictor.predict_cases(cases, tmp_path / "predictions")
    assert sorted(report.predicted) == ["ct", "mr"] and not report.failed
    for case in PAIRS:
        written = nib.load(tmp_path / "predictions" / f"{case}.nii.gz")
        source = nib.load(raw / "imagesTr" / f"{case}_0000.nii.gz")
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        assert written.header.get_zooms() == source.header.get_zooms()
        assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine)
        assert int(written.header["sform_code"]) == int(source.header["sform_code"])
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3, 4}

"""samdg_predict and the Predictor API on a tiny trained model: outputs, geometry, reruns, failures, options."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from samdg.cli import predict
from samdg.imageio import Geometry
from samdg.inference import Predictor
from samdg.inference.export import label_map_from_volume
from samdg.labels import LabelSpec
from samdg.training.slices import MIRROR_AXES, SlicePredictor, window_starts

CASES = ("synth_siteA_002", "synth_siteB_002")


def _run(argv, capsys):
    code = predict.main(argv)
    return code, capsys.readouterr().err


def test_predict_folder_writes_input_geometry_then_resumes(session_roots, tmp_path, capsys):
    output = tmp_path / "predictions"
    argv = ["-i", str(session_roots.images_ts), "-o", str(output), "--device", "cpu", "--disable-progress-bar"]
    code, err = _run(argv, capsys)  # only -i/-o (+device): the one trained model is found
    assert code == 0, err
    for case in CASES:
        written = nib.load(output / f"{case}.nii.gz")
        source = nib.load(session_roots.images_ts / f"{case}_0000.nii.gz")
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}
    assert nib.aff2axcodes(nib.load(output / f"{CASES[0]}.nii.gz").affine) != nib.aff2axcodes(
        nib.load(output / f"{CASES[1]}.nii.gz").affine), "the two sites store different orientations"
    assert json.loads((output / "dataset.json").read_text())["domains"][CASES[1]] == "siteB"
    assert (output / "plans.json").is_file()
    info = json.loads((output / "prediction.json").read_text())
    assert info["source_domains"] == ["siteA"] and info["folds"] == ["all"]

    stamps = {case: (output / f"{case}.nii.gz").stat().st_mtime_ns for case in CASES}
    code, err = _run(argv, capsys)
    assert code == 0 and "0 case(s) predicted, 2 already done" in err
    assert stamps == {case: (output / f"{case}.nii.gz").stat().st_mtime_ns for case in CASES}

    code, err = _run(argv + ["--overwrite"], capsys)
    assert code == 0 and "2 case(s) predicted, 0 already done" in err

    # a different setting must not be mixed into the folder silently
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv + ["--tta"])
    assert exit_info.value.code == 2
    assert "another model or setting" in capsys.readouterr().err


def test_an_unreadable_case_is_reported_and_the_others_finish(session_roots, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    shutil.copytree(session_roots.images_ts, inputs)
    (inputs / f"{CASES[1]}_0000.nii.gz").write_bytes(b"this is not a NIfTI file")
    output = tmp_path / "predictions"
    code, err = _run(["-i", str(inputs), "-o", str(output), "--model-dir", str(session_roots.model_dir),
                      "--device", "cpu", "--disable-progress-bar"], capsys)
    assert code == 1
    assert f"{CASES[1]}: cannot be read" in err
    assert (output / f"{CASES[0]}.nii.gz").is_file()
    assert not (output / f"{CASES[1]}.nii.gz").exists()
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")], "no temp file left behind"


def test_nan_voxels_fail_their_case_instead_of_a_silently_shifted_prediction(session_roots, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    shutil.copytree(session_roots.images_ts, inputs)
    path = inputs / f"{CASES[1]}_0000.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    data[2:4, 2:4, 1] = np.nan
    damaged = nib.Nifti1Image(data, image.affine, image.header)
    damaged.set_data_dtype(np.float32)
    nib.save(damaged, path)
    output = tmp_path / "predictions"
    code, err = _run(["-i", str(inputs), "-o", str(output), "--model-dir", str(session_roots.model_dir),
                      "--device", "cpu", "--disable-progress-bar"], capsys)
    assert code == 1
    assert f"{path}: contains 4 NaN or infinite voxel(s)" in err
    assert (output / f"{CASES[0]}.nii.gz").is_file() and not (output / f"{CASES[1]}.nii.gz").exists()


def test_an_input_or_output_folder_that_is_a_file_exits_2(session_roots, tmp_path, capsys):
    output = tmp_path / "predictions"
    output.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["-i", str(session_roots.images_ts), "-o", str(output),
                      "--model-dir", str(session_roots.model_dir), "--device", "cpu", "--disable-progress-bar"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"samdg: error: -o {output}: is a file, not a folder" in err and "Traceback" not in err
    assert output.read_text() == "not a folder"
    image = session_roots.images_ts / f"{CASES[0]}_0000.nii.gz"
    with pytest.raises(SystemExit):
        predict.main(["-i", str(image), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert f"-i {image}: is a file; give the folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def predictor(trained_synthetic):
    return Predictor.from_model_dir(trained_synthetic.fold_dir, device="cpu", progress=False)


def test_api_probabilities_follow_the_label_rule_and_npz_holds_them(predictor, trained_synthetic, tmp_path):
    paths = [trained_synthetic.images_ts / f"{CASES[1]}_0000.nii.gz"]
    label_map, probabilities, geometry = predictor.predict_case(paths, return_probabilities=True)
    assert probabilities.shape == (3, *label_map.shape)
    assert label_map.shape == geometry.canonical_shape
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0
    np.testing.assert_array_equal(label_map, label_map_from_volume(probabilities, predictor.label_spec))

    report = predictor.predict_cases({CASES[1]: paths}, tmp_path / "out", save_probabilities=True)
    assert report.predicted == [CASES[1]] and not report.failed
    with np.load(tmp_path / "out" / f"{CASES[1]}.npz") as saved:
        assert saved["probabilities"].dtype == np.float16
        np.testing.assert_allclose(saved["probabilities"], probabilities, atol=2e-3)
        assert list(saved["class_names"]) == ["liver", "kidney", "spleen"]
        assert Geometry.from_dict(json.loads(str(saved["geometry"]))) == geometry


def test_batched_slices_match_one_slice_at_a_time(predictor, trained_synthetic):
    data, _ = predictor.preprocess([trained_synthetic.images_ts / f"{CASES[0]}_0000.nii.gz"])
    assert data.shape[1] > 1
    batched = predictor.predict_preprocessed(data)
    predictor.batch_size, saved = 1, predictor.batch_size
    try:
        one_by_one = predictor.predict_preprocessed(data)
    finally:
        predictor.batch_size = saved
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_mirroring_averages_the_flipped_passes_flipped_back(predictor):
    torch.manual_seed(0)
    slices = torch.rand(2, 3, 20, 28)  # not square: a row/column mix-up would show
    size = predictor.plans.sam.input_size
    plain = SlicePredictor(predictor.methods, size, None, ((),), torch.device("cpu"), None)
    mirrored = SlicePredictor(predictor.methods, size, None, MIRROR_AXES, torch.device("cpu"), None)
    expected = torch.stack([plain(slices.flip(a)).flip(a) if a else plain(slices) for a in MIRROR_AXES]).mean(0)
    result = mirrored(slices)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(result, plain(slices), atol=1e-4), "the flips must change a random model's output"


def test_inplane_windows_cover_the_slice_and_a_large_window_is_the_whole_slice(predictor):
    assert window_starts(30, 40) == [0]
    starts = window_starts(100, 40)
    assert starts[0] == 0 and starts[-1] == 60
    assert all(b - a <= 20 for a, b in zip(starts, starts[1:])), "windows overlap by at least half"
    torch.manual_seed(1)
    slices = torch.rand(1, 3, 24, 36)
    size = predictor.plans.sam.input_size
    whole = SlicePredictor(predictor.methods, size, None, ((),), torch.device("cpu"), None)(slices)
    same = SlicePredictor(predictor.methods, size, (64, 64), ((),), torch.device("cpu"), None)(slices)
    tiled = SlicePredictor(predictor.methods, size, (16, 16), ((),), torch.device("cpu"), None)(slices)
    torch.testing.assert_close(same, whole)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert 0.0 <= tiled.min() and tiled.max() <= 1.0


def _write_png(path, array):
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_two_channel_png_cases_give_png_label_maps_of_the_input_size(tmp_path, samdg_roots):
    """2D, multi-channel: two grey PNG channels per case in, one PNG label map of the same (Y,X) out."""
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training.checkpoint import build_untrained

    raw = samdg_roots["raw"] / "Dataset943_TwoChannelPNG"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(3):
        label = np.zeros((22, 30), dtype=np.uint8)
        label[5:12, 8 + index:20] = 1
        for channel in range(2):
            pixels = 40 + 120 * label + rng.integers(0, 60, label.shape)
            _write_png(raw / "imagesTr" / f"cell_{index}_{channel:04d}.png", pixels)
        _write_png(raw / "labelsTr" / f"cell_{index}.png", label)
    for channel in range(2):
        _write_png(raw / "imagesTs" / f"new_{channel:04d}.png", rng.integers(0, 255, (26, 18)))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "phase", "1": "fluorescence"},
                                                  "labels": {"background": 0, "cell": 1}, "numTraining": 3,
                                                  "file_ending": ".png"}))
    plans = plan_and_preprocess(raw.name, variant="tiny_vit_test", preprocess=False, progress=False, log=lambda m: None)
    assert plans.is_2d and plans.num_channels == 2
    spec = LabelSpec.from_dataset_json(plans.labels)
    method = build_untrained("sam", plans.sam.variant, plans.sam.input_size, plans.methods["sam"], spec,
                             pretrained=False)
    predictor = Predictor([method], plans, spec, json.loads((raw / "dataset.json").read_text()), device="cpu",
                          progress=False)
    report = predictor.predict_folder(raw / "imagesTs", tmp_path / "out")
    assert report.predicted == ["new"]
    from PIL import Image

    with Image.open(tmp_path / "out" / "new.png") as written:
        pixels = np.asarray(written)
    assert pixels.shape == (26, 18)
    assert set(np.unique(pixels)) <= {0, 1}

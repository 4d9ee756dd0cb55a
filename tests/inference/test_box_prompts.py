"""Box prompts in prediction: the boxes file (`samdg_predict --boxes`), its mapping through preprocessing, and the
box geometry a slice's prompts follow to the model input (window crop, flip, resize)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from samdg.cli import predict
from samdg.errors import SamdgError
from samdg.imageio import read_case, read_label
from samdg.inference import Predictor
from samdg.inference.box_prompts import (
    BoxFilePrompts,
    ReferenceBoxPrompts,
    class_masks,
    masks_to_preprocessed,
    parse_box_file,
    slice_boxes,
)
from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.box_prompts import boxes_from_masks, crop_boxes, flip_boxes, scale_boxes
from samdg.models.methods import build_method
from samdg.planning.plans import Plans
from samdg.preprocessing.pipeline import preprocess_case
from samdg.preprocessing.sam_input import fit_label_to_input
from samdg.training.slices import MIRROR_AXES, SlicePredictor

CASES = ("synth_siteA_002", "synth_siteB_002")  # the two sites store different orientations
NAMES = ("liver", "kidney", "spleen")


def random_masks(seed: int, shape=(3, 5, 23, 17)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(shape, dtype=torch.bool)
    for index in np.ndindex(*shape[:2]):
        if torch.rand(1, generator=generator) < 0.8:
            y0, x0 = (int(torch.randint(0, s - 1, (1,), generator=generator)) for s in shape[2:])
            y1 = y0 + 1 + int(torch.randint(0, shape[2] - y0, (1,), generator=generator))
            x1 = x0 + 1 + int(torch.randint(0, shape[3] - x0, (1,), generator=generator))
            masks[index][y0:y1, x0:x1] = True
    return masks


@pytest.mark.parametrize("seed", [0, 1])
def test_box_geometry_follows_the_slice_through_crop_flip_and_resize(seed):
    masks = random_masks(seed)  # (B,K,H,W)
    boxes = boxes_from_masks(masks)
    height, width = masks.shape[-2:]
    for axes in ((), (-1,), (-2,), (-2, -1)):
        torch.testing.assert_close(flip_boxes(boxes, axes, height, width),
                                   boxes_from_masks(masks.flip(axes) if axes else masks), equal_nan=True)
    window = crop_boxes(boxes, 4, 6, 12, 9)
    torch.testing.assert_close(window, boxes_from_masks(masks[..., 4:16, 6:15]), equal_nan=True)
    for to_hw in ((46, 34), (11, 9)):
        # a box is scaled as the label map is resized: same region, within one pixel of nearest-neighbour sampling
        resized = torch.nn.functional.interpolate(masks.float(), size=to_hw, mode="nearest-exact") > 0
        scaled, expected = scale_boxes(boxes, (height, width), to_hw), boxes_from_masks(resized)
        both = ~expected.isnan().any(-1)
        assert (scaled[both] - expected[both]).abs().max() <= 1.0
    fitted, scaled_hw = fit_label_to_input(masks[0, 0].long(), 64)
    np.testing.assert_allclose(scale_boxes(boxes[0, 0], (height, width), scaled_hw),
                               boxes_from_masks(fitted), atol=1.0)


def test_tiled_and_mirrored_prediction_prompts_only_the_windows_a_box_reaches():
    """32 px slices in 16 px windows (starts 0, 8, 16) with mirroring TTA: a box in the top-left 8x8 corner reaches
    only the first window, so the far corner, seen by other windows only, is empty; a class without a box is empty."""
    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
    torch.manual_seed(0)
    method = build_method("sam", build_sam("tiny_vit_test", pretrained=False), {}, spec).eval()
    predictor = SlicePredictor([method], 128, (16, 16), MIRROR_AXES, torch.device("cpu"), None)
    slices = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes = torch.full((2, 2, 4), float("nan"))
    boxes[:, 0] = torch.tensor([0.0, 0.0, 8.0, 8.0])
    probabilities = predictor(slices, boxes)
    assert probabilities.shape == (2, 2, 32, 32)
    assert probabilities[:, 1].max() < 1e-6 and probabilities[:, 0, 16:, 16:].max() < 1e-6
    assert probabilities[:, 0, :8, :8].min() > 1e-6, "the prompted window decodes the box"


def test_the_label_path_of_box_prompts_is_the_label_path_of_preprocessing(session_roots):
    plans = Plans.load(session_roots.fold_dir / "plans.json")
    spec = LabelSpec.from_dataset_json({"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}})
    for case in CASES:
        image, geometry = read_case([str(session_roots.images_ts / f"{case}_0000.nii.gz")])
        label, _ = read_label(session_roots.raw / "labelsTs" / f"{case}.nii.gz")
        _, seg, properties = preprocess_case(image, geometry, plans, label)
        masks = masks_to_preprocessed(class_masks(label, spec), properties, plans)
        for k in range(3):
            np.testing.assert_array_equal(masks[k], seg[0] == k + 1)
        oracle = ReferenceBoxPrompts({case: session_roots.raw / "labelsTs" / f"{case}.nii.gz"}, spec)
        np.testing.assert_array_equal(oracle.boxes(case, properties, plans), slice_boxes(seg[0][None] == np.arange(
            1, 4)[:, None, None, None]))


def file_slice_axis(path, plans) -> int:
    """The file voxel axis along which the plan slices this image."""
    canonical_axis = plans.transpose_forward[0]  # canonical (Z,Y,X) = RAS axes 2,1,0
    ornt = nib.orientations.io_orientation(nib.load(path).affine)
    return int(next(a for a, (ras, _) in enumerate(ornt) if int(ras) == 2 - canonical_axis))


def test_boxes_drawn_in_the_file_land_on_the_same_anatomy_as_the_reference_boxes(session_roots, tmp_path):
    """Per file slice, each class's tight box in file voxels, through --boxes, gives the oracle's boxes from the
    reference label (within a pixel of label resampling) on both sites' orientations."""
    plans = Plans.load(session_roots.fold_dir / "plans.json")
    spec = LabelSpec.from_dataset_json({"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}})
    for case in CASES:
        label_path = session_roots.raw / "labelsTs" / f"{case}.nii.gz"
        image_path = session_roots.images_ts / f"{case}_0000.nii.gz"
        axis = file_slice_axis(image_path, plans)
        label_ijk = np.asarray(nib.load(label_path).dataobj)
        entries = {}
        for k, name in enumerate(NAMES):
            for s in range(label_ijk.shape[axis]):
                plane = np.take(label_ijk, s, axis=axis) == k + 1  # (first in-slice axis, second)
                if plane.any():
                    xs, ys = np.nonzero(plane.any(axis=1))[0], np.nonzero(plane.any(axis=0))[0]
                    entries.setdefault(name, {})[str(s)] = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
        boxes_file = tmp_path / f"{case}.json"
        boxes_file.write_text(json.dumps({"slice_axis": axis, "cases": {case: entries}}))
        image, geometry = read_case([str(image_path)])
        _, _, properties = preprocess_case(image, geometry, plans)
        from_file = BoxFilePrompts(boxes_file, spec).boxes(case, properties, plans)
        oracle = ReferenceBoxPrompts({case: label_path}, spec).boxes(case, properties, plans)
        assert from_file.shape == oracle.shape == (properties["shape_after_resampling"][0], 3, 4)
        np.testing.assert_array_equal(np.isnan(from_file), np.isnan(oracle))
        assert np.nanmax(np.abs(from_file - oracle)) <= 1.0
        assert (~np.isnan(oracle[..., 0])).sum() > 3


def boxes_json(tmp_path, content) -> str:
    path = tmp_path / "boxes.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ({"synth_siteA_002": {}}, 'a "cases" object'),
    ({"cases": {}, "slice_axes": 2}, "unknown key 'slice_axes'"),
    ({"cases": {}, "slice_axis": 3}, "slice_axis must be 0, 1 or 2"),
    ({"cases": {"c": {"liverr": {}}}}, "case 'c': unknown class 'liverr' (the model's classes: liver, kidney"),
    ({"cases": {"c": {"liver": [1, 2, 3, 4]}}}, "case 'c', class 'liver': expected an object"),
    ({"cases": {"c": {"liver": {"a": [1, 2, 3, 4]}}}}, "case 'c', class 'liver', slice 'a': the slice must be"),
    ({"cases": {"c": {"liver": {"-1": [1, 2, 3, 4]}}}}, "slice '-1': the slice must be a voxel index"),
    ({"cases": {"c": {"liver": {"2": [1, 2, 3]}}}}, "slice '2': a box is 4 numbers [x0, y0, x1, y1], got [1, 2, 3]"),
    ({"cases": {"c": {"liver": {"2": [5, 2, 3, 4]}}}}, "slice '2': box [5, 2, 3, 4] is empty"),
])
def test_a_bad_boxes_file_is_one_line_naming_the_file_and_the_entry(tmp_path, content, message):
    path = boxes_json(tmp_path, content)
    with pytest.raises(SamdgError) as error:
        parse_box_file(tmp_path / "boxes.json", NAMES)
    assert message in str(error.value) and str(error.value).startswith(path) and "\n" not in str(error.value)


def test_fractional_boxes_cover_every_voxel_they_touch(tmp_path):
    boxes_json(tmp_path, {"cases": {"c": {"kidney": {"3": [1.5, 2, 3.2, 4.0]}}}})
    axis, cases = parse_box_file(tmp_path / "boxes.json", NAMES)
    assert axis == 2 and [(b.class_index, b.slice_index, b.box) for b in cases["c"]] == [(1, 3, (1, 2, 4, 4))]


def _predict(argv, capsys):
    code = predict.main(argv)
    return code, capsys.readouterr().err


def test_predict_with_boxes_is_empty_wherever_a_class_has_no_box(session_roots, tmp_path, capsys):
    """siteA's case gets a liver box in one file slice, siteB's case nothing: outside that slice, and for every
    other class, the prediction is empty; a changed boxes file is predicted again."""
    case_a, case_b = CASES
    plans = Plans.load(session_roots.fold_dir / "plans.json")
    image_path = session_roots.images_ts / f"{case_a}_0000.nii.gz"
    axis = file_slice_axis(image_path, plans)
    shape = nib.load(image_path).shape
    middle = shape[axis] // 2
    width, height = [shape[a] for a in range(3) if a != axis]
    box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
    content = {"slice_axis": axis, "cases": {case_a: {"liver": {str(middle): box}}, case_b: {}}}
    boxes = boxes_json(tmp_path, content)
    output = tmp_path / "predictions"
    argv = ["-i", str(session_roots.images_ts), "-o", str(output), "--device", "cpu", "--disable-progress-bar",
            "--boxes", boxes]
    code, err = _predict(argv, capsys)
    assert code == 0, err
    predicted_a = np.asarray(nib.load(output / f"{case_a}.nii.gz").dataobj)
    assert set(np.unique(predicted_a)) <= {0, 1}, "only the prompted class can appear"
    outside = np.delete(predicted_a, middle, axis=axis)
    assert not outside.any(), "slices without a box are empty"
    assert (np.take(predicted_a, middle, axis=axis) == 1).any(), "the box prompts its class"
    assert not np.asarray(nib.load(output / f"{case_b}.nii.gz").dataobj).any()
    assert json.loads((output / "prediction.json").read_text(encoding="utf-8"))["prompt"] == "box prompts from a file"

    code, err = _predict(argv, capsys)
    assert code == 0 and "0 case(s) predicted, 2 already done" in err
    content["cases"][case_b] = {"kidney": {"0": [0, 0, 4, 4]}}
    boxes_json(tmp_path, content)
    code, err = _predict(argv, capsys)
    assert code == 0 and "2 case(s) predicted" in err, "other boxes, other predictions"

    # automatic predictions are not mixed into a box-prompted folder
    with pytest.raises(SystemExit):
        predict.main(argv[:-2])
    assert "another model or setting" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ({"cases": {CASES[0]: {}}}, f"no entry for case '{CASES[1]}'"),
    ({"cases": {CASES[0]: {}, CASES[1]: {}, "synth_siteC_009": {}}}, "case 'synth_siteC_009' is not among the 2"),
    ({"cases": {CASES[0]: {"spleen": {"999": [0, 0, 2, 2]}}, CASES[1]: {}}},
     f"case '{CASES[0]}', class 'spleen', slice '999': slice 999 is outside the image"),
    ({"cases": {CASES[0]: {"spleen": {"0": [0, 0, 2, 2000]}}, CASES[1]: {}}},
     f"case '{CASES[0]}', class 'spleen', slice '0': box [0, 0, 2, 2000] reaches outside the slice"),
])
def test_boxes_that_do_not_fit_the_inputs_stop_before_anything_is_written(session_roots, tmp_path, capsys, content,
                                                                        message):
    output = tmp_path / "predictions"
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["-i", str(session_roots.images_ts), "-o", str(output), "--device", "cpu",
                      "--disable-progress-bar", "--boxes", boxes_json(tmp_path, content)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert not any(output.glob("*.nii.gz"))


def test_a_method_without_a_box_prompted_mode_is_refused(session_roots, tmp_path):
    plans = Plans.load(session_roots.fold_dir / "plans.json")
    spec = LabelSpec.from_dataset_json({"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}})
    dapsam = build_method("dapsam", build_sam("tiny_vit_test", pretrained=False), {}, spec)
    predictor = Predictor([dapsam], plans, spec, device="cpu", progress=False)
    boxes_json(tmp_path, {"cases": {}})
    with pytest.raises(SamdgError, match="method 'dapsam' has no box-prompted mode"):
        predictor.use_box_prompts(BoxFilePrompts(tmp_path / "boxes.json", spec))


@pytest.mark.parametrize("name, settings, whole_box_automatic", [
    ("sam", {}, False), ("dbsam", {"prompt": "whole_image_box"}, True), ("desam", {"prompt": "box"}, True)])
def test_each_class_is_decoded_from_its_own_box_and_a_missing_box_is_empty(name, settings, whole_box_automatic):
    """Whole-image boxes for every class give the automatic whole-image-box prediction (DeSAM-B, dbsam's
    `whole_image_box`) class by class; a class without a box is empty, and the other classes do not depend on it."""
    from samdg.models.layers.box_prompts import EMPTY_LOGIT
    from samdg.models.layers.sam_decoding import whole_image_boxes

    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
    torch.manual_seed(0)
    method = build_method(name, build_sam("tiny_vit_test", pretrained=False), settings, spec).eval()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    whole = whole_image_boxes(2, 128, images.device)[:, None].expand(-1, 2, -1).clone()
    with torch.no_grad():
        prompted = method.predict_with_boxes(images, whole)
        if whole_box_automatic:
            torch.testing.assert_close(prompted, method.predict(images))
        whole[1, 1] = float("nan")
        partly = method.predict_with_boxes(images, whole)
    assert prompted.shape[:2] == (2, 2) and prompted.shape[-1] == prompted.shape[-2]
    assert (partly[1, 1] == EMPTY_LOGIT).all()
    torch.testing.assert_close(partly[0], prompted[0])
    torch.testing.assert_close(partly[1, 0], prompted[1, 0])

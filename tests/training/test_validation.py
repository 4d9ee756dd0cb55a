"""Validation uses the prediction label rule (regions included) and maps whole slices back correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samdg.labels import LabelSpec, label_map_from_logits
from samdg.training.validation import class_confusion, dice_per_class, predict_volume, slice_confusion, volume_dice

REGIONS = LabelSpec.from_dataset_json({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
                                      regions_class_order=[1, 2, 3])


def test_region_validation_paints_in_class_order_and_counts_per_region():
    # Pixel columns: 0 nothing, 1 whole only, 2 whole+core, 3 all three, 4 core only (painted 2 over nothing).
    probabilities = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.9, 0.8, 0.3], [0.9, 0.8, 0.7], [0.2, 0.9, 0.1]])
    logits = torch.logit(probabilities).T.reshape(1, 3, 1, 5)
    assert label_map_from_logits(logits, REGIONS).tolist() == [[[0, 1, 2, 3, 2]]]
    target = torch.tensor([[[0, 1, 2, 3, 0]]])
    confusion = slice_confusion(logits, target, REGIONS)
    # whole: predicted {1,2,3,4} vs reference {1,2,3}; core: {2,3,4} vs {2,3}; enhancing: {3} vs {3}
    assert confusion.tolist() == [[3, 1, 0], [2, 1, 0], [1, 0, 0]]
    dice = dice_per_class(confusion, REGIONS)
    assert dice == pytest.approx({"whole": 6 / 7, "core": 4 / 5, "enhancing": 1.0})


def test_ignore_label_is_left_out_and_empty_classes_are_nan():
    spec = LabelSpec.from_dataset_json({"background": 0, "a": 1, "b": 2, "ignore": 3})
    prediction = torch.tensor([[[1, 1, 0, 0]]])
    reference = torch.tensor([[[1, 3, 3, 0]]])
    assert class_confusion(prediction, reference, spec).tolist() == [[1, 0, 0], [0, 0, 0]]
    dice = volume_dice(prediction.numpy(), reference.numpy(), spec)
    assert dice["a"] == 1.0 and np.isnan(dice["b"])


class BrightPixels:
    """A stand-in model that segments bright pixels at a quarter of the input resolution, as SAM's decoder does."""

    def __init__(self):
        self.batch_sizes = []

    def predict(self, images):
        self.batch_sizes.append(images.shape[0])
        return 40 * (F.avg_pool2d(images[:, :1], 4) - 0.5)


@pytest.mark.parametrize("crop", [None, (12, 16)])
def test_predict_volume_restores_each_slice_to_its_grid(crop):
    from samdg.training.slices import SlicePredictor

    spec = LabelSpec.from_dataset_json({"background": 0, "bright": 1})
    rng = np.random.default_rng(0)
    data = np.zeros((1, 3, 20, 30), np.float32)
    for s in range(3):
        r, c = rng.integers(2, 10), rng.integers(2, 18)
        data[0, s, r:r + 8, c:c + 10] = 1.0
    model = BrightPixels()
    predictor = SlicePredictor([model], 64, crop, ((),), torch.device("cpu"), None)
    mapping = {"channels": [0, 0, 0], "slice_offsets": [0, 0, 0]}
    batches = []
    labels = predict_volume(predictor, data, mapping, spec, batch_size=2, before_batch=batches.append)
    assert labels.shape == (3, 20, 30) and labels.dtype == np.int16
    assert batches == [[0, 1], [2]]  # slice indices announced before each batch (the embedding cache uses them)
    assert volume_dice(labels, (data[0] > 0.5).astype(np.int16), spec)["bright"] > 0.95
    assert model.batch_sizes[:2] == [2, 2] if crop else model.batch_sizes == [2, 1]

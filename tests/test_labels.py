import pytest
import torch

from samdg.errors import SamdgError
from samdg.labels import LabelSpec, label_map_from_logits, targets_from_label_map, valid_mask


def test_plain_labels():
    spec = LabelSpec.from_dataset_json({"background": 0, "PZ": 1, "TZ": 2})
    assert spec.names == ("PZ", "TZ") and spec.classes == ((1,), (2,)) and spec.num_classes == 2
    assert not spec.has_regions


def test_regions_need_an_order():
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    with pytest.raises(SamdgError, match="regions_class_order"):
        LabelSpec.from_dataset_json(labels)
    spec = LabelSpec.from_dataset_json(labels, [1, 2, 3])
    assert spec.has_regions and spec.classes == ((1, 2, 3), (2, 3), (3,))


def test_bad_label_declarations():
    with pytest.raises(SamdgError, match="background"):
        LabelSpec.from_dataset_json({"liver": 1})
    with pytest.raises(SamdgError, match="non-negative integer"):
        LabelSpec.from_dataset_json({"background": 0, "liver": "one"})
    with pytest.raises(SamdgError, match="ignore"):
        LabelSpec.from_dataset_json({"background": 0, "ignore": 1, "liver": 2})


def test_targets_and_label_map_round_trip():
    spec = LabelSpec.from_dataset_json({"background": 0, "a": 1, "b": 2})
    target = torch.tensor([[[0, 1], [2, 1]]])
    onehot = targets_from_label_map(target, spec)
    assert onehot.shape == (1, 2, 2, 2)
    logits = (onehot * 2 - 1) * 10
    assert torch.equal(label_map_from_logits(logits, spec), target)


def test_label_map_takes_most_probable_class_above_half():
    spec = LabelSpec.from_dataset_json({"background": 0, "a": 1, "b": 5})
    probabilities = torch.tensor([0.6, 0.9]).view(1, 2, 1, 1)
    assert label_map_from_logits(torch.logit(probabilities), spec).item() == 5
    low = torch.tensor([0.4, 0.3]).view(1, 2, 1, 1)
    assert label_map_from_logits(torch.logit(low), spec).item() == 0


def test_regions_painted_in_order():
    spec = LabelSpec.from_dataset_json({"background": 0, "whole": [1, 2], "core": 2}, [1, 2])
    target = torch.tensor([[[0, 1, 2]]])
    onehot = targets_from_label_map(target, spec)
    assert onehot[0, :, 0].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert torch.equal(label_map_from_logits((onehot * 2 - 1) * 10, spec), target)


def test_ignore_label_is_masked():
    spec = LabelSpec.from_dataset_json({"background": 0, "a": 1, "ignore": 2})
    assert spec.ignore_label == 2 and spec.num_classes == 1
    assert valid_mask(torch.tensor([0, 1, 2]), spec).tolist() == [True, True, False]


def test_two_labels_with_one_value_are_an_error():
    with pytest.raises(SamdgError, match="labels 'liver' and 'kidney' both have the value 1"):
        LabelSpec.from_dataset_json({"background": 0, "liver": 1, "kidney": 1, "spleen": 3}, source="dataset.json")
    # regions overlap by design
    LabelSpec.from_dataset_json({"background": 0, "whole": [1, 2], "core": 2}, [1, 2])


def test_regions_class_order_must_hold_integers():
    labels = {"background": 0, "whole": [1, 2], "core": 2}
    for order in (["a", "b"], "12", [1, None]):
        with pytest.raises(SamdgError, match="'regions_class_order' must be a list of integers"):
            LabelSpec.from_dataset_json(labels, order)


@pytest.mark.parametrize("labels, message", [
    ({"background": 1, "liver": 0, "kidney": 2}, "'labels' must declare \"background\": 0, got 1"),
    ({"bg": 0, "liver": 1}, "'labels' must declare \"background\": 0"),
    ({"background": 0, "unlabelled": 0, "liver": 1}, "label 'unlabelled' includes 0, the background's value"),
    ({"background": 0, "everything": [0, 1], "core": 1}, "label 'everything' includes 0, the background's value"),
])
def test_background_is_the_label_named_background_with_value_0(labels, message):
    with pytest.raises(SamdgError) as error:
        LabelSpec.from_dataset_json(labels, [1, 1], source="/data/dataset.json")
    assert str(error.value).startswith("/data/dataset.json: ") and message in str(error.value)


def test_label_values_must_fit_the_int16_label_maps():
    LabelSpec.from_dataset_json({"background": 0, "big": 32767})
    with pytest.raises(SamdgError, match="^/data/dataset.json: label 'big' has the value 40000; label values "
                                         "must be at most 32767"):
        LabelSpec.from_dataset_json({"background": 0, "big": 40000}, source="/data/dataset.json")


@pytest.mark.parametrize("order, message", [
    ([1, 2, 7], "'regions_class_order' holds 7, which is not a foreground value of the declared regions (1, 2, 3)"),
    ([1, 2, 0], "'regions_class_order' holds 0, which is not a foreground value"),
    ([1, 2], "'regions_class_order' needs one entry per region (3), got 2: [1, 2]"),
])
def test_regions_class_order_must_paint_declared_foreground_values(order, message):
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    with pytest.raises(SamdgError) as error:
        LabelSpec.from_dataset_json(labels, order, source="/data/dataset.json")
    assert str(error.value).startswith("/data/dataset.json: ") and message in str(error.value)

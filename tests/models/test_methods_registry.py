"""The method registry: registration, lookup, settings resolution and clear errors."""

from __future__ import annotations

import pytest
import torch

from samdg.errors import SamdgError
from samdg.models.methods import (
    SegmentationMethod,
    build_method,
    default_settings,
    get_method,
    list_methods,
    register_method,
    resolve_settings,
)
from samdg.models.methods import registry


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def test_sam_baseline_is_registered_with_its_defaults():
    assert "sam" in list_methods()
    assert issubclass(get_method("sam"), SegmentationMethod)
    settings = default_settings("sam")
    assert settings["lora_rank"] == 0 and settings["lr"] == 1e-4 and settings["weight_decay"] == 0.01
    settings["lr"] = 1.0
    assert default_settings("sam")["lr"] == 1e-4  # callers get copies


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(SamdgError, match=r"unknown method 'unet'; registered methods: .*\bsam\b"):
        get_method("unet")


def test_register_build_and_resolve(scratch_registry):
    @register_method("toy", default_settings={"width": 4, "lr": 0.1})
    class Toy(SegmentationMethod):
        def __init__(self, sam, settings, label_spec):
            super().__init__(sam, settings, label_spec)
            self.layer = torch.nn.Linear(settings["width"], 1)

    assert Toy.method_name == "toy" and "toy" in list_methods()
    assert resolve_settings("toy", {"lr": 0.5}) == {"width": 4, "lr": 0.5}
    with pytest.raises(SamdgError, match="method 'toy' has no setting 'depth' \\(settings: lr, width\\)"):
        resolve_settings("toy", {"depth": 2})
    from samdg.labels import LabelSpec

    method = build_method("toy", None, {"width": 8}, LabelSpec.from_dataset_json({"background": 0, "a": 1}))
    assert method.layer.in_features == 8 and method.num_classes == 1
    assert method.optimizer_settings()["lr"] == 0.1 and method.optimizer_settings()["grad_clip"] == 12.0
    assert method.settings == {"width": 8, "lr": 0.1}
    assert method.cacheable_features() is None  # by default an encoder is assumed to train


def test_a_name_cannot_be_taken_twice(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        @register_method("sam")
        class Other(SegmentationMethod):
            pass

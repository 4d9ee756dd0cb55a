"""The method registry: registration, lookup, typed settings (defaults, checks, JSON round trip), clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.models.methods import (
    MethodSettings,
    SegmentationMethod,
    build_method,
    default_settings,
    get_method,
    list_methods,
    register_method,
    registry,
    resolve_settings,
    settings_classes,
)
from samdg.utils.schema import doc_field, to_plain

SPEC = LabelSpec.from_dataset_json({"background": 0, "a": 1})


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


@dataclasses.dataclass
class ToySettings(MethodSettings):
    """toy"""

    width: int = doc_field("layer width", default=4, minimum=1)


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


@pytest.mark.parametrize("name", list_methods())
def test_every_methods_settings_round_trip_through_json_and_are_documented(name):
    cls = settings_classes()[name]
    plain = default_settings(name)
    assert json.loads(json.dumps(plain)) == plain  # plans.methods stays plain JSON
    assert resolve_settings(name, json.loads(json.dumps(plain))) == cls()
    assert resolve_settings(name, None) == cls() == resolve_settings(name, cls())
    for f in dataclasses.fields(cls):
        assert f.metadata.get("doc"), f"methods.{name}.{f.name} has no documentation"
    older = {key: value for key, value in plain.items() if key != "lr"}  # a block written before 'lr' existed
    assert resolve_settings(name, older).lr == cls().lr


def test_settings_are_checked_when_a_method_is_built(scratch_registry):
    @register_method("toy", settings=ToySettings)
    class Toy(SegmentationMethod):
        def __init__(self, sam, settings, label_spec):
            super().__init__(sam, settings, label_spec)
            self.layer = torch.nn.Linear(self.settings.width, 1)

        def trainable_modules(self):
            return [self.layer]

    assert Toy.method_name == "toy" and Toy.settings_class is ToySettings and "toy" in list_methods()
    assert to_plain(resolve_settings("toy", {"lr": 0.5})) == {**default_settings("toy"), "lr": 0.5}
    with pytest.raises(SamdgError, match=r"methods.toy: unknown key\(s\) depth; valid keys: lr, "):
        resolve_settings("toy", {"depth": 2})
    with pytest.raises(SamdgError, match=r"methods.toy.width: must be >= 1, got 0"):
        build_method("toy", None, {"width": 0}, SPEC)
    with pytest.raises(SamdgError, match=r"methods.toy.lr: must be > 0, got -0.1"):
        Toy(None, ToySettings(lr=-0.1), SPEC)  # also when built directly from a dataclass
    method = build_method("toy", None, {"width": 8}, SPEC)
    assert method.layer.in_features == 8 and method.num_classes == 1 and method.settings.width == 8
    assert method.cacheable_features() is None  # by default an encoder is assumed to train
    assert not method.ddp_find_unused_parameters()
    assert [p.requires_grad for p in method.parameters()] == [True, True]  # built with its declared trainable set
    setup = method.configure_optimizers(total_steps=4)  # the default: AdamW + warm-up + poly, one group
    assert isinstance(setup.optimizer, torch.optim.AdamW) and setup.grad_clip == 12.0
    assert setup.parameters() == list(method.layer.parameters())


def test_registration_needs_a_settings_dataclass_and_a_free_name(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        @register_method("sam")
        class Other(SegmentationMethod):
            pass
    with pytest.raises(TypeError, match="dataclass derived from MethodSettings"):
        register_method("plain", settings=dict)

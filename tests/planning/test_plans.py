"""Plans: JSON round trip, schema checks and migration, user overrides, and the generated documentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from raw_builders import fingerprint_stub, stub_dataset_json

from samdg.errors import SamdgError
from samdg.planning import plans as plans_module
from samdg.planning.planner import plan_experiment
from samdg.planning.plans import Plans, apply_overrides, valid_override_keys

DOCS = Path(__file__).resolve().parents[2] / "documentation" / "plans.md"


@pytest.fixture
def plans() -> Plans:
    fingerprint = fingerprint_stub([(2.5, 0.8, 0.8), (3.0, 0.7, 0.7)], [(12, 40, 36), (14, 44, 40)])
    return plan_experiment(fingerprint, stub_dataset_json(), gpu_memory_gb=24)


def test_round_trip_through_json_file(plans, tmp_path):
    path = tmp_path / "samdgPlans.json"
    plans.save(path)
    on_disk = json.loads(path.read_text())
    assert on_disk["schema_version"] == 1 and on_disk["plans_name"] == "samdgPlans"
    assert on_disk["data_identifier"] == "samdgPlans_2d"
    loaded = Plans.load(path)
    assert loaded == plans
    assert loaded.to_dict() == on_disk
    assert isinstance(loaded.normalization[0], plans_module.ChannelNormalization)
    assert not list(tmp_path.glob(".*")), "atomic save left a temp file behind"


def test_from_dict_rejects_unknown_keys_and_wrong_types(plans):
    data = plans.to_dict()
    data["training"]["batchsize"] = 3
    with pytest.raises(SamdgError, match=r"unknown key\(s\) batchsize; valid keys: batch_size"):
        Plans.from_dict(data)
    data = plans.to_dict()
    data["training"]["batch_size"] = "8"
    with pytest.raises(SamdgError, match="training.batch_size: expected an integer"):
        Plans.from_dict(data)
    data = plans.to_dict()
    data["normalization"][0]["scheme"] = "zscore"
    with pytest.raises(SamdgError, match="'zscore' is not one of ct_clip_scale"):
        Plans.from_dict(data)
    data = plans.to_dict()
    del data["sam"]
    with pytest.raises(SamdgError, match="missing key 'sam'"):
        Plans.from_dict(data)


def test_cross_field_validation(plans):
    data = plans.to_dict()
    data["transpose_backward"] = [0, 2, 1]
    with pytest.raises(SamdgError, match="transpose_backward is not the inverse"):
        Plans.from_dict(data)
    data = plans.to_dict()
    data["channel_mapping"]["channels"] = [0, 0, 4]
    with pytest.raises(SamdgError, match="refers to a channel that does not exist"):
        Plans.from_dict(data)


def test_schema_versions_are_checked_and_migrated(plans, monkeypatch):
    data = plans.to_dict()
    data["schema_version"] = 2
    with pytest.raises(SamdgError, match="newer samdg"):
        Plans.from_dict(data, "x.json")
    del data["schema_version"]
    with pytest.raises(SamdgError, match="x.json: no integer 'schema_version'"):
        Plans.from_dict(data, "x.json")

    old = plans.to_dict()
    old["schema_version"] = 0
    old["training"]["epochs"] = old["training"].pop("num_epochs")  # pretend version 0 used another name

    def rename_epochs(d):
        d["training"]["num_epochs"] = d["training"].pop("epochs")
        return d

    monkeypatch.setattr(plans_module, "_migrations", lambda: {0: rename_epochs})
    migrated = Plans.from_dict(old)
    assert migrated.schema_version == 1 and migrated.training.num_epochs == plans.training.num_epochs


def test_overrides_change_values_and_are_recorded(plans):
    changed = apply_overrides(plans, {"training.batch_size": 5, "normalization.0.scheme": "percentile_clip_scale",
                                      "normalization.0.percentiles": [1, 99], "sam.checkpoint": None})
    assert changed.training.batch_size == 5
    assert changed.normalization[0].scheme == "percentile_clip_scale"
    assert changed.normalization[0].percentiles == [1.0, 99.0]
    assert plans.training.batch_size != 5, "the input plans must not be modified"
    entry = changed.decision("training.batch_size")
    assert entry.value == 5 and entry.reason.startswith("set by the user")
    assert f"planner chose {plans.training.batch_size}" in entry.reason


def test_override_of_method_settings_is_typed_by_the_methods_settings_dataclass(plans):
    changed = apply_overrides(plans, {"methods.desam.lr": 3e-4, "methods.desam.taps": ["block1", "block2", "block3"],
                                      "methods.sam.lora_alpha": 8, "methods.dapsam.input_size_by_family.vit": 512})
    assert changed.methods["desam"]["lr"] == 3e-4 and changed.methods["desam"]["taps"] == ["block1", "block2", "block3"]
    assert changed.methods["sam"]["lora_alpha"] == 8.0 and isinstance(changed.methods["sam"]["lora_alpha"], float)
    assert changed.methods["dapsam"]["input_size_by_family"] == {"vit": 512, "tinyvit": 0}
    assert changed.decision("methods.sam.lora_alpha").reason.endswith("planner chose None")
    # A null default (taps, lora_alpha) no longer accepts anything: the dataclass types the value.
    with pytest.raises(SamdgError, match="--override methods.desam.taps: expected a list, got 3"):
        apply_overrides(plans, {"methods.desam.taps": 3})
    with pytest.raises(SamdgError, match="--override methods.sam.lora_alpha: .*'big'"):
        apply_overrides(plans, {"methods.sam.lora_alpha": "big"})
    with pytest.raises(SamdgError, match="methods.desam.lr: expected a number"):
        apply_overrides(plans, {"methods.desam.lr": "fast"})
    with pytest.raises(SamdgError, match="--override methods.desam.prompt: 'scribble' is not one of point, box"):
        apply_overrides(plans, {"methods.desam.prompt": "scribble"})
    with pytest.raises(SamdgError, match="unknown key 'nope'; valid keys here: lr, weight_decay"):
        apply_overrides(plans, {"methods.desam.nope": 1})
    keys = valid_override_keys(plans)
    assert {"methods.desam.lr", "methods.sam.lora_rank", "methods.dapsam.input_size_by_family"} <= set(keys)


@pytest.mark.parametrize("key, value, message", [
    ("methods.sam.lr", -1e-4, "> 0"),  # finding 15: torch's traceback before
    ("methods.sam.lr", 0, "> 0"),
    ("methods.sam.lora_rank", -1, ">= 0"),  # finding 21: accepted and recorded before
    ("methods.sam.weight_decay", -0.01, ">= 0"),
    ("methods.dapsam.betas.1", 1.0, ">= 0 and < 1"),
    ("methods.dapsam.warmup_fraction", 1.5, ">= 0 and <= 1"),
    ("methods.dapsam.input_size_by_family.vit", -384, ">= 0"),
    ("methods.desam.decoder_widths", [16, 0, 8], ">= 1"),
    ("methods.desam.grid_points_per_side", 0, ">= 1"),
    ("methods.desam.background_point_probability", float("nan"), ">= 0 and <= 1"),
])
def test_numeric_method_settings_out_of_range_are_one_line_errors_naming_the_key(plans, key, value, message):
    with pytest.raises(SamdgError) as error:
        apply_overrides(plans, {key: value})
    text = str(error.value)
    assert text.startswith(f"--override {key}") and f"must be {message}" in text and "\n" not in text


def test_method_blocks_are_checked_and_completed_when_plans_load(plans):
    data = plans.to_dict()
    del data["methods"]["sam"]["bce_weight"]  # a plan written before the setting existed
    data["methods"]["retired_method"] = {"anything": 1}  # blocks of methods no longer registered stay as they are
    loaded = Plans.from_dict(data, "old.json")
    assert loaded.methods["sam"]["bce_weight"] == 1.0 and loaded.methods["retired_method"] == {"anything": 1}
    data["methods"]["sam"]["lora_rank"] = -2
    with pytest.raises(SamdgError, match=r"old.json.methods.sam.lora_rank: must be >= 0, got -2"):
        Plans.from_dict(data, "old.json")
    data["methods"]["sam"]["lora_rank"] = "2"
    with pytest.raises(SamdgError, match=r"old.json.methods.sam.lora_rank: expected an integer"):
        Plans.from_dict(data, "old.json")


def test_bounds_of_plans_fields_are_checked_on_load_and_override():
    from dataclasses import dataclass

    from samdg.utils.schema import doc_field, from_plain

    @dataclass
    class Bounded:
        """test"""

        rate: float = doc_field("a rate", default=0.5, exclusive_minimum=0, maximum=1)
        sizes: list[int] = doc_field("sizes", default_factory=lambda: [1], minimum=1)

    assert from_plain(Bounded, {"rate": 1, "sizes": [1, 2]}, "x").rate == 1.0
    with pytest.raises(SamdgError, match=r"x.rate: must be > 0 and <= 1, got 0.0"):
        from_plain(Bounded, {"rate": 0}, "x")
    with pytest.raises(SamdgError, match=r"x.sizes.1: must be >= 1, got 0"):
        from_plain(Bounded, {"sizes": [3, 0]}, "x")


def test_bad_overrides_name_the_key_and_the_valid_keys(plans):
    with pytest.raises(SamdgError) as error:
        apply_overrides(plans, {"batch_size": 4})
    assert "--override batch_size: unknown key; valid keys:" in str(error.value)
    assert "training.batch_size" in str(error.value)
    with pytest.raises(SamdgError, match="unknown key 'bacth_size'; valid keys here: batch_size"):
        apply_overrides(plans, {"training.bacth_size": 4})
    with pytest.raises(SamdgError, match="expected an integer"):
        apply_overrides(plans, {"training.batch_size": 2.5})
    with pytest.raises(SamdgError, match="'9' is not an index"):
        apply_overrides(plans, {"normalization.9.scheme": "minmax"})
    with pytest.raises(SamdgError, match="must be >= 1"):
        apply_overrides(plans, {"training.batch_size": 0})
    with pytest.raises(SamdgError, match="decision log cannot be overridden"):
        apply_overrides(plans, {"decisions": []})


def test_slice_axis_override_keeps_transpositions_consistent(plans):
    changed = apply_overrides(plans, {"slice_axis": 2})
    assert changed.transpose_forward == [2, 0, 1] and changed.transpose_backward == [1, 2, 0]
    changed = apply_overrides(plans, {"transpose_forward": [1, 0, 2]})
    assert changed.slice_axis == 1 and changed.transpose_backward == [1, 0, 2]


def test_preprocessing_hash_tracks_only_preprocessing_fields(plans):
    base = plans.preprocessing_hash()
    assert apply_overrides(plans, {"training.batch_size": 3}).preprocessing_hash() == base
    assert apply_overrides(plans, {"target_spacing": [2.5, 1.0, 1.0]}).preprocessing_hash() != base
    assert apply_overrides(plans, {"normalization.0.clip_high": 250.0}).preprocessing_hash() != base


def test_documentation_field_tables_are_generated_from_the_dataclasses():
    from samdg.models.methods import list_methods
    from samdg.planning.docs import reference_markdown

    table = reference_markdown()
    for key in ("`training.batch_size`", "`channel_mapping.slice_offsets`", "`normalization.N.scheme`",
                "`sam.input_size`", "`methods.sam.lora_rank`", "`methods.desam.taps`", "`methods.dapsam.memory_slots`"):
        assert key in table
    assert all(f"### `methods.{name}`" in table for name in list_methods())  # every method's settings table
    assert "| `methods.sam.lr` | `float` | `0.0001` | > 0 |" in table
    assert table in DOCS.read_text(), "documentation/plans.md is out of date: run python -m samdg.planning.docs"


def test_a_plan_with_a_bad_method_setting_is_not_saved(plans, tmp_path):
    plans.methods["sam"]["lr"] = -1.0
    with pytest.raises(SamdgError, match=r"samdgPlans.json: methods.sam.lr: must be > 0, got -1.0"):
        plans.save(tmp_path / "samdgPlans.json")
    assert not (tmp_path / "samdgPlans.json").exists()


def test_blocks_of_unregistered_methods_keep_free_form_overrides(plans):
    plans.methods["retired"] = {"lr": 1e-4, "name": "x"}
    changed = apply_overrides(plans, {"methods.retired.lr": 2e-4})
    assert changed.methods["retired"] == {"lr": 2e-4, "name": "x"}
    with pytest.raises(SamdgError, match="--override methods.retired.lr: expected a number"):
        apply_overrides(plans, {"methods.retired.lr": "fast"})
    with pytest.raises(SamdgError, match="unknown key 'nosuch'; valid keys here: .*retired"):
        apply_overrides(plans, {"methods.nosuch.lr": 1.0})

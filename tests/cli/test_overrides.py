"""The one --override parser of every command (samdg.cli.common.parse_overrides)."""

import pytest

from samdg.cli.common import parse_overrides
from samdg.errors import SamdgError


def test_values_are_json_or_text_and_a_repeated_key_keeps_the_last():
    assert parse_overrides(["training.batch_size=4", "methods.sam.lr=1e-3", "training.augmentation=none",
                            "sam.inplane_crop=[64,64]", "methods.desam.taps=null", " training.num_workers =0",
                            "training.batch_size=8"]) == {
        "training.batch_size": 8, "methods.sam.lr": 1e-3, "training.augmentation": "none",
        "sam.inplane_crop": [64, 64], "methods.desam.taps": None, "training.num_workers": 0}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("text", ["nonsense", "=4", " =4"])
def test_a_malformed_override_is_a_one_line_error(text):
    with pytest.raises(SamdgError, match=f"--override {text}: expected key=value"):
        parse_overrides([text])

"""sam, desam and dapsam give the outputs recorded before the model-layer refactoring (same weights, same inputs).

The weights are set by the recorded tensor names and loaded with ``load_state_dict`` (strict), so this also proves
that a state_dict written by an earlier samdg still loads.
"""

from __future__ import annotations

import pytest
import torch
from reference_outputs import CASES, RECORD, run_case

RECORDED = torch.load(RECORD)


@pytest.mark.parametrize("name, method, variant, settings", CASES, ids=[case[0] for case in CASES])
def test_outputs_equal_the_recorded_ones(name, method, variant, settings):
    recorded = RECORDED[name]
    outputs = run_case(method, variant, settings, keys=recorded["keys"])
    for key in ("train_logits", "loss", "predict"):
        expected = recorded[key]
        torch.testing.assert_close(outputs[key], expected, rtol=1e-4, atol=1e-6, msg=f"{name}: {key} changed")

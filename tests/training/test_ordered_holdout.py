"""Fold first90 (DeSAM's split): first 90 % of a domain's patients train, last 10 % validate, in the dataset's order."""

import json

import pytest

from samdg.errors import SamdgError
from samdg.inference.model_selection import fold_id
from samdg.training.splits import fold_cases, parse_fold


def test_the_last_tenth_in_the_domains_map_order_validates_and_the_split_file_is_kept(tmp_path):
    # the converter lists the patients in the download's order, which is not the order of the ids
    order = [f"p{n:02d}" for n in (7, 3, 12, 1, 9, 4, 11, 2, 10, 5, 8, 6)]
    domains = {case: "RUNMC" for case in order} | {"q1": "BMC", "q2": "BMC"}
    (tmp_path / "dataset.json").write_text(json.dumps({"domains": domains}))
    train, val = fold_cases(tmp_path, domains, parse_fold("first90"), ["RUNMC"])
    assert val == sorted(order[10:]) and train == sorted(order[:10])  # int(12 * 0.9) = 10 train, 2 validate
    split_file = tmp_path / "splits_first90__src-RUNMC.json"
    assert json.loads(split_file.read_text()) == {"train": order[:10], "val": order[10:]}
    # written once, read afterwards: a hand edit is honoured
    split_file.write_text(json.dumps({"train": order[1:], "val": order[:1]}))
    assert fold_cases(tmp_path, domains, "first90", ["RUNMC"])[1] == [order[0]]
    split_file.write_text(json.dumps({"train": ["q1"], "val": order[:1]}))
    with pytest.raises(SamdgError, match="splits_first90__src-RUNMC.json: lists case"):
        fold_cases(tmp_path, domains, "first90", ["RUNMC"])


def test_a_tiny_domain_still_holds_one_case_out_and_a_single_case_is_an_error(tmp_path):
    domains = {"a": "HK", "b": "HK", "c": "HK", "d": "UCL"}
    assert fold_cases(tmp_path, domains, "first90", ["HK"]) == (["a", "b"], ["c"])
    with pytest.raises(SamdgError, match="at least 2 cases"):
        fold_cases(tmp_path, domains, "first90", ["UCL"])


def test_prediction_accepts_the_fold_name():
    assert fold_id("fold_first90") == "first90" and fold_id("3") == "3"
    with pytest.raises(SamdgError, match="first90"):
        fold_id("first80")

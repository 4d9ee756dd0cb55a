"""Folds, splits files, source-domain selection and results-folder naming."""

from __future__ import annotations

import json

import pytest

from samdg.errors import SamdgError
from samdg.paths import preprocessed_dataset_dir
from samdg.training.results import results_fold_dir
from samdg.training.splits import fold_cases, kfold_split, parse_domains, parse_fold, splits_file

DOMAINS = {**{f"a{i}": "siteA" for i in range(6)}, **{f"b{i}": "siteB" for i in range(5)}, "c0": "site C"}


def test_kfold_split_partitions_sorted_ids_reproducibly():
    ids = [f"case{i:02d}" for i in range(12)]
    splits = kfold_split(list(reversed(ids)))
    assert len(splits) == 5
    assert sorted(c for s in splits for c in s["val"]) == ids  # every case validated exactly once
    for split in splits:
        assert set(split["train"]) | set(split["val"]) == set(ids)
        assert not set(split["train"]) & set(split["val"])
    assert splits == kfold_split(ids)  # order of the input does not matter
    assert [len(s["val"]) for s in splits] == [3, 3, 2, 2, 2]


def test_splits_file_written_once_and_reused(tmp_path):
    train, val = fold_cases(tmp_path, DOMAINS, 2, None)
    path = tmp_path / "splits_final.json"
    saved = json.loads(path.read_text())
    assert len(saved) == 5 and sorted(saved[2]["val"]) == val and sorted(saved[2]["train"]) == train
    # A hand-edited file is respected (nnU-Net semantics).
    saved[0] = {"train": ["a0", "a1"], "val": ["b0"]}
    path.write_text(json.dumps(saved))
    assert fold_cases(tmp_path, DOMAINS, 0, None) == (["a0", "a1"], ["b0"])


def test_source_domains_restrict_both_sides_and_use_their_own_splits_file(tmp_path):
    train, val = fold_cases(tmp_path, DOMAINS, 1, ["siteA"])
    assert set(train + val) <= {c for c, d in DOMAINS.items() if d == "siteA"}
    assert len(train) + len(val) == 6
    assert splits_file(tmp_path, ["siteA"]).name == "splits_final__src-siteA.json"
    assert splits_file(tmp_path, ["siteA"]).is_file()
    assert not (tmp_path / "splits_final.json").exists()
    # Multi-source: the union of the two domains; domain names unsafe in file names are sanitised.
    train, val = fold_cases(tmp_path, DOMAINS, "all", ["siteB", "site C"])
    assert train == val == sorted(["b0", "b1", "b2", "b3", "b4", "c0"])
    assert splits_file(tmp_path, ["siteB", "site C"]).name == "splits_final__src-site-C+siteB.json"


def test_unknown_domain_and_fold_errors_list_what_exists(tmp_path):
    with pytest.raises(SamdgError, match="unknown domain.*siteZ.*domains of this dataset: site C, siteA, siteB"):
        fold_cases(tmp_path, DOMAINS, 0, ["siteZ"])
    fold_cases(tmp_path, DOMAINS, 0, None)
    with pytest.raises(SamdgError, match="fold 7 does not exist.*folds 0-4"):
        fold_cases(tmp_path, DOMAINS, 7, None)
    with pytest.raises(SamdgError, match="choose one of 0, 1, 2, 3, 4, all"):
        parse_fold("first")
    assert parse_fold("3") == 3 and parse_fold("ALL") == "all"
    with pytest.raises(SamdgError, match="cannot be split into 5 folds.*'all'"):
        fold_cases(tmp_path, {"x": "d", "y": "d"}, 0, ["d"])


def test_stale_splits_file_is_reported(tmp_path):
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a0", "gone"], "val": ["b0"]}]))
    with pytest.raises(SamdgError, match="not preprocessed: gone"):
        fold_cases(tmp_path, DOMAINS, 0, None)


def test_results_fold_dir_naming(samdg_roots):
    (samdg_roots["preprocessed"] / "Dataset004_Demo").mkdir()
    base = samdg_roots["results"] / "Dataset004_Demo" / "sam__samdgPlans__2d"
    assert results_fold_dir(4, "sam", 0) == base / "fold_0"
    assert results_fold_dir("Dataset004_Demo", "sam", "all", ["siteB", "siteA"]) == base / "fold_all__src-siteA+siteB"
    assert parse_domains(" siteB, siteA ,siteB") == ["siteA", "siteB"]
    assert parse_domains("") is None


def test_training_uses_the_fold_and_domain_selection(synthetic_dataset, quick_args):
    from samdg.training.config import resolve_run

    run = resolve_run(quick_args(fold="2", source_domains=["siteB"]), "cpu")
    domains = {run.cases[c].domain for c in run.train_cases + run.val_cases}
    assert domains == {"siteB"}
    assert len(run.train_cases) == 4 and len(run.val_cases) == 1
    saved = json.loads((preprocessed_dataset_dir(synthetic_dataset) / "splits_final__src-siteB.json").read_text())
    assert saved[2]["val"] == run.val_cases

    everything = resolve_run(quick_args(fold="all"), "cpu")
    assert everything.train_cases == everything.val_cases and len(everything.train_cases) == 10

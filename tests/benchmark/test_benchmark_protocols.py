"""Protocol rules, the matrix averages and the errors of samdg_benchmark, without training anything."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from samdg.benchmark.matrix import COLUMN_MEAN, ROW_MEAN, markdown, matrix_frame
from samdg.benchmark.protocols import check_domains, evaluation_cases, evaluation_notes, model_plans, parse_sources
from samdg.cli import benchmark
from samdg.dataset.raw import load_raw_dataset
from samdg.errors import SamdgError


def _cells(rows):
    return pd.DataFrame([{"source": s, "target": t, "metric": "dice", "value": v, "n_cases": 1,
                          "kind": "in-domain" if s == t else "cross-domain"} for s, t, v in rows])


def test_averages_leave_out_in_domain_cells_and_missing_values():
    cells = _cells([("A", "A", 0.9), ("A", "B", 0.5), ("A", "C", 0.3),
                    ("B", "A", 0.4), ("B", "B", 0.8), ("B", "C", math.nan)])
    frame = matrix_frame(cells, "dice", ["A", "B"], ["A", "B", "C"])
    assert frame.loc["A", ROW_MEAN] == pytest.approx(0.4)   # (0.5 + 0.3) / 2, not with 0.9
    assert frame.loc["B", ROW_MEAN] == pytest.approx(0.4)   # only 0.4: C is missing
    assert frame.loc[COLUMN_MEAN, "A"] == pytest.approx(0.4)
    assert frame.loc[COLUMN_MEAN, "B"] == pytest.approx(0.5)
    assert frame.loc[COLUMN_MEAN, "C"] == pytest.approx(0.3)
    assert frame.loc[COLUMN_MEAN, ROW_MEAN] == pytest.approx((0.5 + 0.3 + 0.4) / 3)
    table = markdown(pd.concat([cells, cells.assign(metric="hd95_mm")]), ["A", "B"], ["A", "B", "C"], "t", [])
    assert "| A | (0.900) | 0.500 | 0.300 | 0.400 |" in table
    assert "| B | 0.400 | (0.800) | – | 0.400 |" in table


def test_leave_one_domain_out_trains_on_all_other_domains():
    plans = model_plans("leave-one-domain-out", ["A", "B", "C"], ["B"])
    assert [(p.row, p.training_domains) for p in plans] == [("all but B", ("A", "C"))]
    assert [p.training_domains for p in model_plans("single-source", ["A", "B", "C"], ["C", "A"])] == [("C",), ("A",)]
    with pytest.raises(SamdgError, match="unknown domain"):
        parse_sources("A,Z", ["A", "B"])


def _synthetic(samdg_roots, name, **options):
    from dataset_conversion.synthetic import make_synthetic_dataset

    folder = samdg_roots["raw"] / name
    make_synthetic_dataset(folder, shape=(16, 16, 4), **options)
    return folder


def test_domains_without_labelled_test_cases_are_tested_on_unseen_training_cases(samdg_roots):
    raw = load_raw_dataset(_synthetic(samdg_roots, "Dataset952_NoTest", num_domains=2, cases_per_domain=2,
                                      test_cases_per_domain=0))
    cases = evaluation_cases(raw, ("siteA",))
    assert sorted(cases.cases) == ["synth_siteB_000", "synth_siteB_001"]  # never siteA's own training cases
    assert set(cases.split.values()) == {"Tr"}
    assert any("siteA has no labelled test cases" in note for note in evaluation_notes(raw))


def test_datasets_without_two_domains_are_refused(samdg_roots, capsys):
    one = load_raw_dataset(_synthetic(samdg_roots, "Dataset953_OneSite", num_domains=1, cases_per_domain=1))
    with pytest.raises(SamdgError, match="at least 2"):
        check_domains(one)

    folder = _synthetic(samdg_roots, "Dataset954_NoMap", num_domains=2, cases_per_domain=1)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    del dataset_json["domains"]
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["-d", "954", "-m", "sam", "--protocol", "leave-one-domain-out"])
    assert exit_info.value.code == 2
    assert "no 'domains' map" in capsys.readouterr().err


def test_mistakes_of_the_training_settings_are_found_before_anything_is_written(samdg_roots, capsys):
    from samdg.preprocessing.api import plan_and_preprocess

    _synthetic(samdg_roots, "Dataset955_Checks", num_domains=2, cases_per_domain=1, test_cases_per_domain=0)
    results = samdg_roots["results"] / "Dataset955_Checks"
    for argv, message in (
        (["-m", "sam"], "samdgPlans.json: not found; run samdg_plan_and_preprocess -d Dataset955_Checks first"),
        (["-m", "unet"], "unknown method 'unet'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.main(["-d", "955", "--protocol", "single-source", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not results.exists()

    plan_and_preprocess("955", variant="tiny_vit_test", preprocess=False, progress=False, log=lambda message: None)
    with pytest.raises(SystemExit):  # checked even when every model would be reused (none is trained here)
        benchmark.main(["-d", "955", "-m", "sam", "--protocol", "single-source", "--override", "training.foo=1"])
    assert "--override training.foo: unknown key 'foo'" in capsys.readouterr().err
    assert not results.exists()

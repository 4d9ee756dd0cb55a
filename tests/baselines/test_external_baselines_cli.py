"""The CLIs' side of external baselines: listed in the help, refused options and a missing nnunetv2 said in one
line (these tests run without nnunetv2 too)."""

from __future__ import annotations

import importlib.util

import pytest

from samdg.cli import benchmark, train


def _error_line(capsys, run) -> str:
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("samdg: error: ") and "\n" not in error
    return error


def test_help_lists_the_external_baselines_apart_from_the_methods():
    for parser in (train.build_parser(), benchmark.build_parser()):
        text = " ".join(parser.format_help().split())
        assert "sam" in text and "nnunet, nnunet_3d (external baselines)" in text


def test_without_nnunetv2_both_commands_say_what_to_install(samdg_roots, monkeypatch, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "nnunetv2" else real_find_spec(name, *args))
    make_synthetic_dataset(samdg_roots["raw"] / "Dataset962_NoNnunet", num_domains=2, cases_per_domain=1,
                           test_cases_per_domain=1, shape=(16, 16, 4))
    for run in (lambda: benchmark.main(["-d", "962", "-m", "nnunet", "--protocol", "single-source"]),
                lambda: train.main(["962", "nnunet", "all"])):
        assert "pip install 'samdg[nnunet]'" in _error_line(capsys, run)
    assert not (samdg_roots["results"] / "Dataset962_NoNnunet").exists()


def test_options_nnunet_does_not_use_are_refused_by_samdg_train(capsys):
    error = _error_line(capsys, lambda: train.main(["962", "nnunet", "all", "--override", "training.lr=0.1"]))
    assert "--override" in error and "external baseline" in error


def test_an_unknown_name_in_a_method_list_is_named(capsys):
    error = _error_line(capsys, lambda: benchmark.main(["-d", "962", "-m", "sam,nope", "--protocol", "single-source"]))
    assert "nope" in error and "nnunet" in error

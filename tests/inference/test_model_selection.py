"""Which trained model samdg_predict uses: none, exactly one, several (listed), folds and fold folders."""

from __future__ import annotations

import shutil

import pytest

from samdg.cli import predict
from samdg.errors import SamdgError
from samdg.inference.model_selection import list_trained_models, select_model


def test_no_trained_model_is_an_error_naming_the_results_folder(samdg_roots):
    with pytest.raises(SamdgError, match="no trained model") as error:
        select_model()
    assert str(samdg_roots["results"]) in str(error.value)


def test_the_only_trained_model_is_chosen_without_options(session_roots):
    selection = select_model()
    assert selection.model.model_dir == session_roots.model_dir
    assert selection.model.source_domains == ["siteA"]
    assert selection.folds == ("all",)  # no numbered fold: fold_all is used
    assert selection.fold_dirs == [session_roots.fold_dir]


def _results_with_two_models(trained, samdg_roots):
    """This test's results root holding the session model twice: trained on siteA and (a copy) on siteB."""
    model_dir = samdg_roots["results"] / trained.model_dir.parent.name / trained.model_dir.name
    shutil.copytree(trained.fold_dir, model_dir / trained.fold_dir.name)
    shutil.copytree(trained.fold_dir, model_dir / "fold_all__src-siteB")
    return model_dir


def test_several_models_are_listed_with_the_options_that_select_them(trained_synthetic, samdg_roots, capsys):
    model_dir = _results_with_two_models(trained_synthetic, samdg_roots)
    assert len(list_trained_models()) == 2
    with pytest.raises(SamdgError, match="2 trained models match") as error:
        select_model(method="sam")
    message = str(error.value)
    assert "--source-domains siteA" in message and "--source-domains siteB" in message

    assert select_model(source_domains="siteB").fold_dirs == [model_dir / "fold_all__src-siteB"]
    assert select_model(model_dir=model_dir, folds=["all__src-siteA"]).fold_dirs == [model_dir / "fold_all__src-siteA"]
    assert select_model(model_dir=model_dir / "fold_all__src-siteB").fold_dirs == [model_dir / "fold_all__src-siteB"]

    # the command prints the same list and exits with 2, without a traceback
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["-i", str(trained_synthetic.images_ts), "-o", str(samdg_roots["results"] / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("samdg: error: 2 trained models match") and "Traceback" not in err


def test_a_fold_without_the_checkpoint_is_an_error_listing_the_folds(session_roots):
    with pytest.raises(SamdgError, match=r"fold\(s\) 0 have no checkpoint_final.pth.*folds with it: all"):
        select_model(folds=["0"])
    with pytest.raises(SamdgError, match="no trained model"):
        select_model(checkpoint="checkpoint_missing.pth")
    with pytest.raises(SamdgError, match="not a fold"):
        select_model(folds=["first"])

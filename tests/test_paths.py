import pytest

from samdg import paths
from samdg.errors import SamdgError


def test_dataset_id_resolves_across_roots(samdg_roots):
    (samdg_roots["raw"] / "Dataset005_Prostate").mkdir()
    (samdg_roots["preprocessed"] / "Dataset005_Prostate").mkdir()
    assert paths.resolve_dataset_name(5) == "Dataset005_Prostate"
    assert paths.resolve_dataset_name("005") == "Dataset005_Prostate"
    assert paths.resolve_dataset_name("Dataset005_Prostate") == "Dataset005_Prostate"


def test_missing_dataset_lists_what_exists(samdg_roots):
    (samdg_roots["raw"] / "Dataset004_Hippocampus").mkdir()
    with pytest.raises(SamdgError, match="no dataset with id 5.*Dataset004_Hippocampus"):
        paths.resolve_dataset_name(5)


def test_ambiguous_dataset_id(samdg_roots):
    (samdg_roots["raw"] / "Dataset005_Prostate").mkdir()
    (samdg_roots["results"] / "Dataset005_Other").mkdir()
    with pytest.raises(SamdgError, match="ambiguous.*Dataset005_Other.*Dataset005_Prostate"):
        paths.resolve_dataset_name(5)


def test_ids_with_more_than_three_digits(samdg_roots):
    (samdg_roots["raw"] / "Dataset1234_Big").mkdir()
    assert paths.resolve_dataset_name(1234) == "Dataset1234_Big"
    assert paths.dataset_id_of("Dataset1234_Big") == 1234


def test_bad_dataset_argument():
    with pytest.raises(SamdgError, match="neither a number"):
        paths.resolve_dataset_name("prostate")


def test_default_root_is_announced_once(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("SAMDG_results")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_announced", set())
    first = paths.results_root()
    second = paths.results_root()
    assert first == second == (tmp_path / "samdg_data" / "results")
    assert capsys.readouterr().err.count("SAMDG_results is not set") == 1


def test_a_dataset_name_that_exists_nowhere_lists_what_exists(samdg_roots):
    (samdg_roots["raw"] / "Dataset005_Prostate").mkdir()
    with pytest.raises(SamdgError, match="no dataset named Dataset005_Prostat .*datasets found: Dataset005_Prostate"):
        paths.resolve_dataset_name("Dataset005_Prostat")
    with pytest.raises(SamdgError, match="'Dataset5' is not a DatasetXXX_Name folder name"):
        paths.resolve_dataset_name("Dataset5")
    (samdg_roots["results"] / "Dataset006_Heart").mkdir()  # any of the three roots will do
    assert paths.resolve_dataset_name("Dataset006_Heart") == "Dataset006_Heart"

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


@pytest.mark.parametrize("variable, where", [("SAMDG_preprocessed", "raw"), ("SAMDG_results", "raw/preprocessed"),
                                             ("SAMDG_preprocessed", "raw/Dataset005_Prostate"), ("SAMDG_results", ".")])
def test_roots_that_overlap_the_raw_data_are_refused_before_anything_is_written(samdg_roots, monkeypatch, tmp_path,
                                                                              variable, where):
    raw = tmp_path / "raw"
    raw.mkdir()
    monkeypatch.setenv("SAMDG_raw", str(raw))
    monkeypatch.setenv(variable, str((tmp_path / where)))
    relation = {"raw": "is", ".": "contains"}.get(where, "lies inside")
    root = paths.preprocessed_root if variable == "SAMDG_preprocessed" else paths.results_root
    with pytest.raises(SamdgError, match=f"^{variable}=.* {relation} SAMDG_raw=.*raw data is read-only"):
        root()
    with pytest.raises(SamdgError, match=f"{variable}=.*SAMDG_raw="):
        paths.resolve_dataset_name(5)
    assert list(raw.iterdir()) == []


def test_separate_roots_are_accepted(samdg_roots):
    assert paths.preprocessed_root() == samdg_roots["preprocessed"]
    assert paths.results_root() == samdg_roots["results"]


def test_an_output_folder_in_the_raw_data_or_around_the_inputs_is_refused(samdg_roots, tmp_path):
    inputs = tmp_path / "scans" / "imagesTs"
    inputs.mkdir(parents=True)
    for folder, message in [(samdg_roots["raw"] / "Dataset005_X" / "labelsTs", "lies inside SAMDG_raw="),
                            (samdg_roots["raw"], "lies inside SAMDG_raw="),
                            (inputs, "lies inside the input folder"),
                            (inputs / "preds", "lies inside the input folder"),
                            (inputs.parent, "contains the input folder")]:
        with pytest.raises(SamdgError, match=f"^-o {folder}: {message}"):
            paths.check_output_folder(folder, "-o", (inputs,))
    paths.check_output_folder(tmp_path / "predictions", "-o", (inputs,))


def test_an_unset_raw_root_without_data_protects_nothing(samdg_roots, monkeypatch, tmp_path):
    monkeypatch.delenv("SAMDG_raw")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAMDG_results", str(tmp_path))  # would contain ./samdg_data/raw, which does not exist
    assert paths.results_root() == tmp_path
    (tmp_path / "samdg_data" / "raw").mkdir(parents=True)
    with pytest.raises(SamdgError, match="SAMDG_results=.* contains SAMDG_raw="):
        paths.results_root()

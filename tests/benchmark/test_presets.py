"""samdg_benchmark --preset: every shipped preset validates and names the converters' domains; a preset runs end
to end on a tiny dataset with the preset's domain names; command-line options win over the preset's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from samdg.benchmark.preset import list_presets, load_preset, read_preset
from samdg.cli import benchmark
from samdg.errors import SamdgError

# The domain names each converter writes (M&Ms takes its vendor letters from the challenge CSV).
CONVERTER_DOMAINS = {
    "samdg_convert_saml": lambda: __import__("dataset_conversion.saml", fromlist=["SITES"]).SITES,
    "samdg_convert_riga": lambda: __import__("dataset_conversion.riga", fromlist=["DOMAINS"]).DOMAINS,
    "samdg_convert_chaos_btcv": lambda: ("CT", *__import__("dataset_conversion.chaos_btcv",
                                                           fromlist=["CHAOS_DOMAINS"]).CHAOS_DOMAINS),
    "samdg_convert_mnms": lambda: ("A", "B", "C", "D"),
}
DATASET = "Dataset952_PresetSynth"
FAST = ["--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu", "--override", "training.augmentation=none",
        "--override", "training.num_workers=0", "-np", "1", "--disable-progress-bar"]


def test_the_six_protocols_of_the_issue_are_shipped():
    assert set(list_presets()) == {"dapsam-prostate", "dapsam-riga", "desam-prostate", "abdomen-ct2mr",
                                   "abdomen-mr2ct", "mnms-lodo"}


@pytest.mark.parametrize("name", list_presets())
def test_every_shipped_preset_validates_and_uses_its_converters_domain_names(name):
    from samdg.baselines import is_external_baseline
    from samdg.models.methods import list_methods

    preset = load_preset(name)
    assert preset.method is None or preset.method in list_methods() or is_external_baseline(preset.method)
    converter = next(c for c in CONVERTER_DOMAINS if c in preset.dataset)
    domains = set(CONVERTER_DOMAINS[converter]())
    assert set(preset.sources or ()) <= domains and set(preset.targets or ()) <= domains
    if preset.protocol == "single-source" and preset.targets:
        assert not set(preset.sources or ()) & set(preset.targets), "a source that is also a target"
    for published in preset.published:
        assert published["value"] > 0 and published["source"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("split"), "missing field(s) split"),
    (lambda d: d.update(split="first80"), "split 'first80' is not one of all, first90"),
    (lambda d: d.update(name="other"), "field 'name' is 'other'"),
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
    (lambda d: d.update(sources="RUNMC"), "field 'sources' has the wrong type"),
    (lambda d: d["published"][0].update(verified="yes"), "each 'published' entry needs"),
])
def test_a_malformed_preset_file_is_one_line_naming_it(tmp_path, edit, message):
    data = json.loads(load_preset("dapsam-prostate").path.read_text())
    edit(data)
    path = tmp_path / "dapsam-prostate.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SamdgError, match="dapsam-prostate.json: ") as error:
        read_preset(path)
    assert message in str(error.value)


def fails(argv, capsys) -> str:
    """Run samdg_benchmark expecting its one-line error; return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_an_unknown_preset_lists_the_shipped_ones(capsys):
    err = fails(["-d", "952", "--preset", "desam-liver"], capsys)
    assert "--preset desam-liver: no such preset" in err and "desam-prostate" in err and "\n" not in err


def _tiny_prostate_dataset(samdg_roots):
    """2 synthetic sites renamed RUNMC and BMC (3 training + 1 test case each), planned with tiny_vit_test."""
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.preprocessing.api import plan_and_preprocess

    folder = samdg_roots["raw"] / DATASET
    make_synthetic_dataset(folder, num_domains=2, cases_per_domain=3, test_cases_per_domain=1, shape=(32, 32, 6))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    names = {"siteA": "RUNMC", "siteB": "BMC"}
    # the converter lists patients in the download's order: put RUNMC's second case last
    order = sorted(dataset_json["domains"], key=lambda case: case == "synth_siteA_001")
    dataset_json["domains"] = {case: names[dataset_json["domains"][case]] for case in order}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    plan_and_preprocess(DATASET, variant="tiny_vit_test", progress=False, log=lambda message: None)


def test_desam_prostate_preset_runs_end_to_end_with_its_split_and_the_paper_columns(samdg_roots, capsys):
    from samdg.planning.plans import Plans, apply_overrides

    _tiny_prostate_dataset(samdg_roots)
    plans = Plans.load(samdg_roots["preprocessed"] / DATASET / "samdgPlans.json")
    for name in list_presets():  # every preset's plan overrides are valid plans entries
        apply_overrides(plans, load_preset(name).overrides)

    # the preset's six sites are not all in this dataset: one line, naming where the sources came from
    err = fails(["-d", "952", "--preset", "desam-prostate", *FAST], capsys)
    assert "--sources (or preset desam-prostate) RUNMC,BMC,I2CVB,UCL,BIDMC,HK: unknown domain(s) I2CVB" in err

    assert benchmark.main(["-d", "952", "--preset", "desam-prostate", "--sources", "RUNMC", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "preset desam-prostate" in printed and "method: desam (preset)" in printed
    assert "sources: RUNMC (command line)" in printed and "split: first90 (preset)" in printed
    assert "79.02" in printed and "command line win" in printed

    out = samdg_roots["results"] / DATASET / "benchmark__desam__desam-prostate"
    result = json.loads((out / "benchmark.json").read_text())
    assert result["settings"]["fold"] == "first90" and result["settings"]["paper_metrics"] is True
    assert result["models"][0]["model"].endswith("fold_first90__src-RUNMC")
    assert result["models"][0]["checkpoint"] == "checkpoint_best.pth"  # selected on the held-out 10 %
    # DeSAM's split: the last 10 % (here one case) of RUNMC in the domains-map order validates
    split = json.loads((samdg_roots["preprocessed"] / DATASET / "splits_first90__src-RUNMC.json").read_text())
    assert split == {"train": ["synth_siteA_000", "synth_siteA_002"], "val": ["synth_siteA_001"]}

    matrix = pd.read_csv(out / "matrix.csv")
    assert list(dict.fromkeys(matrix["metric"])) == ["dice", "hd95_mm", "paper_dice_fg_slices",
                                                     "paper_dice_per_image"]
    per_case = pd.read_csv(out / "predictions" / "src-RUNMC" / "evaluation_Ts" / "per_case.csv",
                           keep_default_na=False, na_values=["NaN"])
    bmc = per_case[per_case["domain"] == "BMC"]
    cell = matrix[(matrix["metric"] == "paper_dice_fg_slices") & (matrix["source"] == "RUNMC")]["BMC"].item()
    assert cell == pytest.approx(bmc.groupby("label")["paper_dice_fg_slices"].mean().mean(), abs=1e-5)
    # the released code's averaging: every unseen-site case of a source pooled (one target here: the same cases)
    pooled = result["headline"]["paper_dice_fg_slices_pooled_cross_domain_mean"]
    assert pooled == pytest.approx(bmc.groupby("label")["paper_dice_fg_slices"].mean().mean(), abs=1e-6)
    markdown = (out / "matrix.md").read_text()
    assert "The papers' averaging" in markdown
    assert "preset desam-prostate" in markdown and "inflate Dice" in markdown
    assert "Dice over foreground slices only" in markdown


def test_command_line_options_win_over_the_preset(samdg_roots):
    from samdg.benchmark.preset import merge

    preset = load_preset("dapsam-prostate")
    chosen = merge(preset, {"method": "sam", "sources": "HK", "split": None, "paper_metrics": False,
                            "overrides": {"sam.input_size": 256, "training.augmentation": "none"}})
    assert chosen["method"] == ("sam", "command line") and chosen["sources"] == ("HK", "command line")
    assert chosen["split"] == ("all", "preset") and chosen["paper_metrics"] == (False, "command line")
    assert chosen["overrides"][0] == {"sam.input_size": 256, "training.augmentation": "none"}
    assert chosen["targets"] == (None, "preset") and chosen["protocol"] == ("single-source", "preset")


def test_without_a_preset_method_and_protocol_stay_required(capsys):
    assert "-m/--method is required (or --preset NAME)" in fails(["-d", "952", "--protocol", "single-source"], capsys)
    assert "preset mnms-lodo sets no method" in fails(["-d", "952", "--preset", "mnms-lodo"], capsys)


def test_targets_restrict_the_tested_domains_and_their_notes(samdg_roots, capsys):
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.benchmark.protocols import evaluation_cases, evaluation_notes
    from samdg.dataset.raw import load_raw_dataset

    folder = samdg_roots["raw"] / "Dataset953_Targets"
    make_synthetic_dataset(folder, num_domains=3, cases_per_domain=1, test_cases_per_domain=0, shape=(16, 16, 4))
    raw = load_raw_dataset(folder)
    cases = evaluation_cases(raw, ("siteA",), ["siteC"])
    assert sorted(cases.cases) == ["synth_siteC_000"]
    assert [note.split()[1] for note in evaluation_notes(raw, ["siteC"])] == ["siteC"]
    err = fails(["-d", "953", "-m", "sam", "--protocol", "single-source", "--targets", "siteD"], capsys)
    assert "--targets siteD: unknown domain(s) siteD" in err
    # the external nnU-Net baseline trains on samdg's usual folds only
    err = fails(["-d", "953", "-m", "nnunet", "--protocol", "single-source", "--split", "first90"], capsys)
    assert "nnunet trains on samdg's 5-fold or 'all' splits only" in err
    from samdg.cli import train

    with pytest.raises(SystemExit):
        train.main(["953", "nnunet", "first90", "--device", "cpu"])
    assert "fold first90: the nnU-Net baseline trains on samdg's 5-fold split or 'all' only" in capsys.readouterr().err


def test_the_papers_pooled_average_weighs_cases_not_target_sites():
    from samdg.benchmark.matrix import cell_values, pooled_cross_domain

    per_case = pd.DataFrame({"case": ["s1", "h1", "h2", "h3", "r1"], "domain": ["UCL", "HK", "HK", "HK", "RUNMC"],
                             "label": ["prostate"] * 5, "paper_dice_fg_slices": [1.0, 0.0, 0.0, 0.0, 0.7],
                             "dice": [1.0] * 5, "hd95_mm": [1.0] * 5})
    cells = {c["target"]: c["value"] for c in cell_values(per_case, "RUNMC", ["RUNMC"])
             if c["metric"] == "paper_dice_fg_slices"}
    assert (cells["UCL"] + cells["HK"]) / 2 == pytest.approx(0.5)  # samdg: each target site weighs the same
    assert pooled_cross_domain(per_case, ["RUNMC"], "paper_dice_fg_slices") == pytest.approx(0.25)  # 4 cases pooled


def test_the_combined_table_gets_the_paper_tables_and_their_note_only_when_measured(tmp_path):
    from samdg.benchmark.comparison import write_comparison

    results = []
    for method, paper in (("sam", True), ("dapsam", False)):
        rows = [("dice", 0.5), ("hd95_mm", 3.0)] + ([("paper_dice_fg_slices", 0.8)] if paper else [])
        cells = pd.DataFrame([{"source": "BinRushed", "target": "MESSIDOR_Base1", "metric": m, "value": v,
                               "n_cases": 2, "kind": "cross-domain"} for m, v in rows])
        cells.to_csv(tmp_path / f"{method}.csv", index=False)
        results.append({"settings": {"method": method}, "domains": ["BinRushed", "MESSIDOR_Base1"],
                        "targets": ["MESSIDOR_Base1"], "files": {"cells": str(tmp_path / f"{method}.csv"),
                                                                 "markdown": str(tmp_path / method / "matrix.md")}})
    text = write_comparison(tmp_path / "both", results, "t")["markdown"].read_text()
    assert "| method | MESSIDOR_Base1 | cross-domain mean |" in text  # the targets only, not the source
    assert "Dice over foreground slices only" in text and "inflate Dice" in text
    assert "| dapsam |  |" in text and "| sam | 0.800 |" in text
    alone = write_comparison(tmp_path / "one", results[1:], "t")["markdown"].read_text()
    assert "paper" not in alone

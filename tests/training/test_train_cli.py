"""``samdg_train`` argument handling: every user mistake is one clear line and exit code 2."""

from __future__ import annotations

import re

import pytest

from samdg.cli.train import main


def _fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["901", "unet", "0"], "unknown method 'unet'; registered methods: .*sam"),
        (["901", "sam", "7"], "fold 7 does not exist: .*splits_final.json holds folds 0-4"),
        (["901", "sam", "last"], "fold 'last' is not valid; choose one of 0, 1, 2, 3, 4, all"),
        (["901", "sam", "0", "--source-domains", "siteA,siteX"],
         "unknown domain\\(s\\) siteX; domains of this dataset: siteA, siteB"),
        (["902", "sam", "0"], "no dataset with id 902 .*datasets found: Dataset901_Synth"),
        (["901", "sam", "0", "--override", "training.batchsize=4"], "training.batchsize: unknown key 'batchsize'"),
        (["901", "sam", "0", "--override", "methods.sam.lr=fast"], "methods.sam.lr: expected a number"),
        (["901", "sam", "0", "--embedding-cache", "memory", "--override", "sam.inplane_crop=[16,16]"],
         "needs whole slices, but sam.inplane_crop is \\[16, 16\\]"),
        (["901", "sam", "0", "--override", "methods.sam.lora_rank=4", "--override", "training.augmentation=none",
          "--embedding-cache", "memory"], "trains its image encoder, so encoder features cannot be cached"),
        (["901", "sam", "0", "--epochs", "0"], "--epochs must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(synthetic_dataset, capsys, argv, message):
    error = _fails(capsys, argv + ["--device", "cpu"])
    assert error.startswith("samdg: error: ")
    assert re.search(message, error), error


def test_unprocessed_dataset_points_to_plan_and_preprocess(samdg_roots, capsys):
    (samdg_roots["raw"] / "Dataset903_Raw").mkdir()
    error = _fails(capsys, ["903", "sam", "0", "--device", "cpu"])
    assert "samdg_plan_and_preprocess -d Dataset903_Raw" in error


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["901", "sam"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: fold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["901", "sam", "0", "--device", "tpu"])
    assert "samdg: error: --device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err


def test_cli_trains_and_reports_the_results_folder(synthetic_dataset, capsys):
    code = main(["901", "sam", "all", "--device", "cpu", "--epochs", "1", "--iters-per-epoch", "1", "--batch-size", "2",
                 "--num-workers", "0", "--no-pbar", "--no-final-validation", "--override", "training.augmentation=none",
                 "--embedding-cache", "memory"])
    assert code == 0
    out = capsys.readouterr().out
    assert "results in " in out and out.strip().endswith("sam__samdgPlans__2d/fold_all")

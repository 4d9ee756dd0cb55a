"""One training run per fold folder, a killed run's temp files are removed by the rerun, and a bad --seed is refused
before the fold folder exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import samdg
from samdg.cli.train import main
from samdg.training.results import results_fold_dir

QUICK = ["--device", "cpu", "--epochs", "1", "--iters-per-epoch", "1", "--batch-size", "2", "--num-workers", "0",
         "--no-pbar", "--no-final-validation", "--override", "training.augmentation=none"]

HOLDER = """
import sys
from samdg.utils.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("samdg: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_refused_before_the_fold_folder_exists(synthetic_dataset, capsys, seed):
    err = _fails(capsys, ["901", "sam", "0", "--seed", seed, *QUICK])
    assert f"--seed {seed}: must be between 0 and {2**32 - 1}" in err
    assert not results_fold_dir(synthetic_dataset, "sam", 0).parent.exists()


def test_a_second_training_of_the_same_fold_is_refused_naming_the_first(synthetic_dataset, capsys):
    fold_dir = results_fold_dir(synthetic_dataset, "sam", "all")
    env = {**os.environ, "PYTHONPATH": str(Path(samdg.__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(fold_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _fails(capsys, ["901", "sam", "all", *QUICK])
        assert f"{fold_dir}: in use by another samdg run (pid {holder.pid} on " in err
        assert [p.name for p in fold_dir.iterdir()] == [".samdg.lock"], "the refused run wrote nothing"
    finally:
        holder.stdin.close()
        holder.wait()


def test_temp_files_of_a_killed_training_are_removed_by_the_rerun(synthetic_dataset, capsys):
    fold_dir = results_fold_dir(synthetic_dataset, "sam", "all")
    (fold_dir / "validation").mkdir(parents=True)
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    leftovers = [fold_dir / f".checkpoint_latest.pth.samdg-{dead_pid}-k1ll3d00.pth",
                 fold_dir / "validation" / f".summary.json.samdg-{dead_pid}-k1ll3d00.json"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert main(["901", "sam", "all", "--c", *QUICK]) == 0
    assert not any(path.exists() for path in leftovers)
    assert (fold_dir / "checkpoint_final.pth").is_file() and not (fold_dir / ".samdg.lock").exists()

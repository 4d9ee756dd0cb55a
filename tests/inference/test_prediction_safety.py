"""samdg_predict never vouches for, nor silently replaces, files it did not write; never writes into raw data or
its inputs; one run per output folder; a killed run's temp files go; a 2D input to a 3D model is said."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import samdg
from samdg.cli import predict
from samdg.inference import predictor as predictor_module

CASES = ("synth_siteA_002", "synth_siteB_002")


def _argv(session_roots, output: Path, *extra: str) -> list[str]:
    return ["-i", str(session_roots.images_ts), "-o", str(output), "--model-dir", str(session_roots.model_dir),
            "--device", "cpu", "--disable-progress-bar", *extra]


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n") and err.splitlines()[-1].startswith("samdg: error: "), err
    return err.splitlines()[-1]


def test_copied_reference_labels_are_not_counted_as_predictions(session_roots, tmp_path, capsys):
    output = tmp_path / "predictions"
    output.mkdir()
    for case in CASES:
        shutil.copy(session_roots.raw / "labelsTs" / f"{case}.nii.gz", output / f"{case}.nii.gz")
    reference = (output / f"{CASES[0]}.nii.gz").read_bytes()
    err = _refused(_argv(session_roots, output), capsys)
    assert f"{output / CASES[0]}.nii.gz (and 1 other file(s)): has the name of an output but was not written by " \
           "this model" in err and "--overwrite" in err
    assert sorted(p.name for p in output.iterdir()) == sorted(f"{c}.nii.gz" for c in CASES), "nothing written"
    assert (output / f"{CASES[0]}.nii.gz").read_bytes() == reference

    assert predict.main(_argv(session_roots, output, "--overwrite")) == 0
    assert "2 case(s) predicted, 0 already done" in capsys.readouterr().err
    assert (output / f"{CASES[0]}.nii.gz").read_bytes() != reference
    record = json.loads((output / "prediction.json").read_text())
    assert sorted(record["cases"]) == list(CASES)
    entry = record["cases"][CASES[0]]
    stat = os.stat(output / f"{CASES[0]}.nii.gz")
    assert entry["state"] == "done" and entry["outputs"] == {f"{CASES[0]}.nii.gz": [stat.st_size, stat.st_mtime_ns]}
    assert list(entry["inputs"]) == [f"{CASES[0]}_0000.nii.gz"]


def test_a_rerun_skips_only_what_the_record_proves(session_roots, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    shutil.copytree(session_roots.images_ts, inputs)
    output = tmp_path / "predictions"
    argv = ["-i", str(inputs), *_argv(session_roots, output)[2:]]
    assert predict.main(argv) == 0
    capsys.readouterr()

    changed_input = inputs / f"{CASES[0]}_0000.nii.gz"
    os.utime(changed_input, ns=(changed_input.stat().st_atime_ns, changed_input.stat().st_mtime_ns + 10**9))
    assert predict.main(argv) == 0
    assert "1 case(s) predicted, 1 already done" in capsys.readouterr().err

    edited = output / f"{CASES[1]}.nii.gz"
    edited.write_bytes(edited.read_bytes() + b"\0")  # changed after samdg wrote it: no longer vouched for
    assert f"{edited}: has the name of an output" in _refused(argv, capsys)


def test_outputs_of_a_run_killed_mid_case_are_recognised_as_its_own(session_roots, tmp_path, capsys, monkeypatch):
    output = tmp_path / "predictions"
    real_export = predictor_module.export_prediction

    def export_then_die(*args, **kwargs):
        real_export(*args, **kwargs)  # the label file is in place, the record still says "writing"
        raise KeyboardInterrupt

    monkeypatch.setattr(predictor_module, "export_prediction", export_then_die)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(_argv(session_roots, output))
    assert exit_info.value.code == 130
    assert json.loads((output / "prediction.json").read_text())["cases"][CASES[0]]["state"] == "writing"
    monkeypatch.undo()
    capsys.readouterr()
    assert predict.main(_argv(session_roots, output)) == 0
    assert "2 case(s) predicted, 0 already done" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["labelsTs", "imagesTs/preds", "imagesTs", "."])
def test_an_output_folder_in_the_raw_data_or_around_the_input_is_refused(session_roots, capsys, where):
    output = (session_roots.raw / where).resolve()
    before = sorted(p.relative_to(session_roots.raw) for p in session_roots.raw.rglob("*"))
    err = _refused(_argv(session_roots, output), capsys)
    assert f"-o {output}: lies inside SAMDG_raw=" in err or f"-o {output}: contains the input folder" in err
    assert sorted(p.relative_to(session_roots.raw) for p in session_roots.raw.rglob("*")) == before


def test_an_input_folder_outside_the_raw_data_is_protected_too(session_roots, tmp_path, capsys):
    inputs = tmp_path / "scans" / "imagesTs"
    shutil.copytree(session_roots.images_ts, inputs)
    for output, message in [(inputs / "preds", "lies inside the input folder"),
                            (inputs.parent, "contains the input folder")]:
        err = _refused(["-i", str(inputs), *_argv(session_roots, output)[2:]], capsys)
        assert f"-o {output}: {message} {inputs}" in err
    assert sorted(p.name for p in (tmp_path / "scans").iterdir()) == ["imagesTs"]


HOLDER = """
import sys
from samdg.utils.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_prediction_into_the_same_folder_is_refused(session_roots, tmp_path, capsys):
    output = tmp_path / "predictions"
    env = {**os.environ, "PYTHONPATH": str(Path(samdg.__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _refused(_argv(session_roots, output), capsys)
        assert f"{output}: in use by another samdg run (pid {holder.pid} on " in err
    finally:
        holder.stdin.close()
        holder.wait()
    assert predict.main(_argv(session_roots, output)) == 0
    assert not (output / ".samdg.lock").exists()


def test_temp_files_of_a_killed_prediction_are_removed_by_the_rerun(session_roots, tmp_path, capsys):
    output = tmp_path / "predictions"
    assert predict.main(_argv(session_roots, output, "--save-probabilities")) == 0
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = output / f".{CASES[0]}.npz.samdg-{int(finished.stdout)}-k1ll3d00.npz"
    leftover.write_bytes(b"half of a probabilities file")
    assert predict.main(_argv(session_roots, output, "--save-probabilities")) == 0
    assert not leftover.exists()
    assert "0 case(s) predicted, 2 already done" in capsys.readouterr().err
    assert predict.main(_argv(session_roots, output)) == 0  # the label maps alone are as finished
    assert "0 case(s) predicted, 2 already done" in capsys.readouterr().err


def test_a_2d_image_for_a_model_trained_on_3d_volumes_is_said(session_roots, tmp_path, capsys):
    from PIL import Image

    inputs = tmp_path / "photos"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(inputs / "photo_0000.png")
    code = predict.main(["-i", str(inputs), *_argv(session_roots, tmp_path / "out")[2:]])
    err = capsys.readouterr().err
    assert code == 0
    assert (f"samdg: warning: {inputs / 'photo_0000.png'}: a 2D .png image, but the model was trained on 3D .nii.gz MR "
            "images; predicting anyway") in err
    assert (tmp_path / "out" / "photo.png").is_file()
    assert "warning" not in predict_and_capture(session_roots, tmp_path / "out3d", capsys)


def predict_and_capture(session_roots, output, capsys) -> str:
    assert predict.main(_argv(session_roots, output)) == 0
    return capsys.readouterr().err


def test_a_full_disk_stops_the_run_with_one_line_and_no_partial_file(session_roots, tmp_path, capsys, monkeypatch):
    import shutil as shutil_module

    from samdg.utils import files

    def full(*args, **kwargs):  # what numpy's writer raises on a full disk: an OSError without errno
        raise OSError("147456 requested and 8192 written")

    output = tmp_path / "predictions"
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: shutil_module._ntuple_diskusage(10**9, 10**9, 0))
    monkeypatch.setattr(np, "savez_compressed", full)
    err = _refused(_argv(session_roots, output, "--save-probabilities"), capsys)
    assert err == (f"samdg: error: no space left on {output} (writing {CASES[0]}.npz); free some space and rerun, "
                   "finished outputs are kept")
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")], "no temp file left"
    assert json.loads((output / "prediction.json").read_text())["cases"][CASES[0]]["state"] == "writing"

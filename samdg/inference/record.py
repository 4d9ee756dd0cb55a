"""``prediction.json``: which model wrote which outputs from which inputs, so a rerun skips only proven work.

The record holds the run's identity (model folder, source domains, folds, checkpoint with its size and time
stamp, TTA, box prompts if any) and, per case, the input files (with the file its box prompts come from) and
output files as ``[size, modification time in ns]``:

    {"model_dir": ..., "checkpoint_signature": [...], "mirroring": false, ...,
     "cases": {"case_001": {"state": "done", "inputs": {"case_001_0000.nii.gz": [1234, 1700000000000000000]},
                            "outputs": {"case_001.nii.gz": [456, 1700000000100000000]}}}}

A case is entered as ``"writing"`` before its files are written and as ``"done"`` after they are all in place
(every file is written atomically), so after a kill a rerun knows which files are its own. A rerun skips a case
only when the record says ``done``, with the same inputs, and its outputs are unchanged. A file with an output name
that the record does not vouch for (copied in, written by another tool, edited afterwards) is *foreign*: the run
stops and names it rather than counting it as done or replacing it (``--overwrite`` replaces it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from samdg.errors import SamdgError
from samdg.utils.files import atomic_write_json, load_json

RUN_INFO_FILE = "prediction.json"
# What must match for earlier outputs to count as this run's (device, batch size and precision do not).
IDENTITY_KEYS = ("model_dir", "source_domains", "folds", "checkpoint", "checkpoint_signature", "mirroring", "prompt")
DONE, WRITING = "done", "writing"


def file_stamp(path: str | os.PathLike) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def stamps(paths: Sequence[str | os.PathLike]) -> dict[str, list[int] | None]:
    return {Path(p).name: file_stamp(p) for p in paths}


class PredictionRecord:
    """The ``prediction.json`` of one output folder while a run fills it (one writer: the folder is locked).

    Args:
        output_dir: the prediction folder.
        info: this run's identity (:data:`IDENTITY_KEYS`) and settings, written at the top of the file.
        overwrite: forget what an earlier run recorded (its outputs are predicted again).

    Raises:
        SamdgError: without ``overwrite``, the folder's record is of another model or setting.
    """

    def __init__(self, output_dir: Path, info: dict[str, Any], overwrite: bool) -> None:
        self.path = output_dir / RUN_INFO_FILE
        self.info = {k: v for k, v in info.items() if k != "cases"}
        self.cases: dict[str, dict[str, Any]] = {}
        if self.path.is_file() and not overwrite:
            previous = load_json(self.path)
            if not isinstance(previous, dict):
                previous = {}
            if any(previous.get(k) != info.get(k) for k in IDENTITY_KEYS):
                was = ", ".join(f"{k}={previous.get(k)}" for k in IDENTITY_KEYS)
                raise SamdgError(f"{output_dir}: holds predictions of another model or setting ({was}); use "
                                 "--overwrite to replace them or choose another -o")
            cases = previous.get("cases")
            self.cases = {k: v for k, v in cases.items() if isinstance(v, dict)} if isinstance(cases, dict) else {}

    def state_of(self, case_id: str, inputs: Sequence[str | os.PathLike], outputs: Sequence[Path]
                 ) -> tuple[str, Path | None]:
        """``("done", None)``: finished with these inputs, outputs untouched; ``("todo", None)``: to predict (nothing
        foreign in the way); ``("foreign", file)``: ``file`` has an output name but is not vouched for."""
        entry = self.cases.get(case_id) or {}
        recorded = entry.get("outputs") or {}
        present = [p for p in outputs if p.exists() or p.is_symlink()]
        state = entry.get("state")
        unchanged = [p for p in present if recorded.get(p.name) == file_stamp(p)]  # an .npz not asked for is no matter
        if state == DONE and len(unchanged) == len(outputs) and stamps(inputs) == entry.get("inputs"):
            return DONE, None
        for path in present:
            ours = state == WRITING or (state == DONE and path in unchanged)
            if not ours:
                return "foreign", path
        return "todo", None

    def writing(self, case_id: str, inputs: Sequence[str | os.PathLike]) -> None:
        """Enter a case before its outputs are written (a kill in between leaves them recognisably ours)."""
        self.cases[case_id] = {"state": WRITING, "inputs": stamps(inputs)}
        self.save()

    def done(self, case_id: str, inputs: Sequence[str | os.PathLike], outputs: Sequence[Path]) -> None:
        """Enter a case whose outputs are all written (their stamps are what a rerun checks)."""
        self.cases[case_id] = {"state": DONE, "inputs": stamps(inputs), "outputs": stamps(outputs)}
        self.save()

    def keep_only(self, case_ids: set[str], output_dir: Path) -> None:
        """Drop entries this run cannot vouch for: cases it does not handle whose outputs changed or vanished."""
        for case_id in list(self.cases):
            entry = self.cases[case_id]
            outputs = entry.get("outputs") or {}
            unchanged = entry.get("state") == DONE and outputs and all(
                file_stamp(output_dir / name) == stamp for name, stamp in outputs.items())
            if case_id not in case_ids and not unchanged:
                del self.cases[case_id]

    def save(self) -> None:
        atomic_write_json(self.path, {**self.info, "cases": self.cases})

"""The predictor: a trained model kept in memory that turns raw cases into label files.

Per case: :func:`samdg.imageio.read_case` -> :func:`samdg.preprocessing.pipeline.preprocess_case` (the function
training used, with the plans stored next to the checkpoint) -> every slice as SAM input, predicted in batches
(:class:`samdg.training.slices.SlicePredictor`: optional in-plane tiling and mirroring TTA; fold ensembles average
probabilities) -> stacked to (K,S,H,W) -> :func:`samdg.inference.export.export_prediction` (inverse of every
preprocessing step, the label rule, the input's exact geometry and format).

    predictor = Predictor.from_model_dir("$SAMDG_results/Dataset901_Synthetic/sam__samdgPlans__2d/fold_all__src-siteA")
    label_map, probabilities, geometry = predictor.predict_case(["case_0000.nii.gz"], return_probabilities=True)
    report = predictor.predict_folder("imagesTs", "predictions")

A folder prediction locks its output folder (one run at a time), reads and preprocesses the next case in a
background thread while the current one is on the accelerator, skips the cases ``prediction.json`` proves finished
by this model from these inputs (:mod:`samdg.inference.record`; unless ``overwrite``), refuses to replace output
files it did not write (unless ``overwrite``), and reports a case that fails by name while the others finish.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from samdg.dataset.raw import list_image_folder
from samdg.errors import SamdgError
from samdg.imageio import ENDINGS_2D, SUPPORTED_ENDINGS, Geometry, file_ending_of, read_case
from samdg.inference.box_prompts import BoxPrompts, check_box_prompts
from samdg.inference.export import export_prediction, label_map_from_volume, probabilities_to_original
from samdg.inference.model_selection import DEFAULT_CHECKPOINT, SelectedModel, select_model
from samdg.inference.record import DONE, RUN_INFO_FILE, PredictionRecord
from samdg.labels import LabelSpec
from samdg.paths import check_output_folder
from samdg.planning.plans import Plans
from samdg.preprocessing.pipeline import preprocess_case
from samdg.training.slices import MIRROR_AXES, SlicePredictor
from samdg.utils.device import autocast_dtype, resolve_device
from samdg.utils.files import NoSpaceLeft, atomic_write_json, load_json, remove_stale_temp_files
from samdg.utils.lock import folder_lock


@dataclass
class PredictionReport:
    """What a folder prediction did: case ids predicted, skipped (already finished) and failed (id -> reason)."""

    output_dir: Path
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary_line(self) -> str:
        line = (f"{len(self.predicted)} case(s) predicted, {len(self.skipped)} already done (skipped), "
                f"{len(self.failed)} failed; outputs in {self.output_dir}")
        return line + (f" ({self.seconds:.1f} s)" if self.predicted else "")


def _check_finite(image: np.ndarray, image_paths: Sequence[str | Path]) -> None:
    """NaN/inf voxels would silently shift the normalisation and the prediction around them (training data is
    checked by the integrity check; this is the same check for prediction inputs)."""
    bad = ~np.isfinite(image)
    if not bad.any():
        return
    per_file = len(image_paths) == image.shape[0]  # one channel per file (RGB 2D images have three)
    for channel in range(image.shape[0]):
        count = int(bad[channel].sum())
        if count:
            path = image_paths[channel] if per_file else image_paths[0]
            raise SamdgError(f"{path}: contains {count} NaN or infinite voxel(s); replace them (e.g. with the "
                             "background intensity) before predicting")


def load_fold(fold_dir: Path, checkpoint: str) -> tuple[torch.nn.Module, Plans, LabelSpec]:
    """One trained fold -> (method in eval mode on the CPU, its plans, its label spec), via the trainer's loader."""
    from samdg.training.checkpoint import load_trained_method

    return load_trained_method(fold_dir, checkpoint)


def _file_signature(path: Path) -> str:
    """Size and modification time of a checkpoint: changes when the model is retrained."""
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def _model_dataset_json(model_dir: Path, fold_dirs: Sequence[Path]) -> dict | None:
    for candidate in [*(d / "dataset.json" for d in fold_dirs), model_dir / "dataset.json"]:
        if candidate.is_file():
            return load_json(candidate)
    return None


class Predictor:
    """A trained model (one fold or a fold ensemble) ready to predict raw cases.

    Args:
        methods: trained methods, one per fold (same plans and classes); moved to ``device`` and set to eval.
        plans: the plans the model was trained with (the copy stored next to the checkpoint, overrides included).
        label_spec: the model's classes.
        dataset_json: the training dataset's dataset.json (copied to output folders; gives the default file ending).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` or a torch.device.
        batch_size: slices per forward pass; None = the plan's training batch size for the device.
        mirroring: in-plane mirroring test-time augmentation (4 passes per slice).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere) | ``fp32`` | ``bf16`` | ``fp16``.
        progress: show a progress bar over cases.
        model_info: identifies the model in ``prediction.json`` (model_dir, folds, checkpoint).

    Folder predictions use the methods' automatic mode, or box prompts after :meth:`use_box_prompts`.
    """

    def __init__(self, methods: Sequence[torch.nn.Module], plans: Plans, label_spec: LabelSpec,
                 dataset_json: dict | None = None, device: str | torch.device = "auto", batch_size: int | None = None,
                 mirroring: bool = False, precision: str = "auto", progress: bool = True,
                 model_info: dict[str, Any] | None = None) -> None:
        if not methods:
            raise SamdgError("a Predictor needs at least one trained method")
        self.box_prompts: BoxPrompts | None = None
        self.device = resolve_device(device)
        self.methods = [method.to(self.device).eval() for method in methods]
        self.plans = plans
        self.label_spec = label_spec
        self.dataset_json = dataset_json
        if batch_size is not None and batch_size < 1:
            raise SamdgError(f"--batch-size must be at least 1, got {batch_size}")
        default_batch = plans.training.batch_size if self.device.type == "cuda" else plans.training.batch_size_cpu
        self.batch_size = int(batch_size or default_batch)
        self.mirroring = bool(mirroring)
        self.precision = precision
        self.progress = progress
        self.model_info = dict(model_info or {})
        self.slice_predictor = SlicePredictor(self.methods, plans.sam.input_size, plans.sam.inplane_crop,
                                              MIRROR_AXES if self.mirroring else ((),), self.device,
                                              autocast_dtype(precision, self.device))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[str | int] | None = None,
                       checkpoint: str = DEFAULT_CHECKPOINT, device: str | torch.device = "auto",
                       source_domains: str | None = None, **options) -> "Predictor":
        """Load a trained model folder (``.../<method>__<plans>__2d``) or one of its ``fold_*`` folders.

        ``folds`` None: every numbered fold with the checkpoint (else ``fold_all``); several folds are ensembled.
        ``source_domains`` picks among models of the folder trained on different source domains.
        ``options`` go to the constructor (batch_size, mirroring, precision, progress).
        """
        selection = select_model(folds=folds, checkpoint=checkpoint, model_dir=model_dir, source_domains=source_domains)
        return cls.from_selection(selection, checkpoint, device, **options)

    @classmethod
    def from_selection(cls, selection: SelectedModel, checkpoint: str = DEFAULT_CHECKPOINT,
                       device: str | torch.device = "auto", **options) -> "Predictor":
        """Load the folds of a :class:`SelectedModel` (from :func:`select_model`)."""
        fold_dirs = selection.fold_dirs
        methods, plans, spec = [], None, None
        for fold_dir in fold_dirs:
            method, fold_plans, fold_spec = load_fold(fold_dir, checkpoint)
            if plans is not None and (fold_plans.preprocessing_hash() != plans.preprocessing_hash()
                                      or fold_spec != spec or fold_plans.sam.variant != plans.sam.variant):
                raise SamdgError(f"{fold_dir}: its plans or classes differ from {fold_dirs[0]}; folds trained with "
                                 "different plans cannot be ensembled (select one with -f)")
            methods.append(method)
            plans, spec = plans or fold_plans, spec or fold_spec
        info = {"model_dir": str(selection.model.model_dir.resolve()), "source_domains": selection.model.source_domains,
                "folds": list(selection.folds), "checkpoint": checkpoint,
                "checkpoint_signature": [_file_signature(d / checkpoint) for d in fold_dirs]}
        dataset_json = _model_dataset_json(selection.model.model_dir, fold_dirs)
        return cls(methods, plans, spec, dataset_json, device, model_info=info, **options)

    def use_box_prompts(self, box_prompts: BoxPrompts | None) -> None:
        """Predict folders with per case, slice and class box prompts (:mod:`samdg.inference.box_prompts`: a boxes
        file or the reference labels) instead of the automatic mode (None: back to it). A method without a
        box-prompted mode is a SamdgError."""
        if box_prompts is not None:
            for method in self.methods:
                check_box_prompts(method, getattr(method, "method_name", type(method).__name__))
        self.box_prompts = box_prompts

    # ------------------------------------------------------------------------------------------ arrays
    def predict_preprocessed(self, data: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """(C,S,H,W) preprocessed case -> (K,S,H,W) float32 per-class probabilities, ``batch_size`` slices a pass.
        ``boxes``: (S,K,4) box prompts in slice pixels (NaN = no box: class empty in that slice), or None."""
        return self.slice_predictor.predict_volume(data, self.plans.channel_mapping, self.batch_size, boxes=boxes)

    def preprocess(self, image_paths: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Channel files of one case -> (data (C,S,H,W), properties), exactly as for training."""
        image, geometry = read_case([str(p) for p in image_paths])
        _check_finite(image, image_paths)
        data, _, properties = preprocess_case(image, geometry, self.plans)
        return data, properties

    def predict_case(self, image_paths: Sequence[str | Path], return_probabilities: bool = False
                     ) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
        """Channel files of one case -> (label map (Z,Y,X) int64, probabilities (K,Z,Y,X) float32 or None, Geometry).

        Arrays are in samdg's canonical orientation (see :mod:`samdg.imageio`); ``samdg.imageio.write_label(label,
        geometry, path)`` writes the label map with the input's exact geometry.
        """
        data, properties = self.preprocess(image_paths)
        original = probabilities_to_original(self.predict_preprocessed(data), properties, self.plans)
        label_map = label_map_from_volume(original, self.label_spec)
        return label_map, (original if return_probabilities else None), Geometry.from_dict(properties["geometry"])

    # ------------------------------------------------------------------------------------------ files
    def run_info(self) -> dict[str, Any]:
        """What identifies this prediction run (written to ``prediction.json`` in the output folder)."""
        prompt = {"prompt": self.box_prompts.identity} if self.box_prompts is not None else {}
        return {**self.model_info, "mirroring": self.mirroring, "variant": self.plans.sam.variant,
                "classes": list(self.label_spec.names), **prompt}

    def _record_inputs(self, case_id: str, paths: list[str]) -> list[str]:
        """The files a case's outputs depend on: its images, and the file its box prompts come from."""
        return paths + (self.box_prompts.inputs(case_id) if self.box_prompts is not None else [])

    def _prepare(self, case_id: str, image_paths: Sequence[str]) -> tuple[np.ndarray, dict[str, Any], Any]:
        """(data, properties, box prompts (S,K,4) or None) of one case."""
        data, properties = self.preprocess(image_paths)
        boxes = self.box_prompts.boxes(case_id, properties, self.plans) if self.box_prompts is not None else None
        return data, properties, boxes

    def _write_model_files(self, output_dir: Path) -> None:
        """plans.json and dataset.json of the model, so the folder evaluates on its own."""
        self.plans.save(output_dir / "plans.json")
        if self.dataset_json is not None:
            atomic_write_json(output_dir / "dataset.json", self.dataset_json)

    def format_warning(self, inputs: Sequence[str | Path]) -> str | None:
        """One line when inputs are 2D images for a model trained on 3D volumes, or the other way round (the model
        still runs, on data unlike anything it saw); None when every input matches the training data."""
        differing = [Path(p) for p in inputs if (file_ending_of(p) in ENDINGS_2D) != self.plans.is_2d]
        if not differing:
            return None
        ending = file_ending_of(differing[0])
        trained_ending = (self.dataset_json or {}).get("file_ending", "")
        dimensions = "2D" if self.plans.is_2d else "3D"
        trained = " ".join(filter(None, [dimensions, trained_ending, "/".join(self.plans.modalities)]))
        others = f" (and {len(differing) - 1} other input(s))" if len(differing) > 1 else ""
        return (f"{differing[0]}{others}: a {'2D' if ending in ENDINGS_2D else '3D'} {ending} image, but the model was "
                f"trained on {trained} images; predicting anyway, the result may be meaningless")

    def _read_ahead(self, todo: list[tuple[str, list[str]]]) -> Iterator[tuple[str, Any, BaseException | None]]:
        """Yield (case id, (data, properties) or None, error or None); the next case is read and preprocessed in a
        thread while the caller works on the current one (at most two cases in memory)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="samdg-preprocess") as pool:
            pending = pool.submit(self._prepare, *todo[0]) if todo else None
            for index, (case_id, _) in enumerate(todo):
                future = pending
                try:
                    prepared, error = future.result(), None
                except Exception as failure:  # noqa: BLE001 - any reader/preprocessing failure is reported per case
                    prepared, error = None, failure
                pending = pool.submit(self._prepare, *todo[index + 1]) if index + 1 < len(todo) else None
                yield case_id, prepared, error

    def predict_cases(self, cases: dict[str, Sequence[str | Path]], output_dir: str | Path, overwrite: bool = False,
                      save_probabilities: bool = False) -> PredictionReport:
        """Predict ``{case id: channel files}`` into ``output_dir`` as ``<case><file ending of its input>``.

        The folder is locked for the run (a second run into it is refused, naming this one) and gets plans.json,
        dataset.json and prediction.json (:mod:`samdg.inference.record`). A case is skipped only when
        prediction.json proves it finished by this model from the same input files with its outputs unchanged
        (``<case>.npz`` too when ``save_probabilities``); the others are predicted. A file with an output name that
        prediction.json does not vouch for stops the run with a SamdgError naming it, before anything is written,
        unless ``overwrite`` (then every case is predicted again). A case that cannot be read or preprocessed is
        reported on stderr and in the returned report (its old outputs are removed); the others still finish. A
        full disk stops the run (:class:`samdg.utils.files.NoSpaceLeft`).

        Raises:
            SamdgError: ``output_dir`` lies in the raw data or in (or around) an input folder; another run holds
                it; it holds another model's predictions or foreign files (both unless ``overwrite``).
        """
        started = time.perf_counter()
        output_dir = Path(output_dir)
        case_files = {case_id: [str(p) for p in cases[case_id]] for case_id in sorted(cases)}
        input_folders = tuple(sorted({Path(p).parent for paths in case_files.values() for p in paths}))
        check_output_folder(output_dir, "-o", input_folders)
        if self.box_prompts is not None:
            self.box_prompts.check_cases(list(case_files), case_files)
        with folder_lock(output_dir):
            remove_stale_temp_files(output_dir)
            settings = {"device": str(self.device), "batch_size": self.batch_size, "precision": self.precision}
            record = PredictionRecord(output_dir, {**self.run_info(), **settings}, overwrite)
            report = PredictionReport(output_dir)
            outputs = {case_id: self._output_files(output_dir, case_id, paths[0], save_probabilities)
                       for case_id, paths in case_files.items()}
            todo, foreign = [], []
            for case_id, paths in case_files.items():
                state, blocking = record.state_of(case_id, self._record_inputs(case_id, paths), outputs[case_id])
                if state == DONE:
                    report.skipped.append(case_id)
                    continue
                if blocking is not None:
                    foreign.append(blocking)
                todo.append((case_id, paths))
            if foreign and not overwrite:
                others = f" (and {len(foreign) - 1} other file(s))" if len(foreign) > 1 else ""
                raise SamdgError(f"{foreign[0]}{others}: has the name of an output but was not written by this model "
                                 f"from these inputs (not in {RUN_INFO_FILE}, or changed since); move it away, choose "
                                 "another -o, or pass --overwrite to replace it")
            warning = self.format_warning([paths[0] for _, paths in todo])
            if warning:
                print(f"samdg: warning: {warning}", file=sys.stderr)
            self._write_model_files(output_dir)
            record.keep_only(set(case_files), output_dir)
            record.save()
            self._predict_todo(todo, outputs, record, report)
        report.seconds = time.perf_counter() - started
        return report

    def _predict_todo(self, todo: list[tuple[str, list[str]]], outputs: dict[str, list[Path]],
                      record: PredictionRecord, report: PredictionReport) -> None:
        """Predict and write the cases of ``todo``, entering each in ``record`` as it is finished."""
        files = dict(todo)
        bar = tqdm(total=len(todo), desc="predicting", unit="case", file=sys.stderr, disable=not self.progress)
        try:
            for case_id, prepared, error in self._read_ahead(todo):
                bar.set_postfix_str(case_id)
                paths = files[case_id]
                if error is None:
                    data, properties, boxes = prepared
                    label_file, *npz_file = outputs[case_id]
                    record.writing(case_id, self._record_inputs(case_id, paths))
                    try:
                        probabilities = self.predict_preprocessed(data, boxes)
                        export_prediction(probabilities, properties, self.plans, self.label_spec, label_file,
                                          npz_file[0] if npz_file else None)
                    except NoSpaceLeft:
                        raise  # every further case would fail the same way: stop, finished cases are kept
                    except SamdgError as failure:
                        report.failed[case_id] = str(failure)
                    else:
                        record.done(case_id, self._record_inputs(case_id, paths), outputs[case_id])
                        report.predicted.append(case_id)
                else:
                    reason = str(error) if isinstance(error, SamdgError) else f"{type(error).__name__}: {error}"
                    report.failed[case_id] = f"cannot be read or preprocessed: {reason}"
                if case_id in report.failed:  # its old outputs no longer match its inputs
                    for path in outputs[case_id]:
                        path.unlink(missing_ok=True)
                    record.cases.pop(case_id, None)
                    record.save()
                    tqdm.write(f"samdg: case {case_id} failed ({report.failed[case_id]}); continuing", file=sys.stderr)
                bar.update()
        finally:
            bar.close()

    def predict_folder(self, input_dir: str | Path, output_dir: str | Path, overwrite: bool = False,
                       save_probabilities: bool = False, file_ending: str | None = None) -> PredictionReport:
        """Predict every case of a folder of raw images named like training images (``{case}_{XXXX}{ending}``)."""
        input_dir = Path(input_dir)
        ending = file_ending or self._input_ending(input_dir)
        cases = list_image_folder(input_dir, ending, self.plans.num_channels)
        if not cases:
            raise SamdgError(f"{input_dir}: no images named {{case}}_0000{ending}")
        return self.predict_cases(cases, output_dir, overwrite, save_probabilities)

    def _input_ending(self, input_dir: Path) -> str:
        """The dataset's file ending when the folder uses it, else the one supported ending its _0000 files use."""
        if not input_dir.is_dir():
            raise SamdgError(f"{input_dir}: input folder not found")
        preferred = (self.dataset_json or {}).get("file_ending")
        names = [p.name for p in input_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
        found = {e for name in names for e in SUPPORTED_ENDINGS if name.lower().endswith("_0000" + e)}
        if preferred in found:
            return preferred
        if len(found) == 1:
            return found.pop()
        if not found:
            raise SamdgError(f"{input_dir}: no image files named {{case}}_0000<ending> with a supported ending "
                             f"({', '.join(SUPPORTED_ENDINGS)})")
        raise SamdgError(f"{input_dir}: images with several endings ({', '.join(sorted(found))}); pass --file-ending")

    @staticmethod
    def _output_files(output_dir: Path, case_id: str, first_image: str | Path, save_probabilities: bool) -> list[Path]:
        """``[<case><ending of its input>]``, plus ``<case>.npz`` when ``save_probabilities``."""
        ending = file_ending_of(first_image)
        return [output_dir / f"{case_id}{ending}", *([output_dir / f"{case_id}.npz"] if save_probabilities else [])]

"""The nnU-Net side of the nnU-Net baseline: ``python -m samdg.baselines.nnunet_worker STEP REQUEST.json``.

samdg runs nnU-Net in this separate process (see :mod:`samdg.baselines.nnunet`) so that nnU-Net's
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` variables, its global torch settings and its worker
processes never leak into the samdg process. Steps, each driven by the JSON request:

- ``plan``: fingerprint, plan and preprocess one configuration (``dataset_id``, ``configuration``,
  ``num_processes``);
- ``train``: train one fold with ``nnUNetTrainer_samdg``, continuing from ``checkpoint_latest.pth`` when there is
  one (``dataset_name``, ``configuration``, ``fold``, ``device``, ``final_validation``);
- ``predict``: predict cases one by one (``model_dir``, ``fold``, ``device``, ``mirroring``, ``jobs``: a list of
  ``[case id, [image files], output file without ending]``) and write ``{"failed": {case: reason}}`` to
  ``result_file``.

A failure prints one line starting with :data:`ERROR_PREFIX` and exits with status 1.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

ERROR_PREFIX = "samdg-nnunet-error: "
TRAINER = "nnUNetTrainer_samdg"
PLANS = "nnUNetPlans"


def plan(request: dict) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    dataset_id, configuration, processes = request["dataset_id"], request["configuration"], request["num_processes"]
    extract_fingerprint_dataset(dataset_id, num_processes=processes, clean=True, show_progress_bar=False)
    plans, _ = plan_experiment_dataset(dataset_id)
    if configuration not in plans["configurations"]:
        raise ValueError(f"nnU-Net planned no '{configuration}' configuration for this dataset (it planned "
                         f"{', '.join(plans['configurations'])})")
    preprocess_dataset(dataset_id, PLANS, (configuration,), (processes,), show_progress_bar=False)


def train(request: dict) -> None:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    from samdg.baselines.nnunet_trainers.nnUNetTrainer_samdg import nnUNetTrainer_samdg

    preprocessed = Path(str(nnUNet_preprocessed)) / request["dataset_name"]
    plans = load_json(str(preprocessed / f"{PLANS}.json"))
    plans["continue_training"] = True
    fold = request["fold"]
    trainer = nnUNetTrainer_samdg(plans, request["configuration"], fold if fold == "all" else int(fold),
                                  load_json(str(preprocessed / "dataset.json")), torch.device(request["device"]))
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    if latest.is_file():
        trainer.load_checkpoint(str(latest))
    trainer.run_training()
    if request["final_validation"]:
        trainer.perform_actual_validation(False)


def predict(request: dict) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    fold = request["fold"]
    predictor = nnUNetPredictor(use_mirroring=request["mirroring"], device=torch.device(request["device"]),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(request["model_dir"], (fold if fold == "all" else int(fold),),
                                                   "checkpoint_final.pth")
    failed = {}
    for case_id, images, output in request["jobs"]:
        try:
            predictor.predict_from_files_sequential([images], [output], save_probabilities=False, overwrite=True)
        except Exception as error:  # one unreadable case must not stop the others; the report names it
            failed[case_id] = f"{type(error).__name__}: {error}".splitlines()[0]
    Path(request["result_file"]).write_text(json.dumps({"failed": failed}), encoding="utf-8")


STEPS = {"plan": plan, "train": train, "predict": predict}


def main(argv: list[str]) -> int:
    step, request_file = argv
    try:
        STEPS[step](json.loads(Path(request_file).read_text(encoding="utf-8")))
    except Exception as error:
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
        print(f"{ERROR_PREFIX}{message}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

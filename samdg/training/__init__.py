"""Training: a generic loop around the registered methods (see documentation/training.md).

``train(TrainingArgs(...))`` is what ``samdg_train`` runs; ``results_fold_dir`` says where a model lives and
``load_trained_method`` rebuilds it from there for prediction.
"""

from samdg.training.checkpoint import load_trained_method
from samdg.training.config import TrainingArgs
from samdg.training.results import results_fold_dir
from samdg.training.trainer import Trainer, train

__all__ = ["Trainer", "TrainingArgs", "load_trained_method", "results_fold_dir", "train"]

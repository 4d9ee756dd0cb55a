"""Prediction: a loaded model (:class:`Predictor`) turns raw cases into label files with the input's geometry.

``model_selection`` finds the trained model a command line means; ``slices`` runs batched slices through the
model(s); ``export`` inverts the preprocessing and writes the files.
"""

from samdg.inference.model_selection import DEFAULT_CHECKPOINT, TrainedModel, list_trained_models, select_model
from samdg.inference.predictor import PredictionReport, Predictor

__all__ = ["DEFAULT_CHECKPOINT", "PredictionReport", "Predictor", "TrainedModel", "list_trained_models",
           "select_model"]

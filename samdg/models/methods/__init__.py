"""Segmentation methods built on a SAM backbone, behind one registry (see ``registry``, ``base`` and ``settings``).

Importing this package registers every method shipped with samdg.
"""

from samdg.models.methods import dapsam, dbsam, desam, espmedsam, sam  # noqa: F401  (each module registers its method)
from samdg.models.methods.base import FrozenSamMethod, SegmentationMethod
from samdg.models.methods.optimization import OptimizerSetup
from samdg.models.methods.registry import (
    build_method,
    default_settings,
    get_method,
    list_methods,
    register_method,
    resolve_settings,
    settings_classes,
)
from samdg.models.methods.settings import MethodSettings, SamMethodSettings

__all__ = [
    "FrozenSamMethod",
    "MethodSettings",
    "OptimizerSetup",
    "SamMethodSettings",
    "SegmentationMethod",
    "build_method",
    "default_settings",
    "get_method",
    "list_methods",
    "register_method",
    "resolve_settings",
    "settings_classes",
]

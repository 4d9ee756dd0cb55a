"""Segmentation methods built on a SAM backbone, behind one registry (see ``registry`` and ``base``).

Importing this package registers every method shipped with samdg.
"""

from samdg.models.methods.base import SegmentationMethod
from samdg.models.methods.registry import (
    build_method,
    default_settings,
    get_method,
    list_methods,
    register_method,
    resolve_settings,
)
from samdg.models.methods import dapsam, desam, sam  # noqa: F401  (each module registers its method)

__all__ = [
    "SegmentationMethod",
    "build_method",
    "default_settings",
    "get_method",
    "list_methods",
    "register_method",
    "resolve_settings",
]

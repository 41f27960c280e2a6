"""The scBiGNN model class, its query path and its annotation result."""

from ._model import SCBiGNN
from ._result import AnnotationResult

__all__ = ["AnnotationResult", "SCBiGNN"]

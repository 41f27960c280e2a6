"""The scBiGNN model class and its AnnData-free helpers."""

from ._calibration import expected_calibration_error, fit_temperature
from ._graph import (
    extend_graph,
    homophily,
    knn_graph,
    novelty,
    query_shift,
    row_normalized_adjacency,
)
from ._model import SCBiGNN
from ._preprocessing import check_expression, log_normalize, select_genes
from ._training import class_weights

__all__ = [
    "expected_calibration_error",
    "extend_graph",
    "fit_temperature",
    "SCBiGNN",
    "check_expression",
    "class_weights",
    "homophily",
    "knn_graph",
    "log_normalize",
    "novelty",
    "query_shift",
    "row_normalized_adjacency",
    "select_genes",
]

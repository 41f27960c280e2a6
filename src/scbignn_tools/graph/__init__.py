"""Paper section 3.4: the kNN graph of the cells, and the frozen reference graph of a model."""

from ._knn import (
    EXACT_MAX_CELLS,
    expression_basis,
    homophily,
    knn_graph,
    nearest_cells,
    project,
    row_normalized_adjacency,
)
from ._reference import (
    ReferenceGraph,
    extend_graph,
    graph_coords,
    match_cells,
    neighbour_distances,
    novelty,
    query_shift,
)

__all__ = [
    "EXACT_MAX_CELLS",
    "ReferenceGraph",
    "expression_basis",
    "extend_graph",
    "graph_coords",
    "homophily",
    "knn_graph",
    "match_cells",
    "nearest_cells",
    "neighbour_distances",
    "novelty",
    "project",
    "query_shift",
    "row_normalized_adjacency",
]

"""The torch modules of scBiGNN: q_phi, p_theta and their container."""

from ._cell_gnn import CellLevelGNN
from ._gene_gnn import GeneLevelGNN
from ._module import SCBiGNNModule

__all__ = ["CellLevelGNN", "GeneLevelGNN", "SCBiGNNModule"]

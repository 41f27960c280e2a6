"""The torch modules of scBiGNN (q_phi, p_theta), their losses, inference and attention importance."""

from ._cell_gnn import CellLevelGNN
from ._gene_gnn import GeneLevelGNN
from ._importance import AttentionAccumulator, importance_table
from ._inference import p_inference, q_inference, softmax
from ._losses import (
    PseudoLabels,
    class_weights,
    confident_weights,
    draw_targets,
)
from ._module import SCBiGNNModule

__all__ = [
    "AttentionAccumulator",
    "CellLevelGNN",
    "GeneLevelGNN",
    "PseudoLabels",
    "SCBiGNNModule",
    "class_weights",
    "confident_weights",
    "draw_targets",
    "importance_table",
    "p_inference",
    "q_inference",
    "softmax",
]

"""Graph layers of scBiGNN, in plain torch."""

from ._cell_conv import MeanAggregationConv
from ._dropout import Dropout, keep_mask, keep_scale, quantized_p
from ._gene_attention import GeneSelfAttention, mlp

__all__ = [
    "Dropout",
    "GeneSelfAttention",
    "MeanAggregationConv",
    "keep_mask",
    "keep_scale",
    "mlp",
    "quantized_p",
]

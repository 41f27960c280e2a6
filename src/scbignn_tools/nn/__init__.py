"""Graph layers of scBiGNN, in plain torch."""

from ._cell_conv import MeanAggregationConv
from ._gene_attention import GeneSelfAttention, mlp

__all__ = ["GeneSelfAttention", "MeanAggregationConv", "mlp"]

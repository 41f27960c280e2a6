from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.graph import row_normalized_adjacency
from scbignn_tools.nn import MeanAggregationConv


def test_mean_aggregation_matches_dense_equation():
    torch.manual_seed(0)
    adj = sparse.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=np.float32))
    z = torch.randn(3, 4)
    layer = MeanAggregationConv(4, 5, n_hidden=6)
    a = torch.tensor(adj.toarray())
    expected = layer.mlp((a / a.sum(1, keepdim=True)) @ layer.lin(z))  # D^-1 A Z W, then MLP
    torch.testing.assert_close(layer(z, row_normalized_adjacency(adj)), expected)
    assert repr(layer) == "MeanAggregationConv(4, 5)"

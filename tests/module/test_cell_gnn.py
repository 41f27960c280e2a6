"""p_theta on sparse standardised expression gives what it gives on the dense matrix."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.data import StandardizedExpression
from scbignn_tools.graph import knn_graph, row_normalized_adjacency
from scbignn_tools.module import CellLevelGNN


def test_sparse_and_dense_inputs_agree_in_evaluation_and_train_alike():
    rng = np.random.default_rng(0)
    x = sparse.random(80, 40, density=0.15, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.log1p(x.data * 20)
    mean = torch.as_tensor(x.toarray().mean(0))
    std = torch.as_tensor(x.toarray().std(0)) + 0.05
    expr = StandardizedExpression.from_normalized(x, mean, std)
    dense = expr.dense()
    h = torch.randn(80, 8)
    adj = row_normalized_adjacency(knn_graph(h.numpy(), 5, "exact", 0))
    torch.manual_seed(0)
    gnn = CellLevelGNN(40, 8, 3, n_features=8, n_hidden=8).eval()
    logits_sparse, h_sparse = gnn(expr, h, adj)
    logits_dense, h_dense = gnn(dense, h, adj)
    torch.testing.assert_close(logits_sparse, logits_dense, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_sparse, h_dense, rtol=1e-4, atol=1e-5)
    # in training, dropout falls on measured values only; gradients reach the first layer
    gnn.train()
    logits, _ = gnn(expr, h, adj)
    logits.sum().backward()
    first = gnn.expression_mlp[1][0]
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert not torch.allclose(gnn(expr, h, adj)[0], logits)  # a new dropout draw

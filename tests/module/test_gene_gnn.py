from __future__ import annotations

import torch

from scbignn_tools.module import CellLevelGNN, GeneLevelGNN


def test_h_is_invariant_to_gene_order_and_padding():
    torch.manual_seed(0)
    q = GeneLevelGNN(
        n_genes=20, n_labels=3, n_features=8, n_hidden=8, n_layers=2, heads=2, linear_path=False
    ).eval()
    genes = torch.tensor([[3, 7, 11, 2, 0, 0]])
    values = torch.tensor([[1.0, 2.0, 0.5, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    logits, h = q(genes, values, mask)
    perm = torch.tensor([2, 0, 3, 1, 4, 5])
    logits2, h2 = q(genes[:, perm], values[:, perm], mask[:, perm])
    torch.testing.assert_close(h, h2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, logits2, atol=1e-5, rtol=1e-5)
    # dropping the padding entirely gives the same cell
    _, h3 = q(genes[:, :4], values[:, :4], mask[:, :4])
    torch.testing.assert_close(h, h3, atol=1e-5, rtol=1e-5)


def test_cell_without_genes_gives_finite_output():
    q = GeneLevelGNN(n_genes=5, n_labels=2, n_features=4, n_hidden=4)
    mask = torch.tensor([[True, False, False], [False] * 3])
    logits, h = q(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), mask, torch.zeros(2, 5))
    assert torch.isfinite(logits).all() and torch.isfinite(h).all()


def test_cell_gnn_jumping_knowledge_width():
    p = CellLevelGNN(n_genes=10, n_h=8, n_labels=3, n_features=6, n_hidden=5, n_layers=3)
    adj = torch.eye(4).to_sparse()
    logits, h_prime = p(torch.randn(4, 10), torch.randn(4, 8), adj)
    assert logits.shape == (4, 3)
    assert h_prime.shape == (4, 8 + 6 + 3 * 6)


def test_linear_path_needs_expression():
    import pytest

    q = GeneLevelGNN(n_genes=5, n_labels=2, n_features=4, n_hidden=4)
    with pytest.raises(ValueError, match="linear path"):
        q(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))

from __future__ import annotations

import torch
from torch import nn

from ._dropout import Dropout
from ._gene_attention import mlp, reset_linear_layers


class MeanAggregationConv(nn.Module):
    r"""Cell-cell graph layer of the cell-level GNN (scBiGNN Eq. 8).

    .. math::
        \mathbf{Z}' = \mathrm{MLP}\big(\mathbf{D}^{-1}\mathbf{A}\,\mathbf{Z}\mathbf{W}\big),
        \qquad \mathbf{D} = \mathrm{diag}(\mathbf{A}\mathbf{1}_N),

    i.e. every cell takes the mean of its neighbours' transformed features. The row
    normalisation :math:`\mathbf{D}^{-1}\mathbf{A}` is done once, by
    :func:`scbignn_tools.graph.row_normalized_adjacency`, and passed in as ``adj``.

    Shapes: ``z`` is ``(N, in_features)``, ``adj`` a sparse ``(N, N)`` tensor; output
    ``(N, out_features)``.

    Parameters
    ----------
    in_features
        Size of the input cell features.
    out_features
        Size of the output cell features.
    n_hidden
        Hidden size of :math:`\mathrm{MLP}_c`.
    dropout
        Dropout on the input features during training.
    """

    def __init__(
        self, in_features: int, out_features: int, n_hidden: int = 32, dropout: float = 0.0
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lin = nn.Linear(in_features, out_features, bias=False)
        self.mlp = mlp(out_features, n_hidden, out_features)
        self.dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all learnable parameters."""
        reset_linear_layers(self)

    def forward(self, z: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Apply Eq. 8 with the row-normalised adjacency ``adj``."""
        return self.mlp(torch.sparse.mm(adj, self.lin(self.dropout(z))))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_features}, {self.out_features})"

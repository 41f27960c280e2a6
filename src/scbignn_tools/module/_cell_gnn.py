from __future__ import annotations

import torch
from torch import nn

from scbignn_tools.data import StandardizedExpression
from scbignn_tools.nn import Dropout, MeanAggregationConv, mlp


class CellLevelGNN(nn.Module):
    r"""p_theta: the cell-level GNN (scBiGNN Eqs. 2 and 8, with jumping knowledge).

    The input of cell :math:`i` is :math:`\mathbf{z}_i = [\mathbf{h}_i, \mathrm{MLP}(\tilde{\mathbf{x}}_i)]`
    where :math:`\mathbf{h}_i` comes from q_phi. ``n_layers``
    :class:`~scbignn_tools.nn.MeanAggregationConv` layers run on a kNN graph of the cells (of the
    :math:`\mathbf{h}_i` in the paper), and :math:`\mathbf{h}'_i = [\mathbf{z}^{(0)}_i, \dots, \mathbf{z}^{(L)}_i]`
    (jumping knowledge) is classified by an MLP.

    Shapes: ``x`` is ``(N, n_genes)`` standardised expression, a
    :class:`~scbignn_tools.data.StandardizedExpression` (its first layer then runs on the
    sparse values, and dropout drops measured values only) or a dense tensor; ``h``
    ``(N, n_h)``, ``adj`` a sparse row-normalised ``(N, N)`` tensor; logits ``(N, n_labels)``, ``h_prime``
    ``(N, n_h + n_features * (n_layers + 1))``.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    n_h
        Size of q_phi's cell representation.
    n_labels
        Number of cell types ``C``.
    n_features
        Output size of the expression MLP and of each graph layer.
    n_hidden
        Hidden size of every MLP.
    n_layers
        Number of graph layers.
    dropout
        Dropout on the expression and on each layer's input during training.
    """

    def __init__(
        self,
        n_genes: int,
        n_h: int,
        n_labels: int,
        n_features: int = 32,
        n_hidden: int = 32,
        n_layers: int = 3,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.expression_mlp = nn.Sequential(Dropout(dropout), mlp(n_genes, n_hidden, n_features))
        dims = [n_h + n_features] + [n_features] * n_layers
        self.layers = nn.ModuleList(
            MeanAggregationConv(dims[i], dims[i + 1], n_hidden, dropout) for i in range(n_layers)
        )
        self.classifier = mlp(sum(dims), n_hidden, n_labels)

    def forward(
        self, x: StandardizedExpression | torch.Tensor, h: torch.Tensor, adj: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of p_theta(y | X) (Eq. 2) and the representations ``h_prime``."""
        z = torch.cat([h, self.embed_expression(x)], dim=1)
        zs = [z]
        for layer in self.layers:
            zs.append(layer(zs[-1], adj))  # Eq. 8
        h_prime = torch.cat(zs, dim=1)  # jumping knowledge
        return self.classifier(h_prime), h_prime

    def embed_expression(self, x: StandardizedExpression | torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{MLP}(\tilde{\mathbf{x}}_i)`, after dropout, for every cell."""
        if isinstance(x, torch.Tensor):
            return self.expression_mlp(x)
        dropout, (first, *rest) = self.expression_mlp
        out = x.dropout(dropout.p, self.training).linear(first)
        for layer in rest:
            out = layer(out)
        return out

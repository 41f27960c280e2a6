from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scbignn_tools.data import StandardizedExpression

from ._cell_gnn import CellLevelGNN
from ._gene_gnn import GeneLevelGNN


class SCBiGNNModule(nn.Module):
    """The two GNNs of scBiGNN and the statistics that map expression to their inputs.

    Plain torch: it knows nothing of AnnData, and owns the loss of both GNNs (:meth:`loss`,
    Eqs. 6, 7 and 9). The buffers ``gene_mean`` and ``gene_std`` hold the
    reference's per-gene statistics that standardise p_theta's expression input, so that a saved
    model maps new data the same way.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    n_labels
        Number of cell types ``C``.
    n_features
        Feature size of both GNNs (the paper uses 32).
    n_hidden
        Hidden size of every MLP (the paper uses 32).
    gene_layers
        Attention layers of q_phi.
    gene_heads
        Attention heads per layer of q_phi.
    readout
        Read-out of q_phi, ``"mean"`` or ``"learnable"``.
    cell_layers
        Graph layers of p_theta.
    dropout_q
        Dropout in q_phi.
    dropout_p
        Dropout in p_theta.
    linear_path
        Give q_phi a linear path from the standardised expression (see
        :class:`~scbignn_tools.module.GeneLevelGNN`).
    """

    def __init__(
        self,
        n_genes: int,
        n_labels: int,
        n_features: int = 32,
        n_hidden: int = 32,
        gene_layers: int = 2,
        gene_heads: int = 1,
        readout: str = "learnable",
        cell_layers: int = 3,
        dropout_q: float = 0.5,
        dropout_p: float = 0.5,
        linear_path: bool = True,
    ):
        super().__init__()
        self.n_genes = n_genes
        self.n_labels = n_labels
        self.n_h = n_features  # size of q_phi's cell representation h
        self.q = GeneLevelGNN(
            n_genes,
            n_labels,
            n_features,
            n_hidden,
            gene_layers,
            gene_heads,
            readout,
            True,
            dropout_q,
            linear_path,
        )
        self.p = CellLevelGNN(
            n_genes, n_features, n_labels, n_features, n_hidden, cell_layers, dropout_p
        )
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_std", torch.ones(n_genes))

    @property
    def device(self) -> torch.device:
        """Device of the parameters (scvi-tools' models ask their module for it)."""
        return self.gene_mean.device

    def on_load(self, model, **kwargs) -> None:
        """Hook scvi-tools calls before loading a state dict; nothing to do here."""

    @staticmethod
    def loss(
        logits: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        class_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""The loss of q_phi (Eqs. 6 and 7) or p_theta (Eq. 9) on one batch of cells.

        :math:`-\sum_i w_i \sum_c t_{ic} \log q(c \mid x_i) / \sum_i w_i`, where the targets
        :math:`t` are true labels or pseudo-labels (:func:`~scbignn_tools.module.draw_targets`)
        and the weights :math:`w` are ``beta`` for labelled cells (Eq. 7) or 0/1 for confident
        pseudo-labels (:func:`~scbignn_tools.module.confident_weights`). With ``class_weight``
        :math:`v`, cell :math:`i` also weighs :math:`\sum_c t_{ic} v_c`.

        Shapes: ``logits`` and ``targets`` ``(B, C)``, ``weights`` ``(B,)``, ``class_weight``
        ``(C,)``; returns a scalar.
        """
        nll = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
        if class_weight is not None:
            weights = weights * (targets @ class_weight)
        return (weights * nll).sum() / weights.sum()

    def expression(self, x, clip: float = 10.0) -> StandardizedExpression:
        """Standardised expression of normalised ``x`` (scipy sparse ``(N, T)``), kept sparse."""
        return StandardizedExpression.from_normalized(x, self.gene_mean, self.gene_std, clip)

    def standardize(self, x: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
        """Scale normalised expression per gene with the reference statistics, as ``sc.pp.scale``."""
        return ((x - self.gene_mean) / self.gene_std).clamp(-clip, clip)

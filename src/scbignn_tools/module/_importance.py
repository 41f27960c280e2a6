"""Gene importance from q_phi's attention (paper section 4.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


class AttentionAccumulator:
    r"""Running gene x gene average :math:`\tilde{\mathbf{A}}` of attention over heads, layers and cells.

    Called by :func:`~scbignn_tools.module.q_inference` for each batch; each gene pair
    is averaged over the attention matrices in which both genes appear.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    device
        Where the ``T x T`` sums are kept.
    """

    def __init__(self, n_genes: int, device: torch.device | str = "cpu"):
        self.n_genes = n_genes
        self.total = torch.zeros(n_genes * n_genes, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_genes * n_genes, dtype=torch.float64, device=device)

    def __call__(
        self, rows, genes: torch.Tensor, mask: torch.Tensor, attentions: list[torch.Tensor]
    ) -> None:
        """Add a batch: ``genes`` and ``mask`` are ``(B, L)``, each attention ``(B, heads, L, L)``."""
        pairs = mask[:, :, None] & mask[:, None, :]
        flat = (genes[:, :, None] * self.n_genes + genes[:, None, :])[pairs]
        for attn in attentions:
            self.total.index_add_(0, flat, attn.mean(dim=1)[pairs].double())
            self.count.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))

    def merge(self, other: AttentionAccumulator) -> AttentionAccumulator:
        """Add the sums of another accumulator (e.g. of another cell type) to this one."""
        self.total += other.total
        self.count += other.count
        return self

    def matrix(self) -> np.ndarray:
        r""":math:`\tilde{\mathbf{A}}`, ``T x T``; row ``i`` is the attention gene ``i`` pays."""
        mean = torch.where(self.count > 0, self.total / self.count.clamp(min=1), 0.0)
        return mean.view(self.n_genes, self.n_genes).cpu().numpy()

    def importance(self) -> np.ndarray:
        r"""Scores :math:`s_j = \sum_i \tilde A_{ij}`, the attention gene ``j`` receives."""
        return self.matrix().sum(axis=0)


def importance_table(
    accumulators: dict[str, AttentionAccumulator], genes: list[str]
) -> pd.DataFrame:
    """Genes x groups table of the importance scores of an accumulator per group of cells."""
    return pd.DataFrame(
        {k: a.importance() for k, a in accumulators.items()}, index=pd.Index(genes, name="gene")
    )

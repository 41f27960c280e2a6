"""Gene importance from q_phi's attention (paper section 4.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


class AttentionAccumulator:
    r"""Running gene x gene average :math:`\tilde{\mathbf{A}}` of attention over heads, layers and cells.

    Called by :func:`~scbignn_tools.module.q_inference` for each batch; each gene pair is
    averaged over the attention matrices in which both genes appear.

    Each batch costs one ``bincount`` of its ``B x L x L`` attention values (averaged over heads
    and summed over layers first, since every layer of a cell holds the same gene pairs) and one
    ``B x T`` matrix product for how often each pair appears. Sums are float32; the pair counts
    are exact up to 2^24 cells. Padding goes to an extra gene ``T`` that is dropped.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    device
        Where the ``(T + 1) x (T + 1)`` sums are kept.
    """

    def __init__(self, n_genes: int, device: torch.device | str = "cpu"):
        self.n_genes = n_genes
        self.n_layers = 0
        size = (n_genes + 1) ** 2
        self.total = torch.zeros(size, dtype=torch.float32, device=device)
        self.pairs = torch.zeros(size, dtype=torch.float32, device=device)

    def __call__(
        self, rows, genes: torch.Tensor, mask: torch.Tensor, attentions: list[torch.Tensor]
    ) -> None:
        """Add a batch: ``genes`` and ``mask`` are ``(B, L)``, each attention ``(B, heads, L, L)``."""
        if not attentions or not len(genes):
            return
        width = self.n_genes + 1
        padded = genes.masked_fill(~mask, self.n_genes).to(self.total.device)
        attn = torch.stack(attentions).mean(dim=2).sum(dim=0).to(self.total)  # (B, L, L)
        flat = (padded[:, :, None] * width + padded[:, None, :]).reshape(-1)
        self.total += torch.bincount(flat, weights=attn.reshape(-1), minlength=width * width)
        present = torch.zeros(len(padded), width, device=self.total.device)
        present.scatter_(1, padded, 1.0)
        self.pairs += (present.T @ present).reshape(-1)
        self.n_layers = len(attentions)

    def merge(self, other: AttentionAccumulator) -> AttentionAccumulator:
        """Add the sums of another accumulator (e.g. of another cell type) to this one."""
        self.total += other.total
        self.pairs += other.pairs
        self.n_layers = self.n_layers or other.n_layers
        return self

    def matrix(self) -> np.ndarray:
        r""":math:`\tilde{\mathbf{A}}`, ``T x T``; row ``i`` is the attention gene ``i`` pays."""
        width, t = self.n_genes + 1, self.n_genes
        total = self.total.view(width, width)[:t, :t].double()
        count = self.pairs.view(width, width)[:t, :t].double() * max(self.n_layers, 1)
        mean = torch.where(count > 0, total / count.clamp(min=1), 0.0)
        return mean.cpu().numpy()

    def importance(self) -> np.ndarray:
        r"""Scores :math:`s_j = \sum_i \tilde A_{ij}`, the attention gene ``j`` receives."""
        return self.matrix().sum(axis=0)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(n_genes={self.n_genes})"


def importance_table(
    accumulators: dict[str, AttentionAccumulator], genes: list[str]
) -> pd.DataFrame:
    """Genes x groups table of the importance scores of an accumulator per group of cells."""
    return pd.DataFrame(
        {k: a.importance() for k, a in accumulators.items()}, index=pd.Index(genes, name="gene")
    )

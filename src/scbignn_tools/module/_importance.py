"""Gene importance from q_phi's attention (paper section 4.5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


class AttentionAccumulator:
    r"""Running gene x gene average :math:`\tilde{\mathbf{A}}` of attention over heads, layers and cells.

    Called by :func:`~scbignn_tools.module.q_inference` for each batch; each gene pair is
    averaged over the attention matrices in which both genes appear.

    A batch's attention is averaged over heads and summed over layers (every layer of a cell
    holds the same gene pairs), and its ``B x L x L`` values are kept with their gene-pair
    indices until ``buffer_size`` values are waiting; then one ``bincount`` adds them to the
    float32 sums and another counts the pairs. Padding goes to an extra gene ``T`` that is
    dropped. Memory: ``2 (T + 1)^2`` float32 plus the buffer (12 bytes a value).

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    device
        Where the ``(T + 1) x (T + 1)`` sums are kept.
    buffer_size
        Attention values kept before they are added up.
    """

    def __init__(self, n_genes: int, device: torch.device | str = "cpu", buffer_size: int = 2**23):
        self.n_genes, self.buffer_size = n_genes, buffer_size
        self.n_layers = 0
        size = (n_genes + 1) ** 2
        self.total = torch.zeros(size, dtype=torch.float32, device=device)
        self.pairs = torch.zeros(size, dtype=torch.float32, device=device)
        self._flat: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._waiting = 0

    def __call__(
        self, rows, genes: torch.Tensor, mask: torch.Tensor, attentions: list[torch.Tensor]
    ) -> None:
        """Add a batch: ``genes`` and ``mask`` are ``(B, L)``, each attention ``(B, heads, L, L)``."""
        if not attentions or not len(genes):
            return
        self.add(genes, mask, torch.stack(attentions).mean(dim=2).sum(dim=0), len(attentions))

    def add(self, genes: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor, n_layers: int):
        """Add cells whose attention is already summed over layers, ``(B, L, L)``."""
        width = self.n_genes + 1
        padded = genes.masked_fill(~mask, self.n_genes).to(self.total.device)
        self._flat.append((padded[:, :, None] * width + padded[:, None, :]).reshape(-1))
        self._values.append(attention.reshape(-1).to(self.total))
        self._waiting += self._flat[-1].numel()
        self.n_layers = n_layers
        if self._waiting >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        """Add the waiting values to the sums."""
        if not self._flat:
            return
        flat, values = torch.cat(self._flat), torch.cat(self._values)
        n = self.total.numel()
        self.total += torch.bincount(flat, weights=values, minlength=n)
        self.pairs += torch.bincount(flat, minlength=n).to(self.pairs)
        self._flat, self._values, self._waiting = [], [], 0

    def merge(self, other: AttentionAccumulator) -> AttentionAccumulator:
        """Add the sums of another accumulator (e.g. of another cell type) to this one."""
        self.flush()
        other.flush()
        self.total += other.total
        self.pairs += other.pairs
        self.n_layers = self.n_layers or other.n_layers
        return self

    def matrix(self) -> np.ndarray:
        r""":math:`\tilde{\mathbf{A}}`, ``T x T``; row ``i`` is the attention gene ``i`` pays."""
        self.flush()
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

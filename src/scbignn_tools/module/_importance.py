"""Gene importance from q_phi's attention (paper section 4.5)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch
from scipy import sparse


class AttentionAccumulator:
    r"""Running gene x gene average :math:`\tilde{\mathbf{A}}` of attention over heads, layers and cells.

    Called by :func:`~scbignn_tools.module.q_inference` for each batch; each gene pair is
    averaged over the attention matrices in which both genes appear, separately for each group
    of cells (e.g. each predicted type) in one pass.

    A batch's attention is averaged over heads and summed over layers (every layer of a cell
    holds the same gene pairs); its ``B x L x L`` values are added to float32 sums with one
    ``index_add_`` (int32 indices; buffers kept between batches). On the CPU that add, which
    runs on one core, happens in a thread while the caller computes the next batch (batches are
    added in order, so the sums are those of a serial pass). The pairs are counted by a
    second ``index_add_`` or, with ``count_pairs=False``, once for all cells by
    :meth:`count_pairs` (a sparse product of the cells' binary gene sets, ``X_g^T X_g`` per
    group, in a thread pool as wide as torch's thread count; much cheaper). Padding goes to an
    extra gene ``T`` that is dropped. Memory: ``2 G (T + 1)^2`` float32 for ``G`` groups, plus
    two batches' ``B x L x L`` values and int32 indices until :meth:`release`.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    device
        Where the sums are kept.
    groups
        Names of the groups; cells are assigned to them by index (``codes``).
    count_pairs
        Count the gene pairs batch by batch; ``False`` leaves it to :meth:`count_pairs`.
    """

    def __init__(
        self,
        n_genes: int,
        device: torch.device | str = "cpu",
        groups: Sequence[str] = ("all",),
        count_pairs: bool = True,
    ):
        self.n_genes, self.groups = n_genes, list(groups)
        self._count_batches = count_pairs
        self.n_layers = 0
        self._buffers: dict[str, torch.Tensor] = {}  # reused between batches (_reused)
        self._slot = 0  # which of two sets of buffers the next batch takes
        self._pool: ThreadPoolExecutor | None = None  # adds batches to the sums on the CPU
        self._pending = None  # the batch being added
        size = (len(self.groups), (n_genes + 1) ** 2)
        self.total = torch.zeros(size, dtype=torch.float32, device=device)
        self.pairs = torch.zeros(size, dtype=torch.float32, device=device) if count_pairs else None

    def __call__(
        self,
        rows,
        genes: torch.Tensor,
        mask: torch.Tensor,
        attentions: list[torch.Tensor],
        codes: np.ndarray | None = None,
    ) -> None:
        """Add a batch: ``genes`` and ``mask`` are ``(B, L)``, each attention ``(B, heads, L, L)``.

        ``codes`` gives each cell's group (index into ``groups``; -1 leaves the cell out);
        ``None`` puts every cell in the first group.
        """
        if not attentions or not len(genes):
            return
        device = self.total.device
        width = self.n_genes + 1
        slot = self._slot = 1 - self._slot  # buffers of the batch before may still be added
        summed = self._layer_sum(attentions, slot).to(device, torch.float32)
        padded = genes.masked_fill(~mask, self.n_genes).to(device)
        base = padded
        if codes is not None:
            codes = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=device)
            keep = codes >= 0
            if not bool(keep.all()):
                codes, padded, summed = codes[keep], padded[keep], summed[keep]
            base = codes[:, None] * width + padded
        # one index per value, int32 while the sums allow: (group * width + i) * width + j
        dtype = torch.int32 if self.total.numel() < 2**31 else torch.int64
        b, n = padded.shape
        flat = self._reused(f"index{slot}", b * n * n, dtype).view(-1)
        torch.add(
            (base * width).to(dtype)[:, :, None],
            padded.to(dtype)[:, None, :],
            out=flat.view(b, n, n),
        )
        self.wait()
        if device.type == "cpu":  # one thread adds while the caller computes the next batch
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="attention-sums")
            self._pending = self._pool.submit(self._add, flat, summed.view(-1))
        else:
            self._add(flat, summed.view(-1))
        self.n_layers = len(attentions)

    def _add(self, index: torch.Tensor, values: torch.Tensor) -> None:
        self.total.view(-1).index_add_(0, index, values)
        if self._count_batches:
            self.pairs.view(-1).index_add_(0, index, torch.ones_like(values))

    def wait(self) -> None:
        """Wait until every batch given so far is in the sums (they are added in a thread)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _layer_sum(self, attentions: list[torch.Tensor], slot: int) -> torch.Tensor:
        """Attention averaged over heads and summed over layers, ``(B, L, L)``, in one buffer."""
        first, heads = attentions[0][:, 0], attentions[0].shape[1]
        summed = self._reused(f"sum{slot}", first.numel(), first.dtype, first.device)
        summed = summed.view(first.shape).copy_(first)
        for k, layer in enumerate(attentions):
            for head in range(heads):
                if k or head:
                    summed.add_(layer[:, head])
        return summed.div_(heads) if heads > 1 else summed

    def _reused(self, name: str, size: int, dtype: torch.dtype, device=None) -> torch.Tensor:
        """A buffer of at least ``size`` entries kept between batches (fresh pages cost more).

        On ``device`` (default: the sums'); :meth:`release` drops the buffers.
        """
        device = self.total.device if device is None else torch.device(device)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[name] = torch.empty(size, dtype=dtype, device=device)
        return buf[:size]

    def release(self) -> None:
        """Drop the buffers kept between batches (``B x L x L`` values and indices).

        Call it after the last batch when the accumulator is kept; :meth:`count_pairs` and
        :meth:`select` call it. Waits for the batches still being added, and ends their thread.
        """
        self.wait()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._buffers.clear()

    def count_pairs(self, genes: sparse.spmatrix, codes: np.ndarray | None = None) -> None:
        """Count, per group, the cells holding each gene pair, from their gene sets.

        ``genes`` is ``(N, T)``, non-zero where a cell has a gene (the cells' expression of
        the model genes, in the order the batches were given by their ``rows``); ``codes``
        assigns them to the groups as when the batches were added. Replaces any counts so far.
        """
        self.release()
        binary = sparse.csr_matrix(genes, dtype=np.float32, copy=True)
        binary.data[:] = 1.0
        codes = np.zeros(binary.shape[0], np.int64) if codes is None else np.asarray(codes)
        width, t = self.n_genes + 1, self.n_genes
        if self.pairs is None:
            self.pairs = torch.zeros_like(self.total)
        self.pairs.zero_()

        def product(g: int) -> np.ndarray:
            part = binary[np.flatnonzero(codes == g)]
            return (part.T @ part).toarray()

        # scipy's sparse product releases the GIL: a Python thread pool as wide as torch's
        workers = max(1, min(torch.get_num_threads(), len(self.groups)))
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(self.groups), workers):  # a few dense T x T at a time
                chunk = range(start, min(start + workers, len(self.groups)))
                for g, counts in zip(chunk, pool.map(product, chunk), strict=True):
                    counts = torch.as_tensor(counts, device=self.pairs.device)
                    self.pairs[g].view(width, width)[:t, :t] = counts

    def select(self, groups: Sequence[int], names: Sequence[str]) -> AttentionAccumulator:
        """A new accumulator of some of the groups, renamed ``names``: their sums, no counts.

        Count the pairs of the new grouping with :meth:`count_pairs`.
        """
        self.release()
        out = AttentionAccumulator(self.n_genes, self.total.device, names, count_pairs=False)
        out.total = self.total[torch.as_tensor(list(groups), dtype=torch.long)]  # a copy
        out.n_layers = self.n_layers
        return out

    def _mean(self, group: int | None) -> torch.Tensor:
        self.wait()
        if self.pairs is None:
            raise RuntimeError("Count the gene pairs first: call count_pairs(genes, codes).")
        width, t = self.n_genes + 1, self.n_genes
        total = self.total.sum(0) if group is None else self.total[group]
        pairs = self.pairs.sum(0) if group is None else self.pairs[group]
        total = total.view(width, width)[:t, :t]
        count = pairs.view(width, width)[:t, :t] * max(self.n_layers, 1)
        return torch.where(count > 0, total / count.clamp(min=1), 0.0)

    def matrix(self, group: int | None = 0) -> np.ndarray:
        r""":math:`\tilde{\mathbf{A}}` of a group (``None``: all groups), ``T x T``.

        Row ``i`` is the attention gene ``i`` pays.
        """
        return self._mean(group).cpu().numpy()

    def importance(self, group: int | None = 0) -> np.ndarray:
        r"""Scores :math:`s_j = \sum_i \tilde A_{ij}`, the attention gene ``j`` receives.

        For one group, or with ``group=None`` for all cells of all groups together.
        """
        return self._mean(group).sum(dim=0).cpu().numpy()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(n_genes={self.n_genes}, groups={len(self.groups)})"


def importance_table(accumulator: AttentionAccumulator, genes: list[str]) -> pd.DataFrame:
    """Genes x groups table of the importance scores of each group of an accumulator."""
    return pd.DataFrame(
        {name: accumulator.importance(i) for i, name in enumerate(accumulator.groups)},
        index=pd.Index(genes, name="gene"),
    )

"""Padded batches of each cell's non-zero genes for q_phi."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scipy import sparse


class GeneSets:
    """Each cell's non-zero genes and values, served as padded ``(B, L)`` batches with a mask.

    Parameters
    ----------
    X
        Normalised expression, cells x model genes (sparse); zeros are absent genes.
    """

    def __init__(self, X: sparse.spmatrix):
        X = sparse.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
        self.indptr, self.indices, self.data = X.indptr, X.indices.astype(np.int64), X.data
        self.lengths = np.diff(self.indptr)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(
        self,
        rows: np.ndarray,
        device: torch.device | str = "cpu",
        max_genes: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """``genes`` (long), ``values`` and ``mask`` tensors, each ``(len(rows), L)``.

        With ``max_genes`` and ``rng``, cells with more non-zero genes keep a random subset of
        ``max_genes`` of them (training-time subsampling, which bounds the quadratic cost of
        attention); otherwise every non-zero gene is kept.
        """
        full = self.lengths[rows]
        b = len(rows)
        row_of = np.repeat(np.arange(b), full)
        offset = np.arange(int(full.sum())) - np.repeat(np.cumsum(full) - full, full)
        src = np.repeat(self.indptr[rows], full) + offset
        if max_genes is not None and rng is not None and full.max(initial=0) > max_genes:
            # random rank of each gene within its cell; keep the lowest max_genes ranks
            keys = row_of + rng.random(len(src))
            order = np.argsort(keys, kind="stable")
            rank = np.empty_like(order)
            rank[order] = offset
            keep = rank < max_genes
            row_of, src = row_of[keep], src[keep]
            src = src[np.lexsort((src, row_of))]
            row_of = np.sort(row_of, kind="stable")
        lens = np.bincount(row_of, minlength=b)
        width = max(int(lens.max(initial=0)), 1)
        pos = np.arange(len(src)) - np.repeat(np.cumsum(lens) - lens, lens)
        genes = np.zeros((b, width), np.int64)
        values = np.zeros((b, width), np.float32)
        mask = np.zeros((b, width), bool)
        genes[row_of, pos] = self.indices[src]
        values[row_of, pos] = self.data[src]
        mask[row_of, pos] = True
        return tuple(torch.from_numpy(a).to(device) for a in (genes, values, mask))

    def sorted_batches(
        self, rows: np.ndarray, batch_size: int, max_values: int | None = None
    ) -> Iterator[np.ndarray]:
        """Positions into ``rows`` in batches of cells of similar length, for inference.

        The cells are sorted by length (stable) and cut into consecutive batches of at most
        ``batch_size`` cells and, with ``max_values``, at most ``max_values`` values
        ``B x L_max^2`` (the size of a batch's attention; at least one cell a batch).
        """
        order = np.argsort(self.lengths[rows], kind="stable")
        lengths = self.lengths[rows[order]]
        start = 0
        while start < len(order):
            end = min(start + batch_size, len(order))
            if max_values is not None:
                longest = np.maximum(lengths[start:end], 1).astype(np.int64)  # sorted: the last
                fits = np.arange(1, end - start + 1) * longest**2 <= max_values  # True, then False
                end = start + max(1, int(fits.sum()))
            yield order[start:end]
            start = end

    @staticmethod
    def n_batches(n_rows: int, batch_size: int, bucket: int = 32) -> int:
        """How many batches :meth:`batches` makes of ``n_rows`` cells, shuffled or not."""
        chunk = batch_size * bucket
        full, rest = divmod(n_rows, chunk)
        return full * bucket + -(-rest // batch_size)

    def batches(
        self,
        rows: np.ndarray,
        batch_size: int,
        rng: np.random.Generator | None = None,
        bucket: int = 32,
    ) -> Iterator[np.ndarray]:
        """Split ``rows`` into batches of similar length to limit padding.

        With ``rng`` the cells are shuffled, sorted by length only within chunks of ``bucket``
        batches, and the batches shuffled again, so class mixes stay random; without it the
        order is deterministic (for inference).
        """
        rows = np.asarray(rows)
        if rng is not None:
            rows = rng.permutation(rows)
        chunk = batch_size * bucket
        out = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            out.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        yield from out

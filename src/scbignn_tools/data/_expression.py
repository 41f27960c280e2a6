"""Standardised expression kept sparse: per-gene offsets plus a sparse matrix."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.nn import keep_scale


class _SparseTimesDense(torch.autograd.Function):
    """``S @ W`` for a fixed sparse ``S``; the gradient of ``W`` is ``S.T @ grad``."""

    @staticmethod
    def forward(ctx, weight, s, s_t):
        ctx.s_t = s_t
        return torch.sparse.mm(s, weight)

    @staticmethod
    def backward(ctx, grad):
        return torch.sparse.mm(ctx.s_t, grad.contiguous()), None, None


@dataclass
class _Layout:
    """``S`` and ``S.T`` as torch CSR index arrays; ``S.T``'s values are ``S``'s at ``perm``."""

    crow: torch.Tensor
    col: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor
    perm: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def of(cls, values: sparse.csr_matrix, device) -> _Layout:
        order = sparse.csr_matrix(
            (np.arange(values.nnz, dtype=np.float64), values.indices, values.indptr),
            shape=values.shape,
        )
        t = order.T.tocsr()
        t.sort_indices()

        def long(a):
            return torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)

        return cls(
            long(values.indptr),
            long(values.indices),
            long(t.indptr),
            long(t.indices),
            long(t.data),
            values.shape,
        )

    def pair(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            s = torch.sparse_csr_tensor(
                self.crow, self.col, data, self.shape, check_invariants=False
            )
            t = torch.sparse_csr_tensor(
                self.crow_t, self.col_t, data[self.perm], self.shape[::-1], check_invariants=False
            )
        return s, t


class StandardizedExpression:
    r"""Standardised expression of ``N`` cells and ``T`` genes without a dense ``(N, T)``.

    Per gene, :math:`\tilde x_{ij} = \mathrm{clip}((x_{ij} - \mu_j) / \sigma_j, -c, c)`, as
    ``sc.pp.scale``. Zero counts all take the value :math:`o_j = \mathrm{clip}(-\mu_j /
    \sigma_j, -c, c)`, so :math:`\tilde{\mathbf{X}} = \mathbf{1}\mathbf{o}^\top + \mathbf{S}`
    with :math:`\mathbf{S}` as sparse as the counts. Every linear use is exact in this form:
    rows (one batch dense at a time), means and weighted sums over cells, products with a
    matrix (a layer's weights, with gradients) and the subtraction of a per-gene shift, which
    goes into the offset. Cells of several sets keep one offset per set (``groups``).

    Shapes: ``values`` a scipy CSR ``(N, T)`` (:math:`\mathbf{S}`), ``offsets`` ``(G, T)``,
    ``groups`` ``(N,)`` in ``0..G-1``.

    Parameters
    ----------
    values
        :math:`\mathbf{S}`, the standardised non-zero entries minus their cell's offset.
    offsets
        :math:`\mathbf{o}` of each set of cells: the standardised value of a zero count,
        minus any shift.
    groups
        The set of each cell; ``None``: all cells in set 0.
    device
        Device of the outputs.
    """

    def __init__(
        self,
        values: sparse.csr_matrix,
        offsets: torch.Tensor,
        groups: np.ndarray | None = None,
        device="cpu",
    ):
        self.values = sparse.csr_matrix(values, dtype=np.float32)
        self.values.sort_indices()
        self.device = torch.device(device)
        self.offsets = torch.as_tensor(offsets, dtype=torch.float32).to(self.device)
        if self.offsets.ndim == 1:
            self.offsets = self.offsets[None]
        n = self.values.shape[0]
        self.groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
        self._layout: _Layout | None = None
        self._data: torch.Tensor | None = None  # S's values on the device
        self._scale: torch.Tensor | None = None  # dropout's, set by dropout()

    @classmethod
    def from_normalized(
        cls,
        x: sparse.spmatrix,
        mean: torch.Tensor,
        std: torch.Tensor,
        clip: float = 10.0,
        device=None,
    ) -> StandardizedExpression:
        """Standardise the normalised expression ``x`` ``(N, T)`` with per-gene ``mean``/``std``."""
        values = sparse.csr_matrix(x, dtype=np.float32, copy=True)
        values.sort_indices()
        mu, sd = (np.asarray(t.detach().cpu(), dtype=np.float32) for t in (mean, std))
        offset = np.clip(-mu / sd, -clip, clip)
        col = values.indices
        values.data = np.clip((values.data - mu[col]) / sd[col], -clip, clip) - offset[col]
        return cls(
            values, torch.from_numpy(offset), None, mean.device if device is None else device
        )

    # --- what a tensor offers ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, rows) -> StandardizedExpression:
        """The cells ``rows`` (indices, a boolean mask or a slice)."""
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        return StandardizedExpression(
            self.values[rows], self.offsets, self.groups[rows], self.device
        )

    def __sub__(self, shift: torch.Tensor) -> StandardizedExpression:
        """Every cell minus the per-gene ``shift`` ``(T,)``."""
        offsets = self.offsets - shift.to(self.device)
        return StandardizedExpression(self.values, offsets, self.groups, self.device)

    def __matmul__(self, weight: torch.Tensor) -> torch.Tensor:
        """``X @ weight`` for ``weight`` ``(T, k)``, differentiable in ``weight``; ``(N, k)``."""
        s, s_t = self._sparse()
        groups = torch.as_tensor(self.groups, device=weight.device)
        return _SparseTimesDense.apply(weight, s, s_t) + (self.offsets @ weight)[groups]

    def __rmatmul__(self, weights: torch.Tensor) -> torch.Tensor:
        """``weights @ X`` for cell weights ``(N,)``: a weighted sum of the cells, ``(T,)``."""
        w = weights.detach().cpu().numpy().astype(np.float64)
        out = torch.as_tensor((w @ self.values).astype(np.float32), device=self.device)
        per_set = np.bincount(self.groups, weights=w, minlength=len(self.offsets))
        return (
            out + torch.as_tensor(per_set, dtype=torch.float32, device=self.device) @ self.offsets
        )

    def mean(self, dim: int = 0) -> torch.Tensor:
        """The mean cell ``(T,)`` (``dim=0`` only)."""
        if dim != 0:
            raise ValueError("StandardizedExpression.mean averages over cells only (dim=0).")
        return torch.full((len(self),), 1 / max(len(self), 1)) @ self

    def rows(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The cells ``rows`` as a dense ``(len(rows), T)`` tensor on the device."""
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        part = torch.from_numpy(self.values[rows].toarray()).to(self.device)
        return part + self.offsets[torch.as_tensor(self.groups[rows], device=self.device)]

    def dense(self) -> torch.Tensor:
        """All cells as a dense ``(N, T)`` tensor (for small data and tests)."""
        return self.rows(np.arange(len(self)))

    def linear(self, layer: torch.nn.Linear) -> torch.Tensor:
        """``layer`` applied to every cell, ``(N, out_features)``, without a dense ``(N, T)``."""
        out = self @ layer.weight.T
        return out if layer.bias is None else out + layer.bias

    def dropout(self, p: float, training: bool) -> StandardizedExpression:
        """Dropout of the measured values: each entry of ``S`` zeroed with probability ``p``.

        The survivors are scaled by ``1 / (1 - p)``, so the expectation is unchanged, as with
        :class:`torch.nn.Dropout`; the zero counts' offsets are kept. The identity unless
        ``training``; the draw uses torch's generator.
        """
        if not training or p == 0:
            return self
        out = StandardizedExpression.__new__(StandardizedExpression)
        out.__dict__.update(self.__dict__)
        self._sparse()  # the layout is shared
        out._layout, out._data = self._layout, self._data
        out._scale = keep_scale((self.values.nnz,), p, self.device)
        return out

    def to(self, device) -> StandardizedExpression:
        """The same cells with their outputs on ``device`` (itself if already there)."""
        if torch.device(device) == self.device:
            return self
        return StandardizedExpression(self.values, self.offsets, self.groups, device)

    def _sparse(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._layout is None:
            self._layout = _Layout.of(self.values, self.device)
            self._data = torch.from_numpy(self.values.data).to(self.device)
        data = self._data if self._scale is None else self._data * self._scale
        return self._layout.pair(data)

    @staticmethod
    def concat(parts: Sequence[StandardizedExpression]) -> StandardizedExpression:
        """The cells of ``parts`` one after another, each set keeping its offsets."""
        offsets, groups, start = [], [], 0
        for part in parts:
            offsets.append(part.offsets.to(parts[0].device))
            groups.append(part.groups + start)
            start += len(part.offsets)
        return StandardizedExpression(
            sparse.vstack([p.values for p in parts]).tocsr(),
            torch.cat(offsets),
            np.concatenate(groups),
            parts[0].device,
        )

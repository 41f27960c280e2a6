"""The frozen reference cells of p_theta's graph, and how new cells join it (inductive mode)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from scbignn_tools.data import StandardizedExpression

from ._knn import KnnMethod, knn_graph, nearest_cells, project

SAME_EXPRESSION_ATOL = (
    1e-4  # normalised expression; float32 sums in another gene order differ by ~1e-6
)


def match_cells(
    names: np.ndarray, x: sparse.csr_matrix, names_to: np.ndarray, x_to: sparse.csr_matrix
) -> np.ndarray:
    """Row in ``x_to`` of each cell of ``x`` with the same name *and* the same expression, else -1.

    Names alone do not identify a cell: ``AnnData(X)`` names every dataset's cells ``'0'`` to
    ``'n-1'``. ``x`` and ``x_to`` are normalised expression of the model genes, ``(M, T)`` and
    ``(N, T)``; two cells match when no gene differs by more than ``SAME_EXPRESSION_ATOL``.
    """
    out = np.full(len(names), -1, dtype=np.int64)
    pairs = pd.DataFrame({"name": np.asarray(names, dtype=str), "cell": np.arange(len(names))})
    pairs = pairs.merge(
        pd.DataFrame({"name": np.asarray(names_to, dtype=str), "row": np.arange(len(names_to))}),
        on="name",
    )
    if pairs.empty:
        return out
    cell, row = pairs["cell"].to_numpy(), pairs["row"].to_numpy()
    diff = abs(sparse.csr_matrix(x)[cell] - sparse.csr_matrix(x_to)[row])
    same = np.asarray(diff.max(axis=1).todense()).ravel() <= SAME_EXPRESSION_ATOL
    cell, row = cell[same][::-1], row[same][::-1]
    out[cell] = row  # reversed: with duplicates, the first matching row wins
    return out


def graph_coords(
    x: torch.Tensor, h: np.ndarray | None, basis: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """Cells' coordinates in the space of p_theta's graph: expression PCs, or ``h`` without a basis.

    ``x`` is the standardised expression ``(N, T)``, ``basis`` from
    :func:`~scbignn_tools.graph.expression_basis`.
    """
    return h if basis is None else project(x, basis)


@dataclass
class ReferenceGraph:
    """The cells p_theta was trained on, frozen after training, and their kNN graph.

    New cells are annotated inductively: each joins its nearest graph cells (:meth:`extend`)
    after the expression shift the new cells share against the graph cells is removed
    (:meth:`shift`); :meth:`novelty` measures how far they lie from the labelled graph cells.
    Takes and returns arrays only.

    Parameters
    ----------
    x
        Normalised expression of the model genes, ``(N, T)`` sparse.
    h
        q_phi's cell representations, ``(N, d)``.
    coords
        The cells' coordinates in the space the graph was built in, ``(N, c)``.
    basis
        ``(mean, components)`` of :func:`~scbignn_tools.graph.expression_basis` when the
        graph is built on the expression; ``None`` when it is built on ``h``.
    adj
        Binary kNN adjacency with self-loops, ``(N, N)`` sparse.
    labels
        Label codes, -1 for unlabelled cells.
    obs_names
        The cells' names.
    n_neighbors
        ``k`` of the graph.
    knn_method
        As in :func:`~scbignn_tools.graph.nearest_cells`.
    seed
        Seed of pynndescent.
    own_distances
        The labelled cells' sorted neighbour distances (:func:`neighbour_distances` with
        ``h_new=None``), what :meth:`novelty` compares with; computed on first use when not
        given (:meth:`reference_distances`) and saved with the model.
    """

    x: sparse.csr_matrix
    h: np.ndarray
    coords: np.ndarray
    basis: tuple[np.ndarray, np.ndarray] | None
    adj: sparse.csr_matrix
    labels: np.ndarray
    obs_names: np.ndarray
    n_neighbors: int
    knn_method: KnnMethod = "auto"
    seed: int = 0
    own_distances: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.obs_names)

    def contains(self, names: np.ndarray, x: sparse.csr_matrix) -> np.ndarray:
        """Row of each given cell in the graph, -1 for cells not in it (:func:`match_cells`)."""
        return match_cells(names, x, self.obs_names, self.x)

    def coords_of(self, x: torch.Tensor, h: np.ndarray) -> np.ndarray:
        """Coordinates of cells in the graph's space (:func:`graph_coords`)."""
        return graph_coords(x, h, self.basis)

    def extend(self, coords_new: np.ndarray) -> sparse.csr_matrix:
        """The graph with new cells appended, each linked to its nearest graph cells."""
        return extend_graph(
            self.adj, self.coords, coords_new, self.n_neighbors, self.knn_method, self.seed
        )

    def shift(self, x_new: torch.Tensor, h_new: np.ndarray, x_graph: torch.Tensor) -> torch.Tensor:
        """The shift of new cells against the graph cells (:func:`query_shift`), ``(T,)``.

        ``x_new`` and ``x_graph`` are standardised expression, ``x_graph`` of all graph cells.
        """
        return query_shift(
            x_new, h_new, x_graph, self.h, self.n_neighbors, self.knn_method, self.seed
        )

    def subsample(self, n_per_type: int) -> ReferenceGraph:
        """A graph of at most ``n_per_type`` labelled cells per type, drawn at random (``seed``).

        Unlabelled cells are left out; the kNN graph is rebuilt among the cells kept, in the
        same space. What a model saved this way reveals of its training data.
        """
        if n_per_type < 1:
            raise ValueError(f"Keep at least one cell per type, not {n_per_type}.")
        rng = np.random.default_rng(self.seed)
        rows = []
        for label in np.unique(self.labels[self.labels >= 0]):
            cells = np.flatnonzero(self.labels == label)
            rows.append(rng.choice(cells, min(n_per_type, len(cells)), replace=False))
        rows = np.sort(np.concatenate(rows))
        coords = self.coords[rows]
        return ReferenceGraph(
            x=self.x[rows],
            h=self.h[rows],
            coords=coords,
            basis=self.basis,
            adj=knn_graph(coords, self.n_neighbors, self.knn_method, self.seed),
            labels=self.labels[rows],
            obs_names=self.obs_names[rows],
            n_neighbors=self.n_neighbors,
            knn_method=self.knn_method,
            seed=self.seed,
        )

    def reference_distances(self) -> np.ndarray:
        """The labelled graph cells' sorted distances to their neighbours (``own_distances``).

        Computed once, when first needed, and kept: training fills it, so that the first
        :meth:`novelty` after training or loading does not pay for it.
        """
        if self.own_distances is None:
            self.own_distances = neighbour_distances(
                self.h[self.labels >= 0], None, self.n_neighbors, self.knn_method, self.seed
            )
        return self.own_distances

    def novelty(self, h_new: np.ndarray) -> np.ndarray:
        """Novelty of cells against the labelled graph cells (:func:`novelty`), in [0, 1]."""
        return novelty(
            self.h[self.labels >= 0],
            h_new,
            self.n_neighbors,
            self.knn_method,
            self.seed,
            own=self.reference_distances(),
        )


def extend_graph(
    adj: sparse.spmatrix,
    coords_graph: np.ndarray,
    coords_new: np.ndarray,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
) -> sparse.csr_matrix:
    """Add cells to a kNN graph, each linked to itself and its ``n_neighbors`` nearest graph cells.

    ``coords_graph`` and ``coords_new`` are the graph's and the new cells' coordinates in the
    space the graph was built in.

    The graph cells keep their edges and get none to the new cells, so the new cells do not
    change each other's (or the graph's) representations: p_theta on the result is inductive.
    """
    n, m = coords_graph.shape[0], coords_new.shape[0]
    idx, _ = nearest_cells(coords_graph, coords_new, n_neighbors, method, seed)
    k = idx.shape[1]
    rows = np.repeat(np.arange(m), k)
    links = sparse.csr_matrix((np.ones(m * k, np.float32), (rows, idx.ravel())), shape=(m, n))
    top = sparse.hstack([adj, sparse.csr_matrix((n, m), dtype=np.float32)])
    bottom = sparse.hstack([links, sparse.identity(m, dtype=np.float32, format="csr")])
    return sparse.csr_matrix(sparse.vstack([top, bottom]))


def neighbour_distances(
    h_reference: np.ndarray,
    h_new: np.ndarray | None,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Mean distance of each cell to its 2nd to ``(n_neighbors + 1)``-th nearest reference cells.

    With ``h_new=None``, the reference cells' own distances, sorted (what :func:`novelty`
    compares with).
    """
    h = h_reference if h_new is None else h_new
    d = nearest_cells(h_reference, h, n_neighbors + 1, method, seed)[1][:, 1:].mean(axis=1)
    return np.sort(d) if h_new is None else d


def novelty(
    h_reference: np.ndarray,
    h_new: np.ndarray,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
    own: np.ndarray | None = None,
) -> np.ndarray:
    r"""How far each new cell lies from the reference cells, as a share of the reference cells.

    A cell's distance :math:`d_i` is its mean Euclidean distance, in q_phi's ``h``, to its
    2nd to :math:`(k + 1)`-th nearest reference cells (the nearest is skipped, so that a
    reference cell is not compared with itself). Its novelty is the share of reference cells
    whose own :math:`d` is smaller: near 1 when the cell is farther from the reference than
    almost every reference cell is from its neighbours (nearest-neighbour out-of-distribution
    detection, Sun et al. 2022).

    Shapes: ``h_reference`` ``(N, n_h)``, ``h_new`` ``(M, n_h)``; returns ``(M,)`` in [0, 1].
    ``own``, the reference's sorted distances (:func:`neighbour_distances` with
    ``h_new=None``), is computed when not given.
    """
    if own is None:
        own = neighbour_distances(h_reference, None, n_neighbors, method, seed)
    d = neighbour_distances(h_reference, h_new, n_neighbors, method, seed)
    return np.searchsorted(own, d) / len(own)


def query_shift(
    x_new: StandardizedExpression | torch.Tensor,
    h_new: np.ndarray,
    x_graph: StandardizedExpression | torch.Tensor,
    h_graph: np.ndarray,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
) -> torch.Tensor:
    r"""Mean offset of new cells' expression from that of their matches among the graph cells.

    .. math::
        \boldsymbol{\delta} = \frac{1}{M} \sum_{i=1}^{M} \Big(\mathbf{x}_i
        - \frac{1}{k} \sum_{j \in \mathcal{N}(i)} \mathbf{x}_j\Big)

    where :math:`\mathcal{N}(i)` are the ``n_neighbors`` graph cells nearest to new cell
    :math:`i` in q_phi's representation ``h``. Each cell is compared with cells of its own kind,
    so :math:`\boldsymbol{\delta}` measures a shift shared by the new cells (a stimulus, a
    batch) and not a difference in cell-type composition (nearest-neighbour matching in the
    spirit of the MNN correction of Haghverdi et al. 2018, with one global vector).

    Shapes: ``x_new`` ``(M, T)``, ``h_new`` ``(M, n_h)``, ``x_graph`` ``(N, T)``, ``h_graph``
    ``(N, n_h)``; returns ``(T,)``. ``x_new`` and ``x_graph`` are standardised expression,
    :class:`~scbignn_tools.data.StandardizedExpression` or float32 tensors.
    """
    idx, _ = nearest_cells(h_graph, h_new, n_neighbors, method, seed)
    weights = np.bincount(idx.ravel(), minlength=len(h_graph)) / idx.size
    dtype = x_graph.dtype if isinstance(x_graph, torch.Tensor) else torch.float32
    weights = torch.as_tensor(weights, dtype=dtype, device=x_graph.device)
    return x_new.mean(0) - weights @ x_graph

"""The cell-cell kNN graph of p_theta (paper section 3.4)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import sparse

EXACT_MAX_CELLS = 50_000


def knn_graph(
    h: np.ndarray,
    n_neighbors: int,
    method: Literal["auto", "exact", "pynndescent"] = "auto",
    seed: int = 0,
) -> sparse.csr_matrix:
    """Binary kNN adjacency of the rows of ``h``, each cell linked to itself and ``n_neighbors`` others.

    ``"auto"`` is exact (sklearn) up to 50,000 cells and pynndescent above; pynndescent compiles
    with numba on first use in a process (about 36 s), so it is kept off small data.
    """
    n = h.shape[0]
    k = min(n_neighbors + 1, n)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_CELLS else "pynndescent"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        idx = NearestNeighbors(n_neighbors=k).fit(h).kneighbors(h, return_distance=False)
    elif method == "pynndescent":
        from pynndescent import NNDescent

        idx, _ = NNDescent(h, n_neighbors=k, random_state=seed, n_jobs=1).neighbor_graph
    else:
        raise ValueError(f"method must be 'auto', 'exact' or 'pynndescent', not {method!r}.")
    rows = np.repeat(np.arange(n), k)
    adj = sparse.csr_matrix((np.ones(n * k, np.float32), (rows, idx.ravel())), shape=(n, n))
    adj.setdiag(1.0)  # the cell itself, also when ties pushed it out of its own list
    adj.data[:] = 1.0
    return adj


def expression_basis(
    x: np.ndarray, n_comps: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and principal axes of the standardised expression, the space of the expression graph.

    ``x`` is ``(N, T)``; returns the mean ``(T,)`` and the axes ``(n_comps, T)``, which map any
    cells, reference or query, with :func:`project`.
    """
    from sklearn.decomposition import PCA

    n_comps = min(n_comps, *x.shape)
    pca = PCA(n_comps, svd_solver="randomized", random_state=seed).fit(x)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def project(x: np.ndarray, basis: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Coordinates of the cells ``x`` ``(N, T)`` on the axes of :func:`expression_basis`."""
    mean, components = basis
    return (x - mean) @ components.T


def row_normalized_adjacency(
    adj: sparse.spmatrix, device: torch.device | str = "cpu"
) -> torch.Tensor:
    r""":math:`\mathbf{D}^{-1}\mathbf{A}` of Eq. 8 as a sparse torch tensor."""
    adj = sparse.csr_matrix(adj, dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    adj = sparse.diags(1.0 / np.maximum(deg, 1e-12)).astype(np.float32) @ adj
    coo = adj.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(
        indices, values, coo.shape, device=device, check_invariants=True
    ).coalesce()


def homophily(adj: sparse.spmatrix, labels: np.ndarray, cells: np.ndarray | None = None) -> float:
    """Share of edges (self-loops excluded) that join two cells of the same label.

    With ``cells`` (indices), only the edges leaving those cells count: for example held-out
    cells, whose labels a graph built from a trained representation never saw.
    """
    adj = sparse.csr_matrix(adj)
    rows = np.arange(adj.shape[0]) if cells is None else np.asarray(cells)
    coo = adj[rows].tocoo()
    src = rows[coo.row]
    keep = src != coo.col
    labels = np.asarray(labels)
    return float(np.mean(labels[src[keep]] == labels[coo.col[keep]]))


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
    idx = nearest_cells(coords_graph, coords_new, n_neighbors, method, seed)
    k = idx.shape[1]
    rows = np.repeat(np.arange(m), k)
    links = sparse.csr_matrix((np.ones(m * k, np.float32), (rows, idx.ravel())), shape=(m, n))
    top = sparse.hstack([adj, sparse.csr_matrix((n, m), dtype=np.float32)])
    bottom = sparse.hstack([links, sparse.identity(m, dtype=np.float32, format="csr")])
    return sparse.csr_matrix(sparse.vstack([top, bottom]))


def nearest_cells(
    coords_graph: np.ndarray,
    coords_new: np.ndarray,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
    return_distance: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Indices ``(M, k)`` of each new cell's ``n_neighbors`` nearest graph cells (exact or pynndescent).

    With ``return_distance``, also their Euclidean distances ``(M, k)``, nearest first.
    """
    n = coords_graph.shape[0]
    k = min(n_neighbors, n)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_CELLS else "pynndescent"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k).fit(coords_graph)
        dist, idx = nn.kneighbors(coords_new)
    else:
        from pynndescent import NNDescent

        index = NNDescent(coords_graph, n_neighbors=k, random_state=seed, n_jobs=1)
        idx, dist = index.query(coords_new, k=k)
    return (idx, dist) if return_distance else idx


def novelty(
    h_reference: np.ndarray,
    h_new: np.ndarray,
    n_neighbors: int,
    method: str = "auto",
    seed: int = 0,
) -> np.ndarray:
    r"""How far each new cell lies from the reference cells, as a share of the reference cells.

    A cell's distance :math:`d_i` is its mean Euclidean distance, in q_phi's ``h``, to its
    2nd to :math:`(k + 1)`-th nearest reference cells (the nearest is skipped, so that a
    reference cell is not compared with itself). Its novelty is the share of reference cells
    whose own :math:`d` is smaller: near 1 when the cell is farther from the reference than
    almost every reference cell is from its neighbours (nearest-neighbour out-of-distribution
    detection, Sun et al. 2022).

    Shapes: ``h_reference`` ``(N, n_h)``, ``h_new`` ``(M, n_h)``; returns ``(M,)`` in [0, 1].
    """
    k = n_neighbors + 1

    def distance(h):
        return nearest_cells(h_reference, h, k, method, seed, return_distance=True)[1][:, 1:]

    own = np.sort(distance(h_reference).mean(axis=1))
    return np.searchsorted(own, distance(h_new).mean(axis=1)) / len(own)


def query_shift(
    x_new: torch.Tensor,
    h_new: np.ndarray,
    x_graph: torch.Tensor,
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
    ``(N, n_h)``; returns ``(T,)``.
    """
    idx = nearest_cells(h_graph, h_new, n_neighbors, method, seed)
    weights = np.bincount(idx.ravel(), minlength=len(h_graph)) / idx.size
    weights = torch.as_tensor(weights, dtype=x_graph.dtype, device=x_graph.device)
    return x_new.mean(0) - weights @ x_graph

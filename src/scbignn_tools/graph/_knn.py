"""The cell-cell kNN graph of p_theta (paper section 3.4)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.data import StandardizedExpression

EXACT_MAX_CELLS = 50_000


KnnMethod = Literal["auto", "exact", "pynndescent"]


def nearest_cells(
    coords_graph: np.ndarray,
    coords_new: np.ndarray | None,
    n_neighbors: int,
    method: KnnMethod = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances ``(M, k)`` of each cell's nearest graph cells, nearest first.

    The one kNN dispatch of the package: ``"exact"`` (sklearn), ``"pynndescent"``, or
    ``"auto"``, exact up to ``EXACT_MAX_CELLS`` graph cells. pynndescent compiles with numba on
    first use in a process (about 36 s), so it is kept off small data. ``coords_new=None``
    asks for the graph cells' own neighbours (themselves included).
    """
    n = coords_graph.shape[0]
    k = min(n_neighbors, n)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_CELLS else "pynndescent"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k).fit(coords_graph)
        dist, idx = nn.kneighbors(coords_graph if coords_new is None else coords_new)
    elif method == "pynndescent":
        from pynndescent import NNDescent

        index = NNDescent(coords_graph, n_neighbors=k, random_state=seed, n_jobs=1)
        if coords_new is None:
            idx, dist = index.neighbor_graph
        else:
            idx, dist = index.query(coords_new, k=k)
    else:
        raise ValueError(f"method must be 'auto', 'exact' or 'pynndescent', not {method!r}.")
    return idx, dist


def knn_graph(
    h: np.ndarray, n_neighbors: int, method: KnnMethod = "auto", seed: int = 0
) -> sparse.csr_matrix:
    """Binary kNN adjacency of the rows of ``h``, each cell linked to itself and ``n_neighbors`` others.

    Neighbours come from :func:`nearest_cells`. Shapes: ``h`` ``(N, d)``; returns ``(N, N)``.
    """
    n = h.shape[0]
    idx, _ = nearest_cells(h, None, n_neighbors + 1, method, seed)
    k = idx.shape[1]
    rows = np.repeat(np.arange(n), k)
    adj = sparse.csr_matrix((np.ones(n * k, np.float32), (rows, idx.ravel())), shape=(n, n))
    adj.setdiag(1.0)  # the cell itself, also when ties pushed it out of its own list
    adj.data[:] = 1.0
    return adj


def expression_basis(
    x: StandardizedExpression | np.ndarray, n_comps: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and principal axes of the standardised expression, the space of the expression graph.

    ``x`` is ``(N, T)``, a :class:`~scbignn_tools.data.StandardizedExpression` of one set of
    cells (PCA of its sparse values with implicit centring, ARPACK: the offset cancels in the
    centring) or an array; returns the mean ``(T,)`` and the axes ``(n_comps, T)``, which map
    any cells, reference or query, with :func:`project`.
    """
    from sklearn.decomposition import PCA

    n_comps = min(n_comps, x.shape[0] - 1, x.shape[1] - 1)
    if isinstance(x, StandardizedExpression):
        if len(x.offsets) != 1:
            raise ValueError("expression_basis takes the cells of one set (one offset).")
        pca = PCA(n_comps, svd_solver="arpack", random_state=seed).fit(x.values)
        mean = pca.mean_ + x.offsets[0].cpu().numpy()
        return mean.astype(np.float32), pca.components_.astype(np.float32)
    pca = PCA(n_comps, svd_solver="randomized", random_state=seed).fit(x)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def project(
    x: StandardizedExpression | torch.Tensor | np.ndarray, basis: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Coordinates of the cells ``x`` ``(N, T)`` on the axes of :func:`~scbignn_tools.graph.expression_basis`."""
    mean, components = basis
    if isinstance(x, np.ndarray):
        return (x - mean) @ components.T
    axes = torch.as_tensor(components.T, device=x.device)
    shifted = x - torch.as_tensor(mean, device=x.device)
    with torch.no_grad():
        return (shifted @ axes).cpu().numpy()


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

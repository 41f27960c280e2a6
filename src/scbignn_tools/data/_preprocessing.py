"""Section 2 of the paper: input checks, log-normalisation and gene selection (AnnData-free)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from scipy import sparse

DataFormat = Literal["counts", "log1p"]
SCALE = 1e6  # s in log(1 + s * x / rowsum), following the paper
_FORMATS = ("counts", "log1p")


def check_expression(X, data_format: DataFormat = "counts", where: str = "adata.X") -> None:
    """Raise a clear error when ``X`` is not what ``data_format`` declares.

    ``"counts"`` needs non-negative integers; ``"log1p"`` needs non-negative, unscaled values
    such as ``sc.pp.normalize_total`` followed by ``sc.pp.log1p`` produce.
    """
    if data_format not in _FORMATS:
        raise ValueError(f"data_format must be one of {_FORMATS}, not {data_format!r}.")
    values = X.data if sparse.issparse(X) else np.asarray(X).ravel()
    if values.size and not np.all(np.isfinite(values)):
        n_bad = int((~np.isfinite(values)).sum())
        raise ValueError(
            f"{where} has {n_bad} NaN or infinite values. Remove or impute them before setup."
        )
    if values.size and values.min() < 0:
        raise ValueError(
            f"{where} has negative values, so it looks scaled or centred (e.g. by sc.pp.scale). "
            "scBiGNN needs raw counts; pass them with `layer=` (or unscaled log-normalised data "
            "with data_format='log1p', e.g. adata.raw.to_adata())."
        )
    if data_format == "counts":
        sample = values[:1_000_000]
        if np.any(sample != np.round(sample)):
            raise ValueError(
                f"{where} has non-integer values, so it is not raw counts. Pass the counts with "
                "`layer=`, or set data_format='log1p' if it holds log-normalised data "
                "(sc.pp.normalize_total then sc.pp.log1p)."
            )
    elif values.size and values.max() > 30:
        raise ValueError(
            f"{where} has values up to {values.max():.3g}, too large for log1p-normalised data. "
            "If it holds raw counts, use data_format='counts'."
        )
    row_sums = np.asarray(X.sum(axis=1)).ravel()
    if np.any(row_sums == 0):
        raise ValueError(
            f"{where} has {int((row_sums == 0).sum())} empty cells (no expressed gene). Remove "
            "them first, e.g. sc.pp.filter_cells(adata, min_genes=1)."
        )


def log_normalize(X, data_format: DataFormat = "counts") -> sparse.csr_matrix:
    r"""Return :math:`\log(1 + s \cdot x_{ij} / \sum_m x_{im})` with :math:`s = 10^6` (paper, section 2).

    Log-normalised input (``data_format="log1p"``) is mapped back with ``expm1`` first, so any
    ``normalize_total`` target gives the same result as counts would.
    """
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    if data_format == "log1p":
        np.expm1(X.data, out=X.data)
    tmp = AnnData(X)
    sc.pp.normalize_total(tmp, target_sum=SCALE)
    sc.pp.log1p(tmp)
    return sparse.csr_matrix(tmp.X)


SEURAT_V3_SPANS = (0.3, 0.5, 1.0)  # scanpy's loess span, then larger ones when its fit fails
Flavor = Literal["variance", "cell_ranger", "seurat_v3"]


@dataclass(frozen=True)
class GeneSelection:
    """The genes :func:`~scbignn_tools.data.select_genes` chose and the ranking it actually used.

    ``flavor`` may differ from the one asked for when seurat_v3's loess fit failed at every
    span; ``span`` is seurat_v3's loess span (``None`` for other rankings).
    """

    genes: list[str]
    flavor: Flavor
    span: float | None = None

    def describe(self) -> str:
        """The ranking in words, e.g. ``"seurat_v3 (loess span 0.5)"``."""
        return self.flavor if self.span is None else f"{self.flavor} (loess span {self.span:g})"


def select_genes(
    X_norm,
    var_names: Sequence[str],
    n_top_genes: int,
    flavor: Flavor = "variance",
    counts=None,
) -> GeneSelection:
    """Drop all-zero genes and keep ``n_top_genes`` variable genes.

    ``"variance"`` ranks genes by the variance of the log-normalised data ``X_norm``, as the
    paper's section 2 does. ``"cell_ranger"`` ranks them by scanpy's mean-binned normalised
    dispersion of ``X_norm``; ``"seurat_v3"`` by scanpy's variance-stabilised variance of the raw
    ``counts`` (needs the ``scikit-misc`` package). Both do not favour genes that are merely
    detected in about half of the cells, as the variance on the ``s = 1e6`` scale does.

    seurat_v3 fits a loess of log variance on log mean, which is singular on some real count
    matrices (many low-mean genes, few cells). Then the fit is retried with the larger spans of
    ``SEURAT_V3_SPANS``, and if every span fails the genes are ranked by ``"cell_ranger"``;
    one warning says what happened, and the result records the ranking used.
    """
    X_norm = sparse.csr_matrix(X_norm)
    expressed = np.flatnonzero(X_norm.getnnz(axis=0) > 0)
    names = np.asarray(var_names)[expressed].astype(str)
    X_norm = X_norm[:, expressed]
    if n_top_genes < 1:
        raise ValueError(f"n_top_genes must be at least 1, not {n_top_genes}.")
    if len(names) < 2 or X_norm.shape[0] < 2:
        raise ValueError(
            f"Gene selection needs at least 2 cells and 2 expressed genes; the data have "
            f"{X_norm.shape[0]} cells and {len(names)} expressed genes."
        )
    n_top = min(n_top_genes, len(names))
    span = None
    if flavor == "seurat_v3":
        if counts is None:
            raise ValueError(
                "gene_selection='seurat_v3' needs raw counts; use 'cell_ranger' for log1p data."
            )
        tmp = AnnData(sparse.csr_matrix(counts)[:, expressed], var=pd.DataFrame(index=names))
        score, span, failures = _seurat_v3_score(tmp, n_top)
        if failures:
            used = f"span {span:g}" if span is not None else "'cell_ranger' ranking"
            warnings.warn(
                f"scanpy's seurat_v3 gene selection failed: its loess fit is singular on these "
                f"counts ({'; '.join(failures)}); used the {used}. Pass gene_selection= to choose the "
                "ranking yourself.",
                UserWarning,
                stacklevel=2,
            )
        if span is None:
            flavor = "cell_ranger"
    if flavor == "variance":
        mean = np.asarray(X_norm.mean(axis=0)).ravel()
        score = np.asarray(X_norm.multiply(X_norm).mean(axis=0)).ravel() - mean**2
    elif flavor == "cell_ranger":
        tmp = AnnData(X_norm, var=pd.DataFrame(index=names))
        stats = sc.pp.highly_variable_genes(
            tmp, flavor="cell_ranger", n_top_genes=n_top, inplace=False
        )
        score = np.nan_to_num(stats["dispersions_norm"].to_numpy(), nan=-np.inf)
    elif flavor != "seurat_v3":
        raise ValueError(
            f"flavor must be 'variance', 'cell_ranger' or 'seurat_v3', not {flavor!r}."
        )
    order = np.argsort(-score, kind="stable")
    return GeneSelection([str(g) for g in names[order[:n_top_genes]]], flavor, span)


def _seurat_v3_score(counts: AnnData, n_top: int) -> tuple[np.ndarray | None, float | None, list]:
    """seurat_v3 scores at the first span of ``SEURAT_V3_SPANS`` whose loess fit works."""
    failures = []
    for span in SEURAT_V3_SPANS:
        try:
            stats = sc.pp.highly_variable_genes(
                counts, flavor="seurat_v3", n_top_genes=n_top, span=span, inplace=False
            )
        except ValueError as err:  # skmisc's loess: singular fit, e.g. "reciprocal condition"
            failures.append(f"span {span:g}: {err}")
            continue
        return -stats["highly_variable_rank"].fillna(np.inf).to_numpy(), span, failures
    return None, None, failures

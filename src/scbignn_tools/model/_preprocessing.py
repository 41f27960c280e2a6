"""Section 2 of the paper: checks, log-normalisation and gene selection (AnnData-free)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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


def select_genes(
    X_norm,
    var_names: Sequence[str],
    n_top_genes: int,
    flavor: Literal["variance", "cell_ranger", "seurat_v3"] = "variance",
    counts=None,
) -> list[str]:
    """Drop all-zero genes and keep ``n_top_genes`` variable genes.

    ``"variance"`` ranks genes by the variance of the log-normalised data ``X_norm``, as the
    paper's section 2 does. ``"cell_ranger"`` ranks them by scanpy's mean-binned normalised
    dispersion of ``X_norm``; ``"seurat_v3"`` by scanpy's variance-stabilised variance of the raw
    ``counts`` (needs the ``scikit-misc`` package). Both do not favour genes that are merely
    detected in about half of the cells, as the variance on the ``s = 1e6`` scale does.
    """
    X_norm = sparse.csr_matrix(X_norm)
    expressed = np.flatnonzero(X_norm.getnnz(axis=0) > 0)
    names = np.asarray(var_names)[expressed]
    X_norm = X_norm[:, expressed]
    if flavor == "seurat_v3":
        if counts is None:
            raise ValueError(
                "gene_selection='seurat_v3' needs raw counts; use 'cell_ranger' for log1p data."
            )
        tmp = AnnData(
            sparse.csr_matrix(counts)[:, expressed],
            var=pd.DataFrame(index=pd.Index(names.astype(str))),
        )
        stats = sc.pp.highly_variable_genes(
            tmp, flavor="seurat_v3", n_top_genes=min(n_top_genes, len(names)), inplace=False
        )
        score = -stats["highly_variable_rank"].fillna(np.inf).to_numpy()
    elif flavor == "variance":
        mean = np.asarray(X_norm.mean(axis=0)).ravel()
        score = np.asarray(X_norm.multiply(X_norm).mean(axis=0)).ravel() - mean**2
    elif flavor == "cell_ranger":
        tmp = AnnData(X_norm, var=pd.DataFrame(index=pd.Index(names.astype(str))))
        stats = sc.pp.highly_variable_genes(
            tmp, flavor="cell_ranger", n_top_genes=min(n_top_genes, len(names)), inplace=False
        )
        score = np.nan_to_num(stats["dispersions_norm"].to_numpy(), nan=-np.inf)
    else:
        raise ValueError(
            f"flavor must be 'variance', 'cell_ranger' or 'seurat_v3', not {flavor!r}."
        )
    order = np.argsort(-score, kind="stable")
    return [str(g) for g in names[order[:n_top_genes]]]


def align_genes(
    var_names: Sequence[str], genes: Sequence[str], min_overlap: float = 0.5
) -> np.ndarray:
    """Column of each model gene in ``var_names`` (-1 where missing), with checks on the overlap."""
    index = pd.Index(var_names)
    if not index.is_unique:
        raise ValueError("var_names are not unique; call adata.var_names_make_unique() first.")
    cols = index.get_indexer(pd.Index(genes))
    overlap = float(np.mean(cols >= 0))
    if overlap < min_overlap:
        hint = _naming_hint(var_names, genes)
        raise ValueError(
            f"Only {overlap:.0%} of the model's {len(genes)} genes are in the data "
            f"(at least {min_overlap:.0%} needed).{hint}"
        )
    if overlap < 1:
        warnings.warn(
            f"{int((cols < 0).sum())} of the model's {len(genes)} genes ({1 - overlap:.0%}) are "
            "missing from the data and are set to zero.",
            UserWarning,
            stacklevel=3,
        )
    return cols


def _naming_hint(var_names: Sequence[str], genes: Sequence[str]) -> str:
    def ensembl(names):
        return np.mean([str(n).startswith(("ENSG", "ENSMUSG")) for n in list(names)[:200]]) > 0.5

    if ensembl(var_names) != ensembl(genes):
        return " One side uses Ensembl IDs and the other gene symbols: map them to one naming."
    upper = pd.Index([str(g).upper() for g in var_names])
    if np.mean(upper.get_indexer([str(g).upper() for g in genes]) >= 0) > 0.5:
        return " The names match when case is ignored: is the data from another species?"
    return ""


def model_input(
    X, var_names: Sequence[str], genes: Sequence[str], data_format: DataFormat
) -> sparse.csr_matrix:
    """Normalised expression of ``genes`` (columns in that order; missing genes are zero)."""
    cols = align_genes(var_names, genes)
    X_norm = log_normalize(X, data_format)
    out = X_norm[:, np.where(cols >= 0, cols, 0)]
    if np.any(cols < 0):
        out = out @ sparse.diags((cols >= 0).astype(np.float32))
    out = sparse.csr_matrix(out)
    out.eliminate_zeros()
    out.sort_indices()
    return out

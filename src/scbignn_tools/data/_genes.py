"""Section 2 of the paper, for new data: map any gene order onto the model's genes."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ._preprocessing import DataFormat, log_normalize


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
    return gene_columns(log_normalize(X, data_format), var_names, genes)


def gene_columns(X_norm, var_names: Sequence[str], genes: Sequence[str]) -> sparse.csr_matrix:
    """Columns ``genes`` of already normalised data (:func:`~scbignn_tools.data.model_input` after normalising)."""
    cols = align_genes(var_names, genes)
    out = X_norm[:, np.where(cols >= 0, cols, 0)]
    if np.any(cols < 0):
        out = out @ sparse.diags((cols >= 0).astype(np.float32))
    out = sparse.csr_matrix(out)
    out.eliminate_zeros()
    out.sort_indices()
    return out

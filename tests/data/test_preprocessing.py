from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from scbignn_tools.data import (
    align_genes,
    check_expression,
    log_normalize,
    model_input,
    select_genes,
)


def test_log_normalize_by_hand():
    X = np.array([[1, 0, 3], [0, 2, 2]], dtype=np.float32)
    expected = np.log1p(1e6 * X / X.sum(1, keepdims=True))
    np.testing.assert_allclose(log_normalize(sparse.csr_matrix(X)).toarray(), expected, rtol=1e-5)
    # log1p input of any target sum maps to the same values
    lognorm = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    np.testing.assert_allclose(log_normalize(lognorm, "log1p").toarray(), expected, rtol=1e-4)


def test_select_genes_drops_zero_genes_and_ranks_by_variance():
    X = sparse.csr_matrix(np.array([[0, 1, 5, 0], [0, 1, 0, 2], [0, 1, 9, 0]], dtype=np.float32))
    assert select_genes(X, ["z", "flat", "high", "mid"], 10).genes == ["high", "mid", "flat"]
    assert select_genes(X, ["z", "flat", "high", "mid"], 1).genes == ["high"]


def test_model_input_reorders_and_zero_fills():
    X = sparse.csr_matrix(np.array([[1, 2, 3], [4, 0, 6]], dtype=np.float32))
    with pytest.warns(UserWarning, match="1 of the model's 3 genes"):
        out = model_input(X, ["a", "b", "c"], ["c", "missing", "a"], "counts").toarray()
    full = log_normalize(X).toarray()
    np.testing.assert_allclose(out, np.c_[full[:, 2], np.zeros(2), full[:, 0]])


@pytest.mark.parametrize(
    ("X", "fmt", "match"),
    [
        (np.array([[1.0, np.nan]]), "counts", "NaN"),
        (np.array([[1.0, -1.0]]), "counts", "negative"),
        (np.array([[1.5, 2.0]]), "counts", "not raw counts"),
        (np.array([[100.0, 2.0]]), "log1p", "too large"),
        (np.array([[1.0, 2.0], [0.0, 0.0]]), "counts", "empty cells"),
        (np.array([[1.0, 2.0]]), "tpm", "data_format"),
    ],
)
def test_check_expression_errors(X, fmt, match):
    with pytest.raises(ValueError, match=match):
        check_expression(sparse.csr_matrix(X), fmt)


def test_align_genes_explains_low_overlap():
    with pytest.raises(ValueError, match="Ensembl"):
        align_genes(["ENSG0001", "ENSG0002"], ["CD3E", "MS4A1"])
    with pytest.raises(ValueError, match="case"):
        align_genes(["Cd3e", "Ms4a1"], ["CD3E", "MS4A1"])

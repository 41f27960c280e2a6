"""seurat_v3's loess fit fails on some real count matrices: select_genes recovers and says so."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scanpy as sc

from scbignn_tools import data
from scbignn_tools.data import log_normalize, select_genes
from scbignn_tools.model import SCBiGNN

# On these 240 BaronMouse cells (all their expressed genes, many of low mean) scanpy's
# seurat_v3 loess is singular at span 0.1 ("There are other near singularities as well"),
# and fits at its default 0.3 and at 0.5.
FAILING_SPAN = 0.1


@pytest.fixture
def counts(baron):
    rng = np.random.default_rng(0)
    sub = baron[rng.choice(baron.n_obs, 240, replace=False)].copy()
    sub = sub[:, np.asarray((sub.X > 0).sum(0)).ravel() > 0].copy()
    sub.obs["labels"] = sub.obs["cell_type"].astype(str)
    return sub


def _hvg(adata, span):
    stats = sc.pp.highly_variable_genes(
        adata, flavor="seurat_v3", n_top_genes=100, span=span, inplace=False
    )
    return list(stats["highly_variable_rank"].sort_values().index[:100])


def test_scanpy_itself_fails_at_the_failing_span(counts):
    with pytest.raises(ValueError, match="singular"):
        _hvg(counts, FAILING_SPAN)


def test_a_failing_loess_is_retried_with_a_larger_span(counts, monkeypatch):
    monkeypatch.setattr(data._preprocessing, "SEURAT_V3_SPANS", (FAILING_SPAN, 0.5, 1.0))
    with pytest.warns(UserWarning, match=r"loess fit is singular.*used the span 0\.5"):
        chosen = select_genes(log_normalize(counts.X), counts.var_names, 100, "seurat_v3", counts.X)
    assert chosen.flavor == "seurat_v3" and chosen.span == 0.5
    assert chosen.describe() == "seurat_v3 (loess span 0.5)"
    assert chosen.genes == _hvg(counts, 0.5)


def test_cell_ranger_ranks_the_genes_when_every_span_fails(counts, monkeypatch):
    monkeypatch.setattr(data._preprocessing, "SEURAT_V3_SPANS", (0.01, FAILING_SPAN))
    with pytest.warns(UserWarning, match="used the 'cell_ranger' ranking") as record:
        chosen = select_genes(log_normalize(counts.X), counts.var_names, 100, "seurat_v3", counts.X)
    assert len(record) == 1  # one warning for the whole story
    assert chosen.flavor == "cell_ranger" and chosen.span is None
    direct = select_genes(log_normalize(counts.X), counts.var_names, 100, "cell_ranger")
    assert chosen.genes == direct.genes


def test_the_model_trains_and_records_the_ranking_it_used(counts, monkeypatch, tmp_path):
    monkeypatch.setattr(data._preprocessing, "SEURAT_V3_SPANS", (FAILING_SPAN, 0.5, 1.0))
    SCBiGNN.setup_anndata(counts, labels_key="labels", unlabeled_category="Unknown")
    with pytest.warns(UserWarning, match="loess"):
        model = SCBiGNN(counts, n_top_genes=100, n_features=16, n_hidden=16, gene_layers=1)
    assert model.gene_selection_ == "seurat_v3 (loess span 0.5)"
    assert "seurat_v3 (loess span 0.5)" in model.summary_string
    model.train(n_em_iterations=1, pretrain_epochs=2, q_epochs=1, p_epochs=10, progress_bar=False)
    model.save(tmp_path / "m")
    assert SCBiGNN.load(tmp_path / "m").gene_selection_ == "seurat_v3 (loess span 0.5)"


def test_the_default_span_is_unchanged_and_silent(counts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = select_genes(log_normalize(counts.X), counts.var_names, 100, "seurat_v3", counts.X)
    assert chosen.span == 0.3 and chosen.genes == _hvg(counts, 0.3)


@pytest.mark.parametrize(
    ("n_cells", "n_top", "match"),
    [(1, 100, "at least 2 cells"), (240, 0, "n_top_genes must be at least 1")],
)
def test_impossible_selection_says_why(counts, n_cells, n_top, match):
    sub = counts[:n_cells]
    with pytest.raises(ValueError, match=match):
        select_genes(log_normalize(sub.X), sub.var_names, n_top, "seurat_v3", sub.X)

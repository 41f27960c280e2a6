from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from scbignn_tools import pl
from scbignn_tools.model import SCBiGNN
from scbignn_tools.train import expected_calibration_error

matplotlib.use("Agg")

FAST = {"n_em_iterations": 2, "pretrain_epochs": 3, "q_epochs": 2, "p_epochs": 10}
SMALL = {"n_top_genes": 100, "n_features": 16, "n_hidden": 16, "gene_layers": 1, "n_neighbors": 5}


@pytest.fixture
def annotated(tiny):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    model.train(validation_size=0.2, progress_bar=False, **FAST)
    model.annotate()
    return model, tiny


def test_em_history_draws_every_epoch_and_m_step(annotated):
    model, _ = annotated
    loss_ax, acc_ax = pl.em_history(model, show=False)
    n_q = int((model.history_.model == "q").sum())
    for ax, column in ((loss_ax, "train_loss"), (acc_ax, "validation_accuracy")):
        q_line, p_points = ax.get_lines()[:2]
        assert len(q_line.get_xdata()) == n_q
        assert len(p_points.get_xdata()) == FAST["n_em_iterations"]
        p_end = model.history_[model.history_.model == "p"].groupby("em_iteration").tail(1)
        np.testing.assert_allclose(p_points.get_ydata(), p_end[column])
    _, ax = plt.subplots()
    (drawn,) = pl.em_history(model, ax=ax, show=False)  # one axes given: the accuracy
    assert drawn is ax and ax.get_ylabel() == "held-out accuracy"


def test_em_history_without_validation_draws_the_loss_only(tiny):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    with pytest.raises(RuntimeError, match="train"):
        pl.em_history(model, show=False)
    model.train(validation_size=0, progress_bar=False, **{**FAST, "n_em_iterations": 1})
    (ax,) = pl.em_history(model, show=False)
    assert ax.get_ylabel() == "training loss"


def test_reliability_matches_the_labelled_cells(annotated):
    _, adata = annotated
    ax = pl.reliability(adata, "cell_type", n_bins=5, show=False)
    classes = list(adata.uns["scbignn"]["classes"])
    codes = pd.Index(classes).get_indexer(adata.obs["cell_type"])
    probs = adata.obsm["scbignn_probabilities"]
    conf, acc = probs.max(1), probs.argmax(1) == codes
    line = ax.get_lines()[1]
    first = conf < 0.2 * (np.floor(conf.min() * 5) + 1)  # the lowest non-empty bin
    assert line.get_xdata()[0] == pytest.approx(conf[first].mean())
    assert line.get_ydata()[0] == pytest.approx(acc[first].mean())
    assert sum(int(t.get_text()) for t in ax.texts) == adata.n_obs  # cells per bin
    ece = expected_calibration_error(probs, codes, 5)
    assert ax.get_title() == f"ECE {ece:.3f} on {adata.n_obs} cells"
    with pytest.raises(KeyError, match="true cell types"):
        pl.reliability(adata, "missing", show=False)
    with pytest.raises(KeyError, match="annotate"):
        pl.reliability(adata, "cell_type", key="other", show=False)


def test_gene_importance_shows_each_types_top_genes(annotated):
    _, adata = annotated
    genes = pl.top_genes(adata, n_genes=3)
    table = pd.DataFrame(
        adata.varm["scbignn_importance"],
        index=adata.var_names,
        columns=adata.uns["scbignn"]["classes"],
    )
    predicted = set(adata.obs["scbignn"]) - {"Unknown"}
    assert set(genes) == predicted
    for cell_type, top in genes.items():
        assert top == table[cell_type].nlargest(3).index.tolist()
        assert table.loc[top, cell_type].min() >= table[cell_type].drop(top).max()
    # a label with no cell (as "Unknown" when nothing is rejected) must not break the plot
    adata.obs["scbignn"] = adata.obs["scbignn"].cat.add_categories(["no cell"])
    axes = pl.gene_importance(adata, n_genes=3, show=False)
    rows = [t.get_text() for t in axes["mainplot_ax"].get_yticklabels()]
    assert sorted(rows) == sorted(set(adata.obs["scbignn"]))
    del adata.varm["scbignn_importance"]
    with pytest.raises(KeyError, match="gene_importance=True"):
        pl.top_genes(adata)


def test_plots_save_as_scanpy_does(annotated, tmp_path):
    import scanpy as sc

    model, adata = annotated
    figdir = sc.settings.figdir
    sc.settings.figdir = tmp_path
    try:
        pl.em_history(model, show=False, save="_tiny.pdf")
        pl.reliability(adata, "cell_type", show=False, save=True)
        pl.gene_importance(adata, show=False, save="_tiny.png")
    finally:
        sc.settings.figdir = figdir
    names = sorted(p.name for p in tmp_path.iterdir())
    ext = sc.settings.file_format_figs
    assert names == sorted(["em_history_tiny.pdf", f"reliability.{ext}", "dotplot__tiny.png"])
    assert all(p.stat().st_size > 1000 for p in tmp_path.iterdir())

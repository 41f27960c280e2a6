"""Bad input is refused before work starts, with a message that names the problem and the fix.

Each case is a row of ``docs/bad_input.md``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scbignn_tools.model import SCBiGNN

FAST = {"n_em_iterations": 1, "pretrain_epochs": 1, "q_epochs": 1, "p_epochs": 2}
SMALL = {"n_top_genes": 100, "n_features": 8, "n_hidden": 8, "gene_layers": 1, "n_neighbors": 5}


def test_unlabeled_category_spelled_otherwise_is_refused(tiny):
    tiny.obs["labels"] = tiny.obs["labels"].replace("Unknown", "unknown ")
    with pytest.raises(
        ValueError, match=r"No cell of obs\['labels'\] is 'Unknown', but \d+ are 'unknown '"
    ):
        SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="unknown ")
    assert "unknown " not in SCBiGNN(tiny, **SMALL).classes


def test_unlabeled_category_matching_no_cell_is_said(tiny):
    with pytest.warns(UserWarning, match="all 240 cells are labelled"):
        SCBiGNN.setup_anndata(tiny, labels_key="cell_type", unlabeled_category="Unknown")


def test_numeric_labels_with_a_text_unlabeled_category_are_refused(tiny):
    tiny.obs["codes"] = tiny.obs["cell_type"].astype("category").cat.codes.astype(int)
    with pytest.raises(ValueError, match=r"holds numbers.*astype\(str\)"):
        SCBiGNN.setup_anndata(tiny, labels_key="codes", unlabeled_category="Unknown")


def test_a_40_cell_reference_trains(baron):
    # seurat_v3's loess may be singular on so few cells: it is retried, then it trains
    cells = np.random.default_rng(0).choice(baron.n_obs, 40, replace=False)
    small = baron[cells].copy()
    small.obs["labels"] = small.obs["cell_type"].astype(str)
    with pytest.warns(UserWarning):  # all cells labelled (and maybe the loess retry)
        SCBiGNN.setup_anndata(small, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(small, n_top_genes=200, n_features=8, n_hidden=8)
    assert model.gene_selection_.startswith(("seurat_v3", "cell_ranger"))
    model.train(progress_bar=False, **FAST)
    assert model.predict().shape == (40,)


def test_query_labels_of_types_the_model_lacks_count_as_unlabelled(tiny, tmp_path):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    model.train(progress_bar=False, **FAST)
    query = tiny.copy()
    query.obs_names = [f"q{i}" for i in range(query.n_obs)]  # other cells to the model
    query.obs["labels"] = "acinar"  # a type the reference does not have
    with pytest.warns(UserWarning, match="types in obs.*that the model does not know"):
        qmodel = SCBiGNN.load_query_data(query, model)
    qmodel.train(progress_bar=False, **FAST)  # transductive: the query cells are unlabelled
    assert (qmodel.reference_.labels[-query.n_obs :] == -1).all()


def test_folders_that_hold_no_model_or_a_newer_one_are_refused(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        SCBiGNN.load(tmp_path)
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    model.train(progress_bar=False, **FAST)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer than this scbignn-tools.*upgrade"):
        SCBiGNN.load(tmp_path / "m")
    with pytest.raises(ValueError, match="reference_cells must be"):
        model.save(tmp_path / "n", reference_cells="some")

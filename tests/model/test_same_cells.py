"""Same cells, same answer: names, copies and the caller's objects do not change annotations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scbignn_tools.model import SCBiGNN

FAST = {
    "n_em_iterations": 1,
    "pretrain_epochs": 15,
    "q_epochs": 2,
    "p_epochs": 30,
    "progress_bar": False,
}
SMALL = {"n_top_genes": 200, "n_features": 16, "n_hidden": 16, "gene_layers": 1, "n_neighbors": 5}
QUIET = {"gene_importance": False, "unknown_threshold": None, "novelty_threshold": None}


def _default_names(adata):
    """The names ``AnnData(X)`` or ``reset_index`` give: '0' to 'n-1'."""
    adata.obs_names = [str(i) for i in range(adata.n_obs)]
    return adata


@pytest.fixture
def split(tiny):
    # two halves of the same size, so both are named '0'..'n-1' alike
    order = np.random.default_rng(1).permutation(tiny.n_obs)
    half = tiny.n_obs // 2
    ref = _default_names(tiny[np.sort(order[:half])].copy())
    ref.obs["labels"] = ref.obs["cell_type"]  # fully labelled reference
    query = _default_names(tiny[np.sort(order[half : 2 * half])].copy())
    del query.obs["labels"]
    return ref, query


@pytest.fixture
def reference(split, tmp_path):
    ref, _ = split
    SCBiGNN.setup_anndata(ref, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(ref, **SMALL)
    model.train(validation_size=0.2, **FAST)
    model.save(tmp_path / "ref")
    return model, tmp_path / "ref"


def _snapshot(adata) -> dict:
    X = adata.X
    return {
        "X": (X.data.copy(), X.indices.copy(), X.indptr.copy(), X.shape),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "uns": sorted(adata.uns),
        "obsm": sorted(adata.obsm),
        "layers": sorted(adata.layers),
    }


def _assert_unchanged(adata, before: dict) -> None:
    X = adata.X
    assert sparse.issparse(X) and X.shape == before["X"][3]
    for got, want in zip((X.data, X.indices, X.indptr), before["X"][:3], strict=True):
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(adata.obs, before["obs"])
    pd.testing.assert_frame_equal(adata.var, before["var"])
    assert sorted(adata.uns) == before["uns"] and sorted(adata.obsm) == before["obsm"]
    assert sorted(adata.layers) == before["layers"]


def test_query_cells_named_like_reference_cells_are_read_from_their_own_expression(
    split, reference
):
    # both sides named '0'..'n-1', different cells: the names must not decide
    model, path = reference
    _, query = split
    truth = query.obs["cell_type"].to_numpy()
    renamed = query.copy()
    renamed.obs_names = [f"query{i}" for i in range(query.n_obs)]
    want = model.predict(renamed)
    np.testing.assert_array_equal(model.predict(query), want)
    from_disk = SCBiGNN.load_query_data(query, path)
    np.testing.assert_array_equal(from_disk.predict(), want)
    acc = np.mean(from_disk.predict() == truth)
    assert acc == np.mean(want == truth) and acc > 0.8
    # a reference cell passed as a query (same name, same expression) is recognised
    np.testing.assert_array_equal(model.predict(model.adata[:5].copy()), model.predict()[:5])


def test_predict_on_a_copy_equals_predict_on_the_original(tiny):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    model.train(**FAST)  # transductive: the unlabelled cells are in the graph
    original = model.predict(soft=True)
    np.testing.assert_array_equal(model.predict(model.adata.copy(), soft=True), original)
    shuffled = model.adata[::-1].copy()
    np.testing.assert_array_equal(
        model.predict(shuffled, soft=True).to_numpy(), original.to_numpy()[::-1]
    )
    a = model.annotate(copy=True, gene_importance=False)
    model.annotate(gene_importance=False)
    for key in ("scbignn", "scbignn_confidence", "scbignn_novelty", "scbignn_q"):
        np.testing.assert_array_equal(tiny.obs[key].to_numpy(), a.obs[key].to_numpy())
    np.testing.assert_array_equal(
        tiny.obsm["scbignn_probabilities"], a.obsm["scbignn_probabilities"]
    )


def test_transductive_query_model_predicts_copies_alike(split, reference):
    _, query = split
    qmodel = SCBiGNN.load_query_data(query, reference[1])
    qmodel.train(**{**FAST, "pretrain_epochs": None})
    original = qmodel.predict(soft=True)
    np.testing.assert_array_equal(qmodel.predict(query.copy(), soft=True), original)


def test_query_helpers_leave_the_callers_anndata_as_it_was(split, reference):
    model, path = reference
    _, query = split
    partial = query[:, : int(query.n_vars * 0.8)].copy()  # some model genes missing
    for data in (query, partial):
        before = _snapshot(data)
        with pytest.warns(UserWarning) if data is partial else _no_warning():
            padded = SCBiGNN.prepare_query_anndata(data, path)
        assert padded is not data and list(padded.var_names) == list(model.adata.var_names)
        SCBiGNN.prepare_query_anndata(data, model)
        with pytest.warns(UserWarning) if data is partial else _no_warning():
            qmodel = SCBiGNN.load_query_data(data, path)
        SCBiGNN.load_query_data(data, model)
        _assert_unchanged(data, before)
        # ... and the query model annotates the caller's object itself
        assert qmodel.adata is data
        qmodel.annotate(**QUIET)
        assert "scbignn" in data.obs and data.obsm["X_scbignn"].shape[0] == data.n_obs
        np.testing.assert_array_equal(
            data.obs["scbignn"].astype(str).to_numpy(), model.predict(data)
        )


def test_load_query_data_from_memory_equals_from_disk(split, reference):
    model, path = reference
    _, query = split
    a = SCBiGNN.load_query_data(query, model).predict(soft=True)
    b = SCBiGNN.load_query_data(query, path).predict(soft=True)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False

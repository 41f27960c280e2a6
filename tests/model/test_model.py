from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest

from scbignn_tools.model import SCBiGNN

FAST = {
    "n_em_iterations": 1,
    "pretrain_epochs": 2,
    "q_epochs": 1,
    "p_epochs": 10,
    "progress_bar": False,
}
SMALL = {"n_top_genes": 100, "n_features": 16, "n_hidden": 16, "gene_layers": 1, "n_neighbors": 5}


def _trained(adata, **kwargs):
    SCBiGNN.setup_anndata(adata, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(adata, **SMALL, **kwargs)
    model.train(**FAST)
    return model


def test_one_em_round_end_to_end(tiny):
    model = _trained(tiny)
    hist = model.history_
    assert list(
        hist.drop_duplicates(["stage", "model"])[["stage", "model"]].itertuples(
            index=False, name=None
        )
    ) == [("pretrain", "q"), ("M", "p"), ("E", "q")]
    assert hist["train_loss"].notna().all()
    assert hist["validation_accuracy"].dropna().between(0, 1).all()
    assert len(model.genes) == 100 and set(model.classes) == {
        "alpha",
        "beta",
        "ductal",
        "endothelial",
    }
    pred = model.predict()
    assert pred.shape == (tiny.n_obs,) and set(pred) <= set(model.classes)
    probs = model.predict(soft=True, model="q")
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert model.get_latent_representation().shape == (tiny.n_obs, 16)
    assert model.get_latent_representation(representation="h_prime").shape == (
        tiny.n_obs,
        16 + 16 + 3 * 16,
    )
    assert "SCBiGNN model with 100 genes" in model.summary_string


def test_annotate_writes_documented_keys_only(tiny, tmp_path):
    model = _trained(tiny)
    before = tiny.copy()
    out = model.annotate(copy=True)
    # copy=True leaves the registered AnnData alone
    assert set(tiny.obs.columns) == set(before.obs.columns) and list(tiny.obsm) == list(before.obsm)
    assert set(out.obs.columns) - set(before.obs.columns) == {
        "scbignn",
        "scbignn_confidence",
        "scbignn_novelty",
        "scbignn_q",
    }
    assert set(out.obsm) - set(before.obsm) == {"X_scbignn", "scbignn_probabilities"}
    assert list(out.varm) == ["scbignn_importance"]
    assert set(out.uns) - set(before.uns) == {"scbignn", "scbignn_colors"}
    # scanpy's plots colour "Unknown" light grey and every type alike in every plot
    colors = dict(zip(out.obs["scbignn"].cat.categories, out.uns["scbignn_colors"], strict=True))
    assert colors["Unknown"] == "#d3d3d3" and len(set(colors.values())) == len(colors)
    assert all(isinstance(c, str) and c.startswith("#") for c in colors.values())
    out.write_h5ad(tmp_path / "annotated.h5ad")  # colours an h5ad file can hold
    conf = out.obs["scbignn_confidence"].to_numpy()
    assert np.all((conf > 0) & (conf <= 1))
    imp = out.var["scbignn_importance"]
    assert imp.notna().sum() == 100 and (imp.dropna() >= 0).all()
    assert out.varm["scbignn_importance"].shape == (tiny.n_vars, 4)
    # probability columns follow uns["scbignn"]["classes"] and agree with the labels
    probs, classes = out.obsm["scbignn_probabilities"], out.uns["scbignn"]["classes"]
    known = out.obs["scbignn"] != "Unknown"
    assert probs.shape == (tiny.n_obs, 4) and known.any()
    assert (np.asarray(classes)[probs.argmax(1)][known] == out.obs["scbignn"][known]).all()
    # the overall importance is the model's, over all cells
    direct = model.get_gene_importance()
    np.testing.assert_allclose(
        imp.dropna().sort_values().to_numpy(), np.sort(direct.to_numpy()), rtol=1e-6
    )
    assert model.annotate(tiny, key_added="ann") is None and "ann" in tiny.obs


def test_gene_importance_per_cell_type(tiny):
    model = _trained(tiny)
    table = model.get_gene_importance(groupby="cell_type")
    assert table.shape == (100, 4)
    assert (table.sum() > 0).all()


def test_same_seed_same_predictions_and_save_load(tiny, tmp_path):
    a = _trained(tiny.copy(), seed=3)
    b = _trained(tiny.copy(), seed=3)
    np.testing.assert_array_equal(a.predict(soft=True).to_numpy(), b.predict(soft=True).to_numpy())
    a.save(tmp_path / "m")
    loaded = SCBiGNN.load(tmp_path / "m", adata=tiny)
    assert loaded.genes == a.genes
    np.testing.assert_array_equal(loaded.predict(), a.predict())
    np.testing.assert_array_equal(
        loaded.predict(soft=True).to_numpy(), a.predict(soft=True).to_numpy()
    )
    pd.testing.assert_frame_equal(loaded.history_, a.history_)


@pytest.mark.parametrize("cell_graph", ["expression", "q"])
def test_cell_graph_space(tiny, cell_graph):
    model = _trained(tiny, cell_graph=cell_graph)
    ref = model.reference_
    if cell_graph == "q":  # the paper: the graph of q_phi's h
        assert ref.basis is None and ref.coords is ref.h
    else:  # principal components of the standardised expression, kept for query cells
        assert ref.basis[1].shape == (50, 100) and ref.coords.shape == (tiny.n_obs, 50)
    # a query cell identical to a reference cell is linked to that cell's neighbours
    query = tiny[:5].copy()
    query.obs_names = [f"query{i}" for i in range(5)]
    np.testing.assert_allclose(
        model.predict(query, soft=True).to_numpy(),
        model.predict(soft=True).to_numpy()[:5],
        atol=0.05,
    )
    with pytest.raises(ValueError, match="cell_graph must be"):
        SCBiGNN(tiny, **SMALL, cell_graph="pca")


def test_predicts_new_data_with_reordered_genes(tiny):
    model = _trained(tiny)
    query = tiny[:60, ::-1].copy()
    np.testing.assert_array_equal(model.predict(query, model="q"), model.predict(model="q")[:60])


def test_mudata(tiny):
    mdata = md.MuData({"rna": tiny})
    SCBiGNN.setup_mudata(
        mdata, labels_key="labels", unlabeled_category="Unknown", modalities={"rna_layer": "rna"}
    )
    model = SCBiGNN(mdata, **SMALL)
    model.train(**FAST)
    model.annotate(gene_importance=False)
    assert "scbignn" in mdata["rna"].obs


def test_lognormalised_input(tiny):
    import scanpy as sc

    sc.pp.normalize_total(tiny, target_sum=1e4)
    sc.pp.log1p(tiny)
    with pytest.raises(ValueError, match="data_format='log1p'"):
        SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    SCBiGNN.setup_anndata(
        tiny, labels_key="labels", unlabeled_category="Unknown", data_format="log1p"
    )
    SCBiGNN(tiny, **SMALL).train(**FAST)


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda a: a.obs.drop(columns="labels", inplace=True), KeyError, "labels_key 'labels'"),
        (lambda a: a.obs.__setitem__("labels", "Unknown"), ValueError, "No labelled cells"),
        (
            lambda a: a.obs.__setitem__(
                "labels", np.where(a.obs.labels == "Unknown", "Unknown", "beta")
            ),
            ValueError,
            "at least two",
        ),
        (
            lambda a: a.obs.__setitem__(
                "labels", a.obs.labels.where(a.obs.labels != "alpha", None)
            ),
            ValueError,
            "missing values",
        ),
        (lambda a: a.X.data.__setitem__(0, np.nan), ValueError, "NaN"),
        (lambda a: a.X.data.__setitem__(0, -3), ValueError, "negative"),
        (lambda a: a.X.data.__setitem__(0, 0.5), ValueError, "not raw counts"),
    ],
)
def test_bad_input_raises_clear_error(tiny, edit, error, match):
    edit(tiny)
    with pytest.raises(error, match=match):
        SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
        SCBiGNN(tiny, **SMALL).train(**FAST)


def test_inherited_methods_that_do_not_apply_say_what_to_use(tiny):
    model = _trained(tiny)
    with pytest.raises(NotImplementedError, match="get_latent_representation"):
        model.get_normalized_expression()
    with pytest.raises(NotImplementedError, match="get_gene_importance"):
        model.differential_abundance()

"""Baseline annotators shared by the benchmark scripts.

Every baseline takes the labelled reference cells and the cells to annotate and returns the
predicted labels of the latter. Settings are the ones written beside each benchmark table.
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import scanpy as sc
import torch
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from scbignn_tools.data import log_normalize, select_genes
from scbignn_tools.graph import knn_graph


def model_features(adata: ad.AnnData, flavor: str = "seurat_v3", n_top_genes: int = 2000):
    """Dense log-normalised expression of the genes the model would choose, and their names.

    The package's own :func:`~scbignn_tools.data.log_normalize` (the paper's
    log(1 + 1e6 x / rowsum)) and :func:`~scbignn_tools.data.select_genes`: ``"seurat_v3"`` with
    2,000 genes is the model's default, ``"variance"`` with 1,000 the paper's section 2.
    """
    lognorm = log_normalize(adata.X)
    counts = adata.X if flavor == "seurat_v3" else None
    genes = select_genes(lognorm, adata.var_names, n_top_genes, flavor, counts).genes
    return lognorm[:, adata.var_names.get_indexer(genes)].toarray(), genes


def expression_pcs(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standardised (clipped at ±10) expression and its 50 principal components."""
    x = StandardScaler().fit_transform(x).clip(-10, 10).astype(np.float32)
    return x, PCA(50, random_state=seed).fit_transform(x)


def linear_svm(x_train, y_train, x_test, seed: int = 0):
    """Linear SVM (scikit-learn ``LinearSVC``, C=1, dual solver) on standardised features.

    The dual solver: scikit-learn's ``dual="auto"`` picks the primal one when there are more
    cells than genes, which did not finish one PBMC3k fold in 10 minutes.
    """
    svc = LinearSVC(C=1.0, dual=True, random_state=seed, max_iter=5000)
    clf = make_pipeline(StandardScaler(), svc)
    return clf.fit(x_train, y_train).predict(x_test)


def logistic_regression(x_train, y_train, x_test, seed: int = 0):
    """Multinomial logistic regression (C=1, lbfgs) on standardised features."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return clf.fit(x_train, y_train).predict(x_test)


def random_forest(x_train, y_train, x_test, seed: int = 0):
    """Random forest, 100 trees, on log-normalised features."""
    clf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=seed)
    return clf.fit(x_train, y_train).predict(x_test)


def nearest_mean(x_train, y_train, x_test, seed: int = 0):
    """Nearest mean (centroid) classifier on log-normalised features."""
    return NearestCentroid().fit(x_train, y_train).predict(x_test)


def actinn_mlp(x_train, y_train, x_test, seed: int = 0):
    """ACTINN's network (100-50-25 ReLU, L2 0.005, Adam, minibatch 128) with scikit-learn.

    ACTINN trains 50 epochs at learning rate 1e-4 with decay; here 50 epochs at 1e-3 with
    early stopping on 10% of the training cells, on standardised log-normalised features.
    """
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(100, 50, 25),
            alpha=0.005,
            batch_size=128,
            learning_rate_init=1e-3,
            max_iter=50,
            early_stopping=True,
            random_state=seed,
        ),
    )
    return clf.fit(x_train, y_train).predict(x_test)


def gcn_c(x_all, y_all, train_idx, test_idx, seed: int = 0, n_neighbors: int = 10):
    """GCN-C of Li et al. (the paper's reference 13): a 2-layer GCN on a PCA kNN graph.

    The graph links every cell to its ``n_neighbors`` nearest cells in 50 principal components
    of the standardised log-normalised expression (symmetrised, self-loops, symmetric
    normalisation). Node features are the standardised expression; 64 hidden units, dropout 0.5,
    Adam at 0.01 with weight decay 5e-4, 200 full-graph epochs on the labelled cells.
    """
    torch.manual_seed(seed)
    x, pcs = expression_pcs(x_all, seed)
    adj = knn_graph(pcs, n_neighbors, "exact")
    adj = ((adj + adj.T) > 0).astype(np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    norm = sparse.diags(deg**-0.5) @ adj @ sparse.diags(deg**-0.5)
    coo = sparse.coo_matrix(norm)
    a = torch.sparse_coo_tensor(
        np.vstack([coo.row, coo.col]), coo.data.astype(np.float32), coo.shape
    ).coalesce()
    classes, codes = np.unique(y_all[train_idx], return_inverse=True)
    xt, y, tr = torch.from_numpy(x), torch.from_numpy(codes), torch.from_numpy(train_idx)
    lin1, lin2 = torch.nn.Linear(x.shape[1], 64), torch.nn.Linear(64, len(classes))
    params = [*lin1.parameters(), *lin2.parameters()]
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)
    drop = torch.nn.functional.dropout

    def forward(training: bool) -> torch.Tensor:
        hidden = torch.relu(torch.sparse.mm(a, lin1(drop(xt, 0.5, training))))
        return torch.sparse.mm(a, lin2(drop(hidden, 0.5, training)))

    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(forward(True)[tr], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return classes[forward(False)[torch.from_numpy(test_idx)].argmax(1).numpy()]


class OvRLogisticRegression(LogisticRegression):
    """CellTypist's one-vs-rest logistic regression for scikit-learn >= 1.8.

    CellTypist 1.7.1 builds ``LogisticRegression(multi_class="ovr")``; scikit-learn 1.8 removed
    the argument. This fits one binary logistic regression per class, as "ovr" did, and keeps
    the ``coef_``/``intercept_`` attributes that CellTypist reads and writes.
    """

    def __init__(self, C=1.0, solver="lbfgs", max_iter=1000, multi_class="ovr", n_jobs=None):
        super().__init__(C=C, solver=solver, max_iter=max_iter, n_jobs=n_jobs)
        self.multi_class = multi_class

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.unique(y)
        fits = [
            LogisticRegression(C=self.C, solver=self.solver, max_iter=self.max_iter).fit(
                X, y == c, sample_weight=sample_weight
            )
            for c in self.classes_
        ]
        self.coef_ = np.vstack([f.coef_ for f in fits])
        self.intercept_ = np.concatenate([f.intercept_ for f in fits])
        self.n_features_in_ = X.shape[1]
        return self


def celltypist_predict(ref: ad.AnnData, query: ad.AnnData, labels_key: str):
    """CellTypist 1.7.1 with its own normalisation (log1p of counts per 10,000), all genes.

    ``celltypist.train(feature_selection=False, max_iter=1000)`` and
    ``celltypist.annotate(majority_voting=False)``; one-vs-rest through
    :class:`OvRLogisticRegression`.
    """
    import celltypist

    sys.modules["celltypist.train"].LogisticRegression = OvRLogisticRegression
    r, q = ref.copy(), query.copy()
    for a in (r, q):
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    model = celltypist.train(r, labels=labels_key, n_jobs=1, feature_selection=False, max_iter=1000)
    out = celltypist.annotate(q, model=model, majority_voting=False).predicted_labels
    return out["predicted_labels"].astype(str).to_numpy()


def scanvi_predict(
    adata: ad.AnnData,
    labels: np.ndarray,
    unlabelled: np.ndarray,
    scvi_epochs: int = 100,
    scanvi_epochs: int = 20,
    seed: int = 0,
    n_samples_per_label: int | None = None,
):
    """scANVI with the ``unlabelled`` cells' labels hidden; returns their predicted labels.

    2,000 seurat_v3 genes on the counts of all cells, scVI defaults, ``scvi_epochs`` of scVI
    then ``scanvi_epochs`` of scANVI. ``n_samples_per_label=None`` is scvi-tools' default (the
    classifier sees every labelled cell); an integer samples that many labelled cells per type.
    """
    import scvi

    scvi.settings.seed = seed
    labels = np.asarray(labels, dtype=object).copy()
    labels[unlabelled] = "Unknown"
    both = ad.AnnData(adata.X.copy(), obs={"scanvi_labels": labels})
    both.var_names = adata.var_names
    genes = select_genes(log_normalize(both.X), both.var_names, 2000, "seurat_v3", both.X).genes
    both = both[:, genes].copy()
    scvi.model.SCVI.setup_anndata(both)
    vae = scvi.model.SCVI(both)
    vae.train(max_epochs=scvi_epochs, enable_progress_bar=False)
    lvae = scvi.model.SCANVI.from_scvi_model(
        vae, unlabeled_category="Unknown", labels_key="scanvi_labels"
    )
    lvae.train(
        max_epochs=scanvi_epochs,
        n_samples_per_label=n_samples_per_label,
        enable_progress_bar=False,
    )
    return np.asarray(lvae.predict(both[unlabelled])).astype(str)

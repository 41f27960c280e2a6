"""The paper's Figures 1, 2B and 2C, regenerated on fold 0 of the cross-validation protocol.

Regenerate (about 10 minutes on 2 cores)::

    .venv/bin/python benchmarks/figures.py --out docs/_static/figures

- Figure 1: accuracy of q_phi (every epoch) and p_theta (end of every M-step) on 10% of the
  labelled cells held out for validation, over pre-training and the EM iterations.
- Figure 2B: p_theta's (and q_phi's) accuracy on the held-out fold against k of p_theta's kNN
  graph (of the expression, the model's default ``cell_graph``).
- Figure 2C: homophily (share of edges joining two cells of one type) of the kNN graph built
  from q_phi's h against the model's graph of the expression (50 principal components of its
  standardised genes), over all edges and over edges leaving held-out cells.

Writes ``figure1_convergence.png``, ``figure2b_k.png``, ``figure2c_homophily.png`` and the
numbers behind them as CSV files into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold

from scbignn_tools.graph import homophily, knn_graph
from scbignn_tools.model import SCBiGNN
from scbignn_tools.pl import em_history

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KEY = "cell_type"


def fold0(adata: ad.AnnData) -> tuple[ad.AnnData, np.ndarray, np.ndarray]:
    """The data with fold 0's labels hidden, the true labels and fold 0's indices."""
    y = adata.obs[KEY].astype(str).to_numpy()
    _, test = next(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y))
    adata = adata.copy()
    adata.obs["train_labels"] = y
    adata.obs.iloc[test, adata.obs.columns.get_loc("train_labels")] = "Unknown"
    SCBiGNN.setup_anndata(adata, labels_key="train_labels", unlabeled_category="Unknown")
    return adata, y, test


def convergence(adata, out: Path, train_kwargs: dict) -> None:
    """Figure 1 from :attr:`SCBiGNN.history_` (validation accuracy of q and p)."""
    model = SCBiGNN(adata)
    model.train(progress_bar=False, **{"validation_size": 0.1, **train_kwargs})
    hist = model.history_.dropna(subset=["validation_accuracy"])
    hist.to_csv(out / "figure1_convergence.csv", index=False)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    em_history(model, ax=ax, show=False)
    ax.set_title("Figure 1: EM convergence")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figure1_convergence.png", dpi=150)


def k_sweep(adata, y, test, ks, out: Path, train_kwargs: dict, name: str) -> pd.DataFrame:
    """Figure 2B and the data of 2C: one model per k, accuracy and graph homophily."""
    rows = []
    for k in ks:
        model = SCBiGNN(adata, n_neighbors=k)
        model.train(progress_bar=False, **{"validation_size": 0.0, **train_kwargs})
        pcs = model.reference_.coords  # the expression PCs p_theta's graph is built on
        h = model.get_latent_representation()
        accuracy = {
            f"{m}_accuracy": accuracy_score(y[test], model.predict(model=m[0])[test])
            for m in ("p_theta", "q_phi")
        }
        graphs = {"q_phi's h": knn_graph(h, k), "normalised expression": knn_graph(pcs, k)}
        for source, adj in graphs.items():
            rows.append(
                {
                    "dataset": name,
                    "k": k,
                    "graph": source,
                    "homophily_all_edges": homophily(adj, y),
                    "homophily_held_out_edges": homophily(adj, y, test),
                    **accuracy,
                }
            )
        print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def plot_k(table: pd.DataFrame, out: Path) -> None:
    """Figures 2B and 2C."""
    acc = table[table.graph == "q_phi's h"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, t in acc.groupby("dataset"):
        ax.plot(t.k, t.p_theta_accuracy, "o-", label=f"{name}: p_theta")
        ax.plot(t.k, t.q_phi_accuracy, "s--", label=f"{name}: q_phi")
    ax.set_xlabel("k of p_theta's kNN graph (expression)")
    ax.set_ylabel("p_theta accuracy (held-out fold)")
    ax.set_title("Figure 2B: accuracy against k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figure2b_k.png", dpi=150)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, col, title in zip(
        axes,
        ("homophily_all_edges", "homophily_held_out_edges"),
        ("all edges", "edges of held-out cells"),
        strict=True,
    ):
        for (name, source), t in table.groupby(["dataset", "graph"]):
            ax.plot(
                t.k, t[col], "o-" if source == "q_phi's h" else "s--", label=f"{name}: {source}"
            )
        ax.set_xlabel("k")
        ax.set_title(title)
    axes[0].set_ylabel("homophily ratio")
    axes[1].legend(fontsize=7)
    fig.suptitle("Figure 2C: homophily of the kNN graph")
    fig.tight_layout()
    fig.savefig(out / "figure2c_homophily.png", dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("SCBIGNN_DATA", "../shared/data"))
    parser.add_argument("--datasets", default="baron_mouse,pbmc3k_seurat")
    parser.add_argument("--ks", default="3,5,10,20,30")
    parser.add_argument("--train-kwargs", default="{}", help="JSON for SCBiGNN.train(...)")
    parser.add_argument("--out", default="docs/_static/figures")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_kwargs = json.loads(args.train_kwargs)
    ks = [int(k) for k in args.ks.split(",")]
    tables = []
    for i, name in enumerate(args.datasets.split(",")):
        adata, y, test = fold0(ad.read_h5ad(Path(args.data_dir) / f"{name}.h5ad"))
        if i == 0:
            convergence(adata, out, train_kwargs)
        tables.append(k_sweep(adata, y, test, ks, out, train_kwargs, name))
    table = pd.concat(tables)
    table.to_csv(out / "figure2_k_homophily.csv", index=False)
    plot_k(table, out)


if __name__ == "__main__":
    main()

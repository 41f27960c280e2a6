"""Reference-to-query annotation on Kang 2018 PBMC: train on CTRL cells, annotate STIM cells.

Regenerate (about 36 minutes on 2 cores)::

    .venv/bin/pip install -e ".[benchmark]"
    .venv/bin/python benchmarks/query_kang.py --out benchmarks/results

``--update`` keeps the rows of the methods not run from the tables already in ``--out``
(``--methods scanvi --held-out '' --update`` reruns scANVI alone). ``--train-kwargs
'{"class_balance": 0}'`` trains scBiGNN with other settings (written in the
table); with ``--methods scbignn --held-out ''`` only its rows are computed.

Writes ``kang_query.csv`` and ``kang_query.md`` (accuracy, macro-F1, wall time and peak memory
per method) and ``kang_held_out_type.csv`` and ``.md`` (a type left out of the reference: how
many of its cells are flagged Unknown) into ``--out``. ``--methods ""`` runs only the latter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import anndata as ad
import baselines
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from scbignn_tools.model import SCBiGNN

KEY = "cell_type"


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def lognorm(adata: ad.AnnData) -> ad.AnnData:
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def run_scbignn(ref, query, train_kwargs: dict):
    t0 = time.perf_counter()
    SCBiGNN.setup_anndata(ref, labels_key="train_labels", unlabeled_category="Unknown")
    model = SCBiGNN(ref)
    model.train(progress_bar=False, **train_kwargs)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    qmodel = SCBiGNN.load_query_data(query, model)
    inductive = qmodel.predict(soft=True)
    t_ind = time.perf_counter() - t0
    inductive_q = qmodel.predict(soft=True, model="q")
    t0 = time.perf_counter()
    qmodel.train(progress_bar=False, **train_kwargs)
    transductive = qmodel.predict(soft=True)
    t_trans = time.perf_counter() - t0
    return model, {
        "scBiGNN inductive (p_theta)": (inductive, fit + t_ind),
        "scBiGNN inductive, q_phi alone": (inductive_q, fit + t_ind),
        "scBiGNN transductive (p_theta, EM on CTRL + STIM)": (transductive, fit + t_trans),
    }


def run_logreg(ref, query):
    t0 = time.perf_counter()
    r, q = lognorm(ref), lognorm(query)
    sc.pp.highly_variable_genes(r, n_top_genes=2000, flavor="seurat")
    genes = r.var_names[r.var["highly_variable"]]
    scaler = StandardScaler().fit(r[:, genes].X.toarray())
    clf = LogisticRegression(max_iter=1000).fit(
        scaler.transform(r[:, genes].X.toarray()), ref.obs[KEY]
    )
    pred = clf.predict(scaler.transform(q[:, genes].X.toarray()))
    return pred, time.perf_counter() - t0


def run_celltypist(ref, query):
    t0 = time.perf_counter()
    pred = baselines.celltypist_predict(ref, query, KEY)
    return pred, time.perf_counter() - t0


def run_scanvi(ref, query, n_samples_per_label=None):
    t0 = time.perf_counter()
    both = ad.concat({"CTRL": ref, "STIM": query}, label="stim_set", index_unique=None)
    stim = np.flatnonzero(both.obs["stim_set"].to_numpy() == "STIM")  # labels never seen
    labels = np.concatenate([ref.obs[KEY].astype(str), np.full(query.n_obs, "Unknown")])
    pred = baselines.scanvi_predict(both, labels, stim, n_samples_per_label=n_samples_per_label)
    return pred, time.perf_counter() - t0


def held_out_type(ctrl, stim, cell_type: str, train_kwargs: dict) -> tuple[pd.DataFrame, dict]:
    """Train without one type, annotate STIM: that type flagged Unknown against known types rejected.

    Each rule of ``SCBiGNN.annotate`` alone (confidence below a threshold, novelty above one) and
    the default (either); also the AUROC of each score for telling the left-out type apart.
    """
    ref = ctrl[ctrl.obs[KEY] != cell_type].copy()
    ref.obs["train_labels"] = ref.obs[KEY].astype(str)
    SCBiGNN.setup_anndata(ref, labels_key="train_labels", unlabeled_category="Unknown")
    model = SCBiGNN(ref)
    model.train(progress_bar=False, **train_kwargs)
    qmodel = SCBiGNN.load_query_data(stim, model)
    novel = stim.obs[KEY].to_numpy() == cell_type

    def rejected(**thresholds):
        out = qmodel.annotate(gene_importance=False, copy=True, **thresholds)
        return out.obs["scbignn"].to_numpy() == "Unknown", out.obs

    rules = {
        f"confidence < {t}": {"novelty_threshold": None, "unknown_threshold": t}
        for t in (0.5, 0.7, 0.9)
    }
    rules |= {
        f"novelty > {t}": {"novelty_threshold": t, "unknown_threshold": None} for t in (0.99, 0.999)
    }
    rules["default: confidence < 0.5 or novelty > 0.999"] = {}
    rows = []
    for rule, kwargs in rules.items():
        flagged, obs = rejected(**kwargs)
        rows.append(
            {
                "held-out type": cell_type,
                "rule": rule,
                "held-out cells flagged Unknown": round(float(np.mean(flagged[novel])), 3),
                "known-type cells wrongly rejected": round(float(np.mean(flagged[~novel])), 3),
            }
        )
    auroc = {
        "confidence": roc_auc_score(novel, -obs["scbignn_confidence"].to_numpy()),
        "novelty": roc_auc_score(novel, obs["scbignn_novelty"].to_numpy()),
    }
    return pd.DataFrame(rows), auroc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=os.path.join(
            os.environ.get("SCBIGNN_DATA", "../shared/data"), "kang2018_ifnb_pbmc.h5ad"
        ),
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--methods", default="scbignn,logreg,celltypist,scanvi,scanvi_100")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other methods' rows of the kang_query table already in --out",
    )
    parser.add_argument(
        "--held-out", default="B", help="cell type left out of the reference ('' to skip)"
    )
    parser.add_argument(
        "--train-kwargs",
        default="",
        help="JSON of SCBiGNN.train arguments, e.g. '{\"class_balance\": 0}'",
    )
    args = parser.parse_args()
    train_kwargs = json.loads(args.train_kwargs) if args.train_kwargs else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    adata = ad.read_h5ad(args.data)
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    ctrl = adata[adata.obs["stim"] == "CTRL"].copy()
    stim = adata[adata.obs["stim"] == "STIM"].copy()
    truth = stim.obs[KEY].to_numpy()
    query = stim.copy()
    del query.obs[KEY]  # the query's labels are never seen
    ref = ctrl.copy()
    ref.obs["train_labels"] = ref.obs[KEY]

    rows = []

    def score(name, pred, seconds, note=""):
        pred = np.asarray(pred).astype(str)
        rows.append(
            {
                "method": name,
                "accuracy": round(accuracy_score(truth, pred), 4),
                "macro_F1": round(f1_score(truth, pred, average="macro"), 4),
                "wall_s": round(seconds, 1),
                "peak_rss_mb": peak_mb(),
                "settings": note,
            }
        )
        print(rows[-1], flush=True)
        partial = "kang_query.partial.csv" if args.update else "kang_query.csv"
        pd.DataFrame(rows).to_csv(out / partial, index=False)  # kept if a later step fails

    methods = [m for m in args.methods.split(",") if m]
    if "scbignn" in methods:
        model, results = run_scbignn(ref, query, train_kwargs)
        setting = f"train({args.train_kwargs})" if train_kwargs else "defaults"
        for name, (probs, secs) in results.items():
            score(name, probs.idxmax(axis=1), secs, f"{setting}; 2000 seurat_v3 genes of CTRL")
        cal = model.calibration_
    if "logreg" in methods:
        score(
            "logistic regression",
            *run_logreg(ctrl, query),
            "log1p CP10k, 2000 seurat HVGs of CTRL, scaled",
        )
    if "celltypist" in methods:
        score(
            "CellTypist 1.7.1",
            *run_celltypist(ctrl, query),
            "all genes, no majority voting; one-vs-rest via baselines.OvRLogisticRegression",
        )
    if "scanvi" in methods:
        score(
            "scANVI (STIM unlabelled)",
            *run_scanvi(ctrl, query),
            "2000 seurat_v3 HVGs; scVI 100 + scANVI 20 epochs; every labelled cell "
            "(scvi-tools' default)",
        )
    if "scanvi_100" in methods:
        score(
            "scANVI, 100 labelled cells per type (STIM unlabelled)",
            *run_scanvi(ctrl, query, n_samples_per_label=100),
            "2000 seurat_v3 HVGs; scVI 100 + scANVI 20 epochs; n_samples_per_label=100",
        )
    table = pd.DataFrame(rows)
    command = f"`python benchmarks/query_kang.py {shlex.join(sys.argv[1:])}`"
    header = f"Command: {command}."
    kept = []  # lines of the earlier table that stay true
    if args.update and (out / "kang_query.csv").exists():
        old = pd.read_csv(out / "kang_query.csv")
        old = old[~old["method"].isin(table["method"])]
        table = pd.concat([old, table], ignore_index=True)
        earlier = (out / "kang_query.md").read_text().splitlines()
        first = next((ln for ln in earlier if ln.startswith("Command:")), "")
        date = first.split("Date: ")[-1].split(".")[0] if "Date: " in first else "?"
        header = (
            f"{first.split('. Machine:')[0]} ({date}); rows of {', '.join(row['method'] for row in rows)} "
            f"updated by {command} on {datetime.date.today()}."
        )
        if "scbignn" not in methods:
            kept = [ln for ln in earlier if ln.startswith("Calibration of")]
    if methods:
        table.to_csv(out / "kang_query.csv", index=False)
        (out / "kang_query.partial.csv").unlink(missing_ok=True)

    lines = [
        "# Kang 2018 PBMC: train on CTRL, annotate STIM",
        "",
        f"{header} Machine: {os.cpu_count()} CPU cores, "
        f"{platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU. "
        f"Date: {datetime.date.today()}. CTRL: {ctrl.n_obs} cells, STIM: {stim.n_obs} cells, {len(set(truth))} types.",
        "",
        table.to_markdown(index=False),
    ]
    lines += [""] + kept if kept else []
    if "scbignn" in methods and cal.ece_p_after is not None:
        lines += [
            "",
            f"Calibration of p_theta (temperature {cal.temperature_p:.2f}, {cal.n_cells} held-out CTRL cells): "
            f"ECE {cal.ece_p_before:.3f} before, {cal.ece_p_after:.3f} after.",
        ]
    if methods:
        (out / "kang_query.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    if args.held_out:
        ho, auroc = held_out_type(ctrl, stim, args.held_out, train_kwargs)  # STIM stays unlabelled
        ho.to_csv(out / "kang_held_out_type.csv", index=False)
        text = [
            f"# Unknown-cell rejection: '{args.held_out}' left out of the CTRL reference",
            "",
            f"Command: `python benchmarks/query_kang.py {shlex.join(sys.argv[1:])}`. "
            f"Date: {datetime.date.today()}. The model is trained on CTRL without "
            f"'{args.held_out}' cells and annotates all STIM cells (inductive mode).",
            "",
            ho.to_markdown(index=False),
            "",
            f"AUROC for telling '{args.held_out}' cells from the others: confidence "
            f"{auroc['confidence']:.3f}, novelty {auroc['novelty']:.3f}.",
        ]
        (out / "kang_held_out_type.md").write_text("\n".join(text) + "\n")
        print("\n".join(text))


if __name__ == "__main__":
    main()

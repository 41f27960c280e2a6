"""The paper's evaluation (Table 2): stratified 5-fold cross-validation, held-out fold unlabelled.

Regenerate the full table (all three datasets, every method; about 2 to 3 hours on 2 cores)::

    .venv/bin/pip install -e ".[benchmark]"
    .venv/bin/python benchmarks/cross_validation.py --out benchmarks/results

Folds are ``StratifiedKFold(5, shuffle=True, random_state=0)`` over ``obs['cell_type']``. In
each fold every method sees the labels of four folds and annotates the fifth: scBiGNN and
scANVI see the fifth fold's cells without labels (transductive, the paper's setting), GCN-C
sees them in its graph, the other baselines never see them.

Each (dataset, method) runs in its own process, so that its peak memory is its own. Writes
``cv_folds.csv`` (one row per fold), ``cv_summary.csv`` and ``cv_summary.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import baselines
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split

KEY = "cell_type"
DATASETS = ("baron_mouse", "pbmc3k_seurat", "kang2018_ifnb_pbmc")
METHODS = (
    "scbignn",
    "svm",
    "svm_paper",
    "logreg",
    "rf",
    "nmc",
    "actinn",
    "gcn_c",
    "celltypist",
    "scanvi",
    "scanvi_100",
)
LABELS = {
    "svm": "linear SVM",
    "svm_paper": "linear SVM, paper's genes",
    "logreg": "logistic regression",
    "rf": "random forest",
    "nmc": "nearest mean",
    "actinn": "ACTINN-style MLP",
    "gcn_c": "GCN-C",
    "celltypist": "CellTypist",
    "scanvi": "scANVI",
    "scanvi_100": "scANVI, 100 labelled cells per type",
}


def load(path: Path, max_cells: int | None, seed: int = 0) -> ad.AnnData:
    """Read a dataset; with ``max_cells``, a stratified subsample (for quick checks)."""
    adata = ad.read_h5ad(path)
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    if max_cells and adata.n_obs > max_cells:
        keep, _ = train_test_split(
            np.arange(adata.n_obs),
            train_size=max_cells,
            stratify=adata.obs[KEY],
            random_state=seed,
        )
        adata = adata[np.sort(keep)].copy()
    return adata


def run_fold(method, adata, y, train, test, x, options) -> tuple[dict, float, float]:
    """Fit on ``train`` and annotate ``test``; returns predictions by row name and times."""
    t0 = time.perf_counter()
    if method == "scbignn":
        from scbignn_tools.model import SCBiGNN

        a = adata.copy()
        a.obs["train_labels"] = y
        a.obs.iloc[test, a.obs.columns.get_loc("train_labels")] = "Unknown"
        SCBiGNN.setup_anndata(a, labels_key="train_labels", unlabeled_category="Unknown")
        model = SCBiGNN(a, **options["model_kwargs"])
        model.train(progress_bar=False, **options["train_kwargs"])
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = {
            "scBiGNN p_theta": model.predict(model="p")[test],
            "scBiGNN q_phi": model.predict(model="q")[test],
        }
        return preds, fit, time.perf_counter() - t0
    if method == "celltypist":
        pred = baselines.celltypist_predict(adata[train], adata[test], KEY)
    elif method in ("scanvi", "scanvi_100"):
        per_label = 100 if method == "scanvi_100" else None  # None: scvi-tools' default, all
        pred = baselines.scanvi_predict(
            adata, y, test, *options["scanvi_epochs"], n_samples_per_label=per_label
        )
    elif method == "gcn_c":
        pred = baselines.gcn_c(x, y, train, test)
    else:
        fn = {
            "svm": baselines.linear_svm,
            "svm_paper": baselines.linear_svm,
            "logreg": baselines.logistic_regression,
            "rf": baselines.random_forest,
            "nmc": baselines.nearest_mean,
            "actinn": baselines.actinn_mlp,
        }[method]
        pred = fn(x[train], y[train], x[test])
    # these baselines fit and predict in one call: the time is reported as fit
    return {LABELS[method]: pred}, time.perf_counter() - t0, 0.0


def method_uses_features(method: str) -> bool:
    """Whether ``method`` takes the log-normalised model genes (not counts) as input."""
    return method not in ("scbignn", "celltypist", "scanvi", "scanvi_100")


def worker(args) -> None:
    """Run one method on all folds of one dataset; append JSON rows to ``args.raw``."""
    torch.set_num_threads(args.threads)
    adata = load(Path(args.data_dir) / f"{args.dataset}.h5ad", args.max_cells)
    y = adata.obs[KEY].to_numpy()
    x = None  # the genes are chosen on all cells, without labels, as the model does
    if method_uses_features(args.method):
        flavor, n = ("variance", 1000) if args.method == "svm_paper" else ("seurat_v3", 2000)
        x, _ = baselines.model_features(adata, flavor, n)
    options = {
        "model_kwargs": json.loads(args.model_kwargs),
        "train_kwargs": json.loads(args.train_kwargs),
        "scanvi_epochs": [int(e) for e in args.scanvi_epochs.split(",")],
    }
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    done = finished_folds(Path(args.raw)).get((args.dataset, args.method), set())
    for fold, (train, test) in enumerate(folds):
        if fold >= args.folds:
            break
        if fold in done:
            continue
        preds, fit, predict = run_fold(args.method, adata, y, train, test, x, options)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # so far
        rows = [
            {
                "dataset": args.dataset,
                "method": name,
                "fold": fold,
                "n_cells": adata.n_obs,
                "accuracy": accuracy_score(y[test], np.asarray(pred).astype(str)),
                "macro_f1": f1_score(y[test], np.asarray(pred).astype(str), average="macro"),
                "fit_s": fit,
                "predict_s": predict,
                "peak_rss_mb": round(peak),
            }
            for name, pred in preds.items()
        ]
        with open(args.raw, "a") as f:  # after every fold, so that --resume loses little
            f.writelines(json.dumps(row) + "\n" for row in rows)
        print(args.dataset, args.method, fold, f"{rows[0]['accuracy']:.4f}", flush=True)


def read_raw(raw: Path) -> pd.DataFrame:
    """Fold rows written so far to ``raw`` (a line cut short by a killed run is skipped)."""
    lines = raw.read_text().splitlines() if raw.exists() else []
    return pd.DataFrame([json.loads(line) for line in lines if line.rstrip().endswith("}")])


def finished_folds(raw: Path) -> dict[tuple[str, str], set[int]]:
    """Folds already in ``raw`` per (dataset, method key)."""
    keys = {label: key for key, label in LABELS.items()}
    done: dict[tuple[str, str], set[int]] = {}
    for r in read_raw(raw).itertuples():
        done.setdefault((r.dataset, keys.get(r.method, "scbignn")), set()).add(r.fold)
    return done


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds per dataset and method."""
    g = folds.groupby(["dataset", "method"], sort=False)
    out = g.agg(
        folds=("fold", "count"),
        accuracy=("accuracy", "mean"),
        accuracy_sd=("accuracy", "std"),
        macro_f1=("macro_f1", "mean"),
        macro_f1_sd=("macro_f1", "std"),
        fit_s=("fit_s", "mean"),
        predict_s=("predict_s", "mean"),
        peak_rss_mb=("peak_rss_mb", "max"),
    )
    return out.reset_index().round(4)


def markdown(summary: pd.DataFrame, header: str) -> str:
    """One Markdown table per dataset, best accuracy first; a method short of folds says so."""
    parts = [header]
    for dataset, table in summary.groupby("dataset", sort=False):
        table = table.sort_values("accuracy", ascending=False)
        n = table["folds"].max()
        lines = [
            f"\n### {dataset} ({n} folds)\n",
            "| method | accuracy | macro-F1 | fit s / fold | predict s / fold | peak MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in table.itertuples():
            method = r.method if r.folds == n else f"{r.method} ({r.folds} of {n} folds)"
            lines.append(
                f"| {method} | {r.accuracy:.3f} ± {r.accuracy_sd:.3f} "
                f"| {r.macro_f1:.3f} ± {r.macro_f1_sd:.3f} | {r.fit_s:.1f} | {r.predict_s:.1f} "
                f"| {r.peak_rss_mb:.0f} |"
            )
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("SCBIGNN_DATA", "../shared/data"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--folds", type=int, default=5, help="run only the first N of 5 folds")
    parser.add_argument("--max-cells", type=int, default=None, help="stratified subsample")
    parser.add_argument("--model-kwargs", default="{}", help="JSON for SCBiGNN(...)")
    parser.add_argument("--train-kwargs", default="{}", help="JSON for SCBiGNN.train(...)")
    parser.add_argument("--scanvi-epochs", default="100,20", help="scVI,scANVI epochs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--resume", action="store_true", help="keep the folds left in --out by a cut-off run"
    )
    parser.add_argument("--worker", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.dataset, args.method = args.worker
        worker(args)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "cv_raw.jsonl"
    if not args.resume:  # else keep the folds of an interrupted run
        raw.unlink(missing_ok=True)
    done = finished_folds(raw)
    start = time.perf_counter()
    passthrough = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k in ("data_dir", "folds", "model_kwargs", "train_kwargs", "scanvi_epochs", "threads")
        or (k == "max_cells" and v)
    ]
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}; choose from {', '.join(METHODS)}.")
    for dataset in args.datasets.split(","):
        for method in methods:
            if len({f for f in done.get((dataset, method), ()) if f < args.folds}) >= args.folds:
                continue
            cmd = [sys.executable, __file__, "--worker", dataset, method, f"--raw={raw}"]
            subprocess.run(cmd + passthrough, check=True)
            write_tables(raw, out, args, time.perf_counter() - start)  # partial results too
    write_tables(raw, out, args, time.perf_counter() - start)  # also when every fold was done
    raw.unlink()
    print((out / "cv_summary.md").read_text())


def write_tables(raw: Path, out: Path, args, total_s: float) -> None:
    """Per-fold CSV, summary CSV and summary Markdown from the rows written so far."""
    header = (
        f"Generated {datetime.date.today()} by `python benchmarks/cross_validation.py "
        + " ".join(sys.argv[1:])
        + f"` on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{args.threads} threads; total wall time {total_s / 60:.1f} min.\n\n"
        "Mean ± standard deviation over folds of StratifiedKFold(5, shuffle=True, "
        "random_state=0); the held-out fold is the unlabelled cells. Method settings: "
        "`benchmarks/baselines.py` and `docs/benchmarks.md`."
    )
    save_tables(read_raw(raw), out, header)


def save_tables(folds: pd.DataFrame, out: Path, header: str) -> None:
    """``cv_folds.csv``, ``cv_summary.csv`` and ``cv_summary.md`` of ``folds`` into ``out``."""
    folds.to_csv(out / "cv_folds.csv", index=False)
    summary = summarize(folds)
    summary.to_csv(out / "cv_summary.csv", index=False)
    (out / "cv_summary.md").write_text(markdown(summary, header))


if __name__ == "__main__":
    main()

"""Time and memory against the number of cells, on stress sets resampled from real Kang cells.

No labelled set larger than Kang 2018 (13,576 PBMCs) is reachable here, so larger sets are
**synthetic**: cells drawn with replacement from Kang, each one's counts thinned binomially
(every UMI kept with a probability drawn per cell from [0.6, 0.95]), so that no two cells are
identical while depths and type proportions stay realistic. They measure time and memory only;
accuracy claims rest on the real data (``cross_validation.py``). The 13.5k set is Kang itself.

Every size runs in a fresh process (its peak RSS is its own). 20% of the labels are hidden
(stratified); scBiGNN trains with ``--train-kwargs`` (defaults) and annotates the hidden cells;
logistic regression on the same genes is the floor. ``--peers`` also times scANVI (scVI 100 +
scANVI 20 epochs, all labelled cells) and CellTypist on the first size, in the same run.

    .venv/bin/python benchmarks/scale.py --sizes 13576,33000,66000,132000 --peers \
        --out benchmarks/results/scale

Writes ``scale.jsonl`` (a row per size and method) and ``scale.md``; prints each row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

KEY = "cell_type"
KANG = "kang2018_ifnb_pbmc.h5ad"


def resample(adata: ad.AnnData, n_cells: int, seed: int = 0) -> ad.AnnData:
    """``n_cells`` cells of ``adata``: all of them at its size, else drawn and thinned."""
    if n_cells == adata.n_obs:
        return adata.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(adata.n_obs, n_cells, replace=n_cells > adata.n_obs)
    x = sp.csr_matrix(adata.X[rows], dtype=np.float32)
    keep = rng.uniform(0.6, 0.95, n_cells)
    x.data = rng.binomial(x.data.astype(np.int64), np.repeat(keep, np.diff(x.indptr))).astype(
        np.float32
    )
    x.eliminate_zeros()
    out = ad.AnnData(x, obs=adata.obs.iloc[rows][[KEY]].reset_index(drop=True), var=adata.var)
    out.obs_names = [f"cell{i}" for i in range(n_cells)]
    out = out[np.asarray(out.X.sum(1)).ravel() > 0].copy()
    return out


def hidden_split(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of the 20% of cells whose labels are hidden (stratified)."""
    _, hidden = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=seed
    )
    return np.sort(hidden)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def scores(truth, pred) -> dict:
    return {
        "accuracy": round(accuracy_score(truth, pred), 4),
        "macro_f1": round(f1_score(truth, pred, average="macro"), 4),
    }


def run_scbignn(adata, hidden, train_kwargs) -> dict:
    from scbignn_tools.model import SCBiGNN

    truth = adata.obs[KEY].astype(str).to_numpy()
    labels = truth.copy()
    labels[hidden] = "Unknown"
    adata.obs["train_labels"] = labels
    t0, c0 = time.perf_counter(), cpu_s()
    SCBiGNN.setup_anndata(adata, labels_key="train_labels", unlabeled_category="Unknown")
    model = SCBiGNN(adata)
    model.train(progress_bar=False, **train_kwargs)
    train_wall, train_cpu = time.perf_counter() - t0, cpu_s() - c0
    history = model.history_
    pred = model.predict()[hidden]
    # inductive annotation of all cells from the trained model, with and without importance
    query = adata.copy()
    del query.obs["train_labels"]
    query.obs_names = [f"query{i}" for i in range(query.n_obs)]  # new cells to the model
    rates = {}
    # end to end: the query model, then the annotation. The first call also fills the model's
    # caches of its reference (p_theta's outputs, standardised expression, neighbour distances),
    # which every later call reuses; it is reported apart.
    for importance in ("first", True, False):
        t0 = time.perf_counter()
        qmodel = SCBiGNN.load_query_data(query, model)
        qmodel.annotate(gene_importance=bool(importance), copy=True)
        rates[importance] = query.n_obs / (time.perf_counter() - t0)
    return {
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu, 1),
        "epochs_q": int((history["model"] == "q").sum()),
        "steps_p": int((history["model"] == "p").sum()),
        "epochs_by_phase": " ".join(
            f"{stage}{it or ''}:{n}"
            for (stage, it), n in history.groupby(["stage", "em_iteration"], sort=False)
            .size()
            .items()
        ),
        "annotate_cells_per_s_first_call": round(rates["first"]),
        "annotate_cells_per_s": round(rates[True]),
        "annotate_cells_per_s_no_importance": round(rates[False]),
        **scores(truth[hidden], pred),
    }


def run_logreg(adata, hidden) -> dict:
    from sklearn.linear_model import LogisticRegression

    from scbignn_tools.data import log_normalize, select_genes

    truth = adata.obs[KEY].astype(str).to_numpy()
    t0, c0 = time.perf_counter(), cpu_s()
    x = log_normalize(adata.X)
    genes = select_genes(x, adata.var_names, 2000, "seurat_v3", adata.X).genes
    x = x[:, adata.var_names.get_indexer(genes)]
    train = np.setdiff1d(np.arange(adata.n_obs), hidden)
    clf = LogisticRegression(max_iter=1000).fit(x[train], truth[train])
    pred = clf.predict(x[hidden])
    return {
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "train_cpu_s": round(cpu_s() - c0, 1),
        **scores(truth[hidden], pred),
    }


def run_peer(method, adata, hidden) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import baselines

    truth = adata.obs[KEY].astype(str).to_numpy()
    t0, c0 = time.perf_counter(), cpu_s()
    if method == "scanvi":
        pred = baselines.scanvi_predict(adata, truth, hidden)
    else:
        train = np.setdiff1d(np.arange(adata.n_obs), hidden)
        pred = baselines.celltypist_predict(adata[train], adata[hidden], KEY)
    return {
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "train_cpu_s": round(cpu_s() - c0, 1),
        **scores(truth[hidden], pred),
    }


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    kang = ad.read_h5ad(Path(args.data_dir) / KANG)
    adata = resample(kang, args.size, seed=args.seed)
    del kang
    hidden = hidden_split(adata.obs[KEY].astype(str).to_numpy(), seed=args.seed)
    if args.method == "scbignn":
        row = run_scbignn(adata, hidden, json.loads(args.train_kwargs))
    elif args.method == "logreg":
        row = run_logreg(adata, hidden)
    else:
        row = run_peer(args.method, adata, hidden)
    row = {"cells": adata.n_obs, "method": args.method, **row, "peak_rss_mb": peak_mb()}
    with open(args.out / "scale.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def exponent(rows: pd.DataFrame, column: str) -> float:
    """Slope of log(column) against log(cells): the power of n that the cost grows with."""
    rows = rows[rows[column] > 0]
    return float(np.polyfit(np.log(rows["cells"]), np.log(rows[column]), 1)[0])


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``; machines of one kind differ in speed)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def markdown(rows: pd.DataFrame, header: str) -> str:
    lines = [header, ""]
    for method, part in rows.groupby("method", sort=False):
        part = part.dropna(axis=1, how="all")
        cols = [c for c in part.columns if c != "method"]
        lines += [f"### {method}", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "---|" * len(cols))
        for _, r in part.iterrows():
            lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
        if method == "scbignn" and part["cells"].nunique() > 1:
            lines.append("")
            lines.append(
                f"Growth with cells (log-log slope): train wall {exponent(part, 'train_wall_s'):.2f}, "
                f"train CPU {exponent(part, 'train_cpu_s'):.2f}, peak RSS "
                f"{exponent(part, 'peak_rss_mb'):.2f}."
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data")
    )
    parser.add_argument("--sizes", default="13576,33000,66000,132000")
    parser.add_argument("--methods", default="scbignn,logreg")
    parser.add_argument("--peers", action="store_true", help="scANVI and CellTypist, first size")
    parser.add_argument("--train-kwargs", default="{}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        args.size, args.method = int(args.worker[0]), args.worker[1]
        worker(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    jobs = [(n, m) for n in sizes for m in args.methods.split(",") if m]
    if args.peers:
        jobs[1:1] = [(sizes[0], "scanvi"), (sizes[0], "celltypist")]
    for size, method in jobs:
        cmd = [sys.executable, __file__, "--worker", str(size), method]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k in ("data_dir", "train_kwargs", "threads", "seed", "out")]  # fmt: skip
        subprocess.run(cmd, check=True)
    rows = pd.read_json(args.out / "scale.jsonl", lines=True)
    header = (
        f"Command: `python {shlex.join(sys.argv)}`. {datetime.date.today()}, "
        f"{platform.machine()} ({cpu_model()}), {os.cpu_count()} cores, torch "
        f"{torch.__version__} with "
        f"{args.threads} threads. Sets above 13,576 cells are synthetic (Kang cells resampled "
        "with binomial thinning); time and memory only."
    )
    (args.out / "scale.md").write_text(markdown(rows, header))
    print(markdown(rows, header))


if __name__ == "__main__":
    main()

"""What a shared model reveals, and what hiding it costs: Kang 2018, trained on CTRL, STIM inductive.

``SCBiGNN.save(reference_cells=...)`` keeps every reference cell (``"all"``), a stratified
subsample of ``n`` labelled cells per type, or none (annotation then falls back to q_phi). This
script trains one reference on the CTRL cells (defaults), saves it each way, opens each folder
in the same process with ``load_query_data`` and annotates the STIM cells inductively.

    .venv/bin/python benchmarks/shared_model.py --out benchmarks/results

Prints and writes ``shared_model.md``: accuracy and macro-F1 of the labels (rejection off), folder
size, annotation wall and CPU seconds, and peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from scbignn_tools.model import SCBiGNN

KEY = "cell_type"


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir()) / 2**20


def markdown(table: pd.DataFrame) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("SCBIGNN_DATA", "../shared/data"))
    parser.add_argument("--keep", default="all,200,50,10,none", help="reference_cells settings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adata = ad.read_h5ad(Path(args.data_dir) / "kang2018_ifnb_pbmc.h5ad")
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    ref = adata[adata.obs["stim"] == "CTRL"].copy()
    query = adata[adata.obs["stim"] == "STIM"].copy()
    truth = query.obs[KEY].to_numpy()
    del query.obs[KEY]
    ref.obs["train_labels"] = ref.obs[KEY]
    t0, c0 = time.perf_counter(), time.process_time()
    SCBiGNN.setup_anndata(ref, labels_key="train_labels", unlabeled_category="Unknown")
    model = SCBiGNN(ref)
    model.train(progress_bar=False)
    fit, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"trained on {ref.n_obs} CTRL cells: {fit:.0f} s wall, {fit_cpu:.0f} s CPU", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for keep in args.keep.split(","):
            cells = keep if keep in ("all", "none") else int(keep)
            path = Path(tmp) / keep
            model.save(path, reference_cells=cells)
            t0, c0 = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "none" says it uses q_phi
                result = SCBiGNN.load_query_data(query, path).get_annotation(
                    unknown_threshold=None, novelty_threshold=None, gene_importance=False
                )
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            pred = np.asarray(result.labels, dtype=str)
            n_ref = 0 if cells == "none" else len(SCBiGNN.load(path).reference_)
            rows.append(
                {
                    "reference_cells": keep,
                    "cells kept": n_ref,
                    "labels from": result.settings["model"],
                    "accuracy": accuracy_score(truth, pred),
                    "macro-F1": f1_score(truth, pred, average="macro"),
                    "folder MB": folder_mb(path),
                    "annotate wall s": wall,
                    "annotate CPU s": cpu,
                }
            )
            print(rows[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = pd.DataFrame(rows)
    text = (
        f"Kang 2018: reference trained on {ref.n_obs} CTRL cells (defaults; {fit:.0f} s wall, "
        f"{fit_cpu:.0f} s CPU), {query.n_obs} STIM cells annotated inductively from each saved "
        f"folder, rejection off; peak memory {peak:.0f} MB; {args.threads} torch threads.\n"
        "Command: `python benchmarks/shared_model.py --out benchmarks/results`.\n\n"
        + markdown(table)
    )
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "shared_model.md").write_text(text)


if __name__ == "__main__":
    main()

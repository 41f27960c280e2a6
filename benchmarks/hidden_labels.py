"""Accuracy of p_theta and q_phi on a stratified share of hidden labels (issue 2's check).

Regenerate: ``python benchmarks/hidden_labels.py --data ../shared/data/baron_mouse.h5ad``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import anndata as ad
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

import scbignn_tools as scbignn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        default=os.path.join(os.environ.get("SCBIGNN_DATA", "../shared/data"), "baron_mouse.h5ad"),
    )
    parser.add_argument("--labels-key", default="cell_type")
    parser.add_argument("--hidden", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-kwargs", default="{}", help="JSON dict for SCBiGNN(...)")
    parser.add_argument("--train-kwargs", default="{}", help="JSON dict for train(...)")
    args = parser.parse_args()

    adata = ad.read_h5ad(args.data)
    y = adata.obs[args.labels_key].astype(str).to_numpy()
    _, hidden = train_test_split(
        np.arange(adata.n_obs), test_size=args.hidden, stratify=y, random_state=args.seed
    )
    adata.obs["train_labels"] = y
    adata.obs.loc[adata.obs_names[hidden], "train_labels"] = "Unknown"
    scbignn.model.SCBiGNN.setup_anndata(
        adata, labels_key="train_labels", unlabeled_category="Unknown"
    )
    model = scbignn.model.SCBiGNN(adata, **json.loads(args.model_kwargs))
    t0 = time.perf_counter()
    model.train(progress_bar=False, **json.loads(args.train_kwargs))
    fit_s = time.perf_counter() - t0
    row = {
        "data": os.path.basename(args.data),
        "hidden": args.hidden,
        "seed": args.seed,
        "fit_s": round(fit_s, 1),
        "threads": torch.get_num_threads(),
        "load1": round(os.getloadavg()[0], 2),
        "model_kwargs": args.model_kwargs,
        "train_kwargs": args.train_kwargs,
    }
    for m in ("q", "p"):
        pred = model.predict(model="q" if m == "q" else "p")[hidden]
        row[f"acc_{m}"] = round(accuracy_score(y[hidden], pred), 4)
        row[f"f1_{m}"] = round(f1_score(y[hidden], pred, average="macro"), 4)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    hist = model.history_
    print(
        hist.groupby(["stage", "em_iteration", "model"], sort=False)["validation_accuracy"]
        .last()
        .to_string()
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()

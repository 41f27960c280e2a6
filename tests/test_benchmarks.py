"""The cross-validation harness on a tiny slice of real data, so that it does not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_cross_validation_harness_writes_tables(tmp_path, data_dir):
    quick = {"n_em_iterations": 1, "pretrain_epochs": 3, "q_epochs": 1, "p_epochs": 20}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cross_validation.py"),
            f"--data-dir={data_dir}",
            "--datasets=baron_mouse",
            "--methods=scbignn,logreg,gcn_c",
            "--max-cells=300",
            "--folds=2",
            f"--train-kwargs={json.dumps(quick)}",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    folds = pd.read_csv(tmp_path / "cv_folds.csv")
    methods = {"scBiGNN p_theta", "scBiGNN q_phi", "logistic regression", "GCN-C"}
    assert set(folds["method"]) == methods
    assert sorted(folds["fold"].unique()) == [0, 1]
    assert (folds["n_cells"] == 300).all()
    # the held-out fold is 60 of 300 cells, and every method is far above chance on it
    assert folds["accuracy"].between(0.6, 1.0).all()
    summary = pd.read_csv(tmp_path / "cv_summary.csv")
    assert len(summary) == 4 and (summary["folds"] == 2).all()
    assert (summary["peak_rss_mb"] > 0).all()
    table = (tmp_path / "cv_summary.md").read_text()
    assert "### baron_mouse (2 folds)" in table and "| GCN-C |" in table


def test_markdown_marks_a_method_short_of_folds(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from cross_validation import markdown, summarize

    rows = [
        {"dataset": "d", "method": m, "fold": f, "accuracy": 0.9, "macro_f1": 0.8, "fit_s": 1.0,
         "predict_s": 0.1, "peak_rss_mb": 100}
        for m, n in (("full", 5), ("partial", 2))
        for f in range(n)
    ]  # fmt: skip
    text = markdown(summarize(pd.DataFrame(rows)), "header")
    assert "### d (5 folds)" in text
    assert "| partial (2 of 5 folds) |" in text
    assert "| full |" in text


def test_scale_resamples_real_cells_with_thinned_counts(monkeypatch, baron):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import numpy as np
    from scale import hidden_split, resample

    same = resample(baron, baron.n_obs)
    assert same.shape == baron.shape
    big = resample(baron, 3 * baron.n_obs, seed=1)
    assert big.n_obs <= 3 * baron.n_obs and big.n_obs > 2.9 * baron.n_obs  # empty cells dropped
    assert big.obs_names.is_unique and (big.var_names == baron.var_names).all()
    depth, source = np.asarray(big.X.sum(1)).ravel(), np.asarray(baron.X.sum(1)).ravel()
    assert depth.max() <= source.max() and 0.55 < depth.mean() / source.mean() < 1.0  # thinned
    assert np.array_equal(big.X.data, np.round(big.X.data))  # still counts
    shares = big.obs["cell_type"].value_counts(normalize=True)
    expected = baron.obs["cell_type"].value_counts(normalize=True)
    assert (shares.reindex(expected.index).fillna(0) - expected).abs().max() < 0.02
    hidden = hidden_split(big.obs["cell_type"].astype(str).to_numpy())
    assert abs(len(hidden) - 0.2 * big.n_obs) <= 1 and np.unique(hidden).size == len(hidden)

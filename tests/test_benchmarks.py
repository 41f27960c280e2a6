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

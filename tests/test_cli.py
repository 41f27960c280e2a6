from __future__ import annotations

import subprocess
import sys

import anndata as ad


def test_demo_runs_in_a_fresh_process(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "scbignn_tools._cli",
            "demo",
            "--quick",
            "--no-figure",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "p_theta  accuracy on hidden cells" in out.stdout
    adata = ad.read_h5ad(tmp_path / "pbmc68k_annotated.h5ad")
    assert {"scbignn", "scbignn_confidence", "hidden"} <= set(adata.obs.columns)
    assert adata.obs["hidden"].sum() == 140


def test_cli_reports_bad_arguments():
    out = subprocess.run(
        [sys.executable, "-m", "scbignn_tools._cli", "nonsense"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "invalid choice" in out.stderr

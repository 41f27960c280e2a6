from __future__ import annotations

import os
import subprocess
import sys

import anndata as ad


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the ``scbignn`` command line in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "scbignn_tools._cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_runs_in_a_fresh_process(tmp_path):
    out = _cli("demo", "--quick", "--no-figure", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "p_theta  accuracy on hidden cells" in out.stdout
    adata = ad.read_h5ad(tmp_path / "pbmc68k_annotated.h5ad")
    assert {"scbignn", "scbignn_confidence", "hidden"} <= set(adata.obs.columns)
    assert adata.obs["hidden"].sum() == 140
    # pbmc68k has cell types named with "/", which h5ad refuses as column names: none is one
    assert "Forward slashes" not in out.stderr
    assert any("/" in c for c in adata.uns["scbignn"]["classes"])


def test_cli_reports_bad_arguments():
    out = _cli("nonsense")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_train_save_then_annotate_in_subprocesses(tiny, tmp_path):
    import numpy as np
    import pandas as pd

    ref = tiny[tiny.obs["labels"] != "Unknown"].copy()
    query = tiny[tiny.obs["labels"] == "Unknown"].copy()
    del query.obs["labels"]
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    out = _cli(
        "train",
        str(tmp_path / "ref.h5ad"),
        "--labels-key",
        "labels",
        "--n-top-genes",
        "100",
        "--em-iterations",
        "1",
        "--pretrain-epochs",
        "5",
        "--out",
        str(tmp_path / "model"),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "model" / "model.json").exists()
    assert not (tmp_path / "model" / "model.pt").exists()
    out = _cli(
        "annotate",
        str(tmp_path / "query.h5ad"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(tmp_path / "annotated.h5ad"),
    )
    assert out.returncode == 0, out.stderr
    annotated = ad.read_h5ad(tmp_path / "annotated.h5ad")
    table = pd.read_csv(tmp_path / "annotated.csv", index_col=0)
    assert list(table.index) == list(query.obs_names)
    assert set(table["label"]) <= {"alpha", "beta", "ductal", "endothelial", "Unknown"}
    np.testing.assert_allclose(table["confidence"], annotated.obs["scbignn_confidence"], rtol=1e-6)
    assert table["novelty"].between(0, 1).all()
    assert annotated.var["scbignn_importance"].notna().sum() == 100
    # the CSV has q_phi's label and a probability column per type
    classes = annotated.uns["scbignn"]["classes"]
    assert list(table.columns) == ["label", "confidence", "novelty", "label_q"] + [
        f"p_{c}" for c in classes
    ]
    np.testing.assert_allclose(
        table[[f"p_{c}" for c in classes]], annotated.obsm["scbignn_probabilities"], rtol=1e-6
    )
    # exactly the keys (and values) that model.annotate writes, on the query's own genes
    from scbignn_tools.model import SCBiGNN

    direct = SCBiGNN.load_query_data(query, tmp_path / "model").annotate(copy=True)
    for attr in ("obs", "var"):
        assert list(getattr(annotated, attr).columns) == list(getattr(direct, attr).columns)
    for attr in ("obsm", "varm", "uns", "layers"):
        assert sorted(getattr(annotated, attr)) == sorted(getattr(direct, attr))
    assert list(annotated.var_names) == list(query.var_names)
    np.testing.assert_array_equal(annotated.obs["scbignn"], direct.obs["scbignn"])


def test_cli_errors_name_the_problem(tmp_path):
    out = _cli(
        "annotate", str(tmp_path / "missing.h5ad"), "--model", str(tmp_path), "--out", "x.h5ad"
    )
    assert out.returncode == 2 and "missing.h5ad does not exist" in out.stderr


def test_train_passes_class_balance_on(tiny, tmp_path, monkeypatch):
    from scbignn_tools import _cli
    from scbignn_tools.model import SCBiGNN
    from scbignn_tools.train import Calibration

    seen = []
    monkeypatch.setattr(SCBiGNN, "train", lambda self, **kw: seen.append(kw))
    monkeypatch.setattr(SCBiGNN, "save", lambda self, *a, **kw: None)
    monkeypatch.setattr(SCBiGNN, "calibration_", Calibration(), raising=False)
    tiny.write_h5ad(tmp_path / "ref.h5ad")
    common = ["train", str(tmp_path / "ref.h5ad"), "--labels-key", "labels", "--out", "m"]
    assert _cli.main([*common, "--n-top-genes", "100", "--class-balance", "0"]) == 0
    assert _cli.main([*common, "--n-top-genes", "100"]) == 0
    assert seen[0]["class_balance"] == 0.0
    assert "class_balance" not in seen[1]  # the model's default
    assert seen[1]["early_stopping"] and seen[1]["max_epochs"] is None
    assert seen[1]["strategy"] == "auto"
    flags = ["--max-epochs", "5", "--no-early-stopping", "--strategy", "ddp"]
    assert _cli.main([*common, "--n-top-genes", "100", *flags]) == 0
    assert seen[2]["max_epochs"] == 5 and not seen[2]["early_stopping"]
    assert seen[2]["strategy"] == "ddp"


def _no_work(monkeypatch):
    """Fail the test if the command reads data or trains before refusing."""
    import anndata as ad

    from scbignn_tools.model import SCBiGNN

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(ad, "read_h5ad", refuse)
    monkeypatch.setattr(SCBiGNN, "train", refuse)


def test_cli_refuses_bad_arguments_before_any_work(tiny, tmp_path, monkeypatch, capsys):
    import pytest

    from scbignn_tools import _cli
    from scbignn_tools.model import SCBiGNN

    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, n_top_genes=50, n_features=8, n_hidden=8, gene_layers=1)
    model.train(n_em_iterations=1, pretrain_epochs=1, q_epochs=1, p_epochs=2, progress_bar=False)
    model.save(tmp_path / "model")
    tiny.write_h5ad(tmp_path / "ref.h5ad")
    (tmp_path / "notes.txt").write_text("not h5ad")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _no_work(monkeypatch)
    ref, model_dir = str(tmp_path / "ref.h5ad"), str(tmp_path / "model")
    train = ["train", ref, "--labels-key", "labels", "--out"]
    annotate = ["annotate", ref, "--model", model_dir, "--out"]
    cases = [
        (["train", str(tmp_path / "no.h5ad"), "--labels-key", "l", "--out", "m"], "does not exist"),
        (["train", str(tmp_path / "notes.txt"), "--labels-key", "l", "--out", "m"], "not an .h5ad"),
        ([*train, str(tmp_path / "full")], "already exists and is not empty; pass --overwrite"),
        ([*train, str(tmp_path / "notes.txt")], "is a file"),
        ([*train, "m", "--n-top-genes", "0"], "--n-top-genes must be at least 1"),
        ([*train, "m", "--em-iterations", "0"], "--em-iterations must be at least 1"),
        ([*train, "m", "--class-balance", "-1"], "--class-balance must be at least 0"),
        ([*train, "m", "--max-epochs", "0"], "--max-epochs must be at least 1"),
        ([*annotate, "a.h5ad", "--unknown-threshold", "2"], "--unknown-threshold must be"),
        ([*annotate, "a.h5ad", "--novelty-threshold", "1.5"], "--novelty-threshold must be"),
        ([*annotate, "a.csv"], "must end in .h5ad"),
        (["annotate", ref, "--model", str(tmp_path), "--out", "a.h5ad"], "holds no saved model"),
        (["annotate", ref, "--model", str(tmp_path / "nothing"), "--out", "a.h5ad"], "no saved"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append(([*annotate, str(locked / "sub" / "a.h5ad")], "is not writable"))
    for argv, message in cases:
        assert _cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    with pytest.raises(SystemExit):
        _cli.main(["--version"])
    assert capsys.readouterr().out.strip() == _cli_version()


def _cli_version() -> str:
    from importlib.metadata import version

    return version("scbignn-tools")


def test_threads_option_sets_torchs_threads(tiny, tmp_path, monkeypatch):
    import pytest
    import torch

    from scbignn_tools import _cli
    from scbignn_tools.model import SCBiGNN
    from scbignn_tools.train import Calibration

    monkeypatch.setattr(SCBiGNN, "train", lambda self, **kw: None)
    monkeypatch.setattr(SCBiGNN, "save", lambda self, *a, **kw: None)
    monkeypatch.setattr(SCBiGNN, "calibration_", Calibration(), raising=False)
    tiny.write_h5ad(tmp_path / "ref.h5ad")
    before = torch.get_num_threads()
    argv = ["train", str(tmp_path / "ref.h5ad"), "--labels-key", "labels", "--out", "m"]
    try:
        assert _cli.main([*argv, "--n-top-genes", "100", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exit_:
        _cli.main([*argv, "--threads", "0"])
    assert exit_.value.code == 2

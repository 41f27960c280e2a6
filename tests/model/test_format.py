"""Models a stranger can share: no code runs on load, atomic saves, all-or-nothing training."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scbignn_tools.model import SCBiGNN
from scbignn_tools.train import EMTrainer

FAST = {"n_em_iterations": 1, "pretrain_epochs": 3, "q_epochs": 1, "p_epochs": 10}
SMALL = {"n_top_genes": 100, "n_features": 16, "n_hidden": 16, "gene_layers": 1, "n_neighbors": 5}
OLD = Path(__file__).resolve().parents[1] / "_data" / "model_v0_1"


@pytest.fixture
def trained(tiny):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    model.train(progress_bar=False, validation_size=0.2, **FAST)
    return model


class Payload:
    """Unpickling this writes a marker file: proof that a load ran planted code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant(folder: Path, marker: Path) -> None:
    blob = pickle.dumps(Payload(marker))
    for path in [*folder.iterdir(), folder / "model.pt"]:
        path.write_bytes(blob)


def test_save_load_gives_identical_probabilities_without_pickle(trained, tiny, tmp_path):
    trained.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "reference.npz",
        "weights.safetensors",
    ]
    loaded = SCBiGNN.load(tmp_path / "m", adata=tiny)
    np.testing.assert_array_equal(
        loaded.predict(soft=True).to_numpy(), trained.predict(soft=True).to_numpy()
    )
    a = SCBiGNN.load_query_data(tiny.copy(), tmp_path / "m").annotate(copy=True)
    b = trained.annotate(tiny.copy(), copy=True)
    np.testing.assert_array_equal(a.obsm["scbignn_probabilities"], b.obsm["scbignn_probabilities"])
    assert loaded.calibration_ == trained.calibration_
    pd.testing.assert_frame_equal(loaded.history_, trained.history_)
    assert SCBiGNN.load_registry(tmp_path / "m")["setup_args"]["labels_key"] == "labels"


def test_a_payload_planted_in_any_file_never_runs(trained, tiny, tmp_path):
    trained.save(tmp_path / "m")
    query = tiny.copy()
    del query.obs["labels"]
    query.write_h5ad(tmp_path / "query.h5ad")
    for name in ["model.json", "weights.safetensors", "reference.npz", "model.pt"]:
        folder = tmp_path / name
        shutil.copytree(tmp_path / "m", folder)
        marker = tmp_path / f"ran_{name}"
        blob = pickle.dumps(Payload(marker))
        (folder / name).write_bytes(blob)
        opens = [
            lambda f=folder: SCBiGNN.load(f),
            lambda f=folder: SCBiGNN.load(f, adata=tiny.copy()),
            lambda f=folder: SCBiGNN.load_query_data(query, f),
            lambda f=folder: SCBiGNN.prepare_query_anndata(query, f),
            lambda f=folder: SCBiGNN.load_registry(f),
            lambda f=folder: SCBiGNN.view_setup_args(f),
        ]
        for open_ in opens:
            if name == "model.pt":  # not part of the format: ignored, the folder opens
                open_()
            else:
                with pytest.raises(ValueError, match="cannot be read|not a scbignn-tools"):
                    open_()
        cli = subprocess.run(
            [sys.executable, "-m", "scbignn_tools._cli", "annotate", str(tmp_path / "query.h5ad")]
            + ["--model", str(folder), "--out", str(tmp_path / f"out_{name}.h5ad")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert cli.returncode == (0 if name == "model.pt" else 2), cli.stderr
        assert not marker.exists(), f"code planted in {name} ran"
    # every file at once, and an old-style model.pt beside them
    _plant(tmp_path / "m", tmp_path / "ran_all")
    with pytest.raises(ValueError):
        SCBiGNN.load(tmp_path / "m")
    assert not (tmp_path / "ran_all").exists()


def test_a_pickled_folder_of_version_0_1_is_refused_then_converted_on_opt_in(tiny, baron, tmp_path):
    # tests/_data/model_v0_1 was written by scbignn-tools 0.1 (make_model_v0_1.py)
    with pytest.raises(ValueError, match=r"pickled format.*runs any code.*convert_pickled_save"):
        SCBiGNN.load(OLD)
    with pytest.raises(ValueError, match="pickled format"):
        SCBiGNN.load_query_data(tiny, OLD)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        SCBiGNN.convert_pickled_save(OLD, tmp_path / "new")
    with pytest.raises(NotImplementedError, match="convert_pickled_save"):
        SCBiGNN.convert_legacy_save(OLD, tmp_path / "new")
    # even converting never runs code planted in the old file: only its types are resolved
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "model.pt").write_bytes(pickle.dumps(Payload(tmp_path / "ran_convert")))
    with pytest.raises(ValueError, match=r"names builtins\.exec.*not opened"):
        SCBiGNN.convert_pickled_save(planted, tmp_path / "never", trust_pickle=True)
    assert not (tmp_path / "ran_convert").exists() and not (tmp_path / "never").exists()
    SCBiGNN.convert_pickled_save(OLD, tmp_path / "new", trust_pickle=True)
    assert not (tmp_path / "new" / "model.pt").exists()
    model = SCBiGNN.load(tmp_path / "new")
    want = np.load(OLD.parent / "model_v0_1_probabilities.npy")  # what 0.1 predicted
    got = model.predict(_v0_1_cells(baron), soft=True).to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert model.reference_.n_neighbors == 5 and model.gene_selection_ == "given"


def _v0_1_cells(baron):
    """The cells tests/_data/make_model_v0_1.py trained on."""
    keep = ["beta", "alpha", "ductal", "endothelial"]
    rng = np.random.default_rng(0)
    cells = np.concatenate(
        [rng.choice(np.flatnonzero(baron.obs.cell_type == t), 30, replace=False) for t in keep]
    )
    sub = baron[cells].copy()
    expressed = np.asarray((sub.X > 0).sum(0)).ravel()
    return sub[:, np.argsort(-expressed, kind="stable")[:300]].copy()


def test_save_is_atomic_and_refuses_to_overwrite_silently(trained, tmp_path, monkeypatch):
    trained.save(tmp_path / "m")
    with pytest.raises(ValueError, match="already holds a model; pass overwrite=True"):
        trained.save(tmp_path / "m")
    want = SCBiGNN.load(tmp_path / "m").predict(trained.adata, soft=True).to_numpy()
    from scbignn_tools.model import _format

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_format, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        trained.save(tmp_path / "m", overwrite=True)
    # the old folder is whole, and no temporary folder is left behind
    got = SCBiGNN.load(tmp_path / "m").predict(trained.adata, soft=True).to_numpy()
    np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("where", ["fit_p", "fit_q"])
def test_interrupted_training_leaves_the_model_as_it_was(trained, monkeypatch, where):
    before = {k: v.clone() for k, v in trained.module.state_dict().items()}
    history, calibration, graph = trained.history_.copy(), trained.calibration_, trained.reference_
    probs = trained.predict(soft=True).to_numpy()
    original = getattr(EMTrainer, where)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 or where == "fit_p":
            raise KeyboardInterrupt  # Ctrl-C inside an epoch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EMTrainer, where, interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        trained.train(progress_bar=False, **FAST)
    assert "the model is as it was before the call" in "".join(info.value.__notes__)
    for key, value in trained.module.state_dict().items():
        assert torch_equal(value, before[key]), key
    pd.testing.assert_frame_equal(trained.history_, history)
    assert trained.calibration_ == calibration and trained.reference_ is graph
    assert trained.is_trained_
    np.testing.assert_array_equal(trained.predict(soft=True).to_numpy(), probs)


def test_interrupted_first_training_leaves_an_untrained_model(tiny, monkeypatch):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    model = SCBiGNN(tiny, **SMALL)
    monkeypatch.setattr(
        EMTrainer, "fit_p", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    with pytest.raises(RuntimeError, match="boom") as info:
        model.train(progress_bar=False, **FAST)
    assert "untrained" in "".join(info.value.__notes__)
    assert not model.is_trained_ and model.history_ is None and model.reference_ is None
    with pytest.raises(RuntimeError, match="not trained|train"):
        model.predict()


def test_what_a_shared_model_reveals(trained, tiny, tmp_path):
    trained.save(tmp_path / "all")
    trained.save(tmp_path / "sub", reference_cells=10)
    trained.save(tmp_path / "none", reference_cells="none")
    sizes = {
        n: sum(p.stat().st_size for p in (tmp_path / n).iterdir()) for n in ("all", "sub", "none")
    }
    assert sizes["all"] > sizes["sub"] > sizes["none"]
    assert not (tmp_path / "none" / "reference.npz").exists()
    sub = SCBiGNN.load(tmp_path / "sub").reference_
    assert (np.bincount(sub.labels) <= 10).all() and set(sub.labels) == set(range(4))
    assert sub.own_distances.shape == (len(sub),)  # measured on the cells kept
    query = tiny.copy()
    del query.obs["labels"]
    none = SCBiGNN.load_query_data(query, tmp_path / "none")
    with pytest.warns(UserWarning, match="without its reference cells.*q_phi"):
        out = none.annotate(copy=True, gene_importance=False)
    assert out.uns["scbignn"]["model"] == "q_phi"
    assert out.obs["scbignn_novelty"].isna().all()
    q_labels = trained.predict(query, model="q")
    np.testing.assert_array_equal(out.obs["scbignn_q"].astype(str).to_numpy(), q_labels)
    with pytest.raises(ValueError, match="without its reference cells"):
        none.train(progress_bar=False, **FAST)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


@pytest.mark.parametrize(("where", "call"), [("fit_p", 1), ("fit_p", 2), ("fit_q", 3)])
def test_an_interrupted_run_resumes_from_its_checkpoint(tiny, tmp_path, monkeypatch, where, call):
    # two EM iterations: pretrain, M1, E1, M2, E2; interrupted inside M1, M2 or E2
    kw = {**FAST, "n_em_iterations": 2, "progress_bar": False, "validation_size": 0.2}
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    whole = SCBiGNN(tiny, **SMALL)
    whole.train(**kw)
    model = SCBiGNN(tiny, **SMALL)
    ckpt = tmp_path / "run.ckpt"
    original = getattr(EMTrainer, where)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EMTrainer, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.train(checkpoint_path=ckpt, **kw)
    assert not model.is_trained_ and ckpt.exists()
    monkeypatch.setattr(EMTrainer, where, original)
    model.train(checkpoint_path=ckpt, resume=True, **kw)
    pd.testing.assert_frame_equal(model.history_, whole.history_)
    np.testing.assert_array_equal(
        model.predict(soft=True).to_numpy(), whole.predict(soft=True).to_numpy()
    )
    other = SCBiGNN(tiny, **SMALL)
    with pytest.raises(ValueError, match="another training run"):
        other.train(checkpoint_path=ckpt, resume=True, **{**kw, "lr_q": 1e-3})


def test_the_reference_distances_are_measured_in_training_and_saved(
    trained, tiny, tmp_path, monkeypatch
):
    # novelty's yardstick is filled by train() and travels in reference.npz, so the first
    # annotate after training or loading does not measure it; older folders still work
    from scbignn_tools.graph import _reference

    own = trained.reference_.own_distances
    assert own is not None and len(own) == int((trained.reference_.labels >= 0).sum())
    trained.save(tmp_path / "m")
    measured = []
    original = _reference.neighbour_distances
    monkeypatch.setattr(
        _reference,
        "neighbour_distances",
        lambda h, h_new, *a, **k: measured.append(h_new is None) or original(h, h_new, *a, **k),
    )
    query = tiny.copy()
    query.obs_names = [f"q{i}" for i in range(query.n_obs)]  # new cells: novelty is measured
    loaded = SCBiGNN.load_query_data(query, tmp_path / "m")
    np.testing.assert_array_equal(loaded.reference_.own_distances, own)
    novelty = loaded.annotate(copy=True).obs["scbignn_novelty"].to_numpy()
    assert measured == [False]  # only the query's distances
    with np.load(tmp_path / "m" / "reference.npz") as arrays:  # a folder written before
        kept = {k: arrays[k] for k in arrays.files if k != "own_distances"}
    np.savez(tmp_path / "m" / "reference.npz", **kept)
    older = SCBiGNN.load_query_data(query, tmp_path / "m")
    assert older.reference_.own_distances is None
    np.testing.assert_array_equal(older.annotate(copy=True).obs["scbignn_novelty"], novelty)
    assert measured == [False, True, False]
    np.savez(tmp_path / "m" / "reference.npz", **kept, own_distances=own[::-1])  # damaged
    with pytest.raises(ValueError, match="cannot be read: own_distances should be the .* sorted"):
        SCBiGNN.load_query_data(query, tmp_path / "m")

"""The Lightning engine of the EM phases: early stopping, scvi-tools' arguments, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch.callbacks import Callback

from scbignn_tools.model import SCBiGNN
from scbignn_tools.train import scvi_history

SMALL = {"n_top_genes": 100, "n_features": 16, "n_hidden": 16, "gene_layers": 1, "n_neighbors": 5}
FAST = {"n_em_iterations": 1, "pretrain_epochs": 3, "q_epochs": 2, "p_epochs": 20}


@pytest.fixture
def model(tiny):
    SCBiGNN.setup_anndata(tiny, labels_key="labels", unlabeled_category="Unknown")
    return SCBiGNN(tiny, **SMALL)


def test_early_stopping_ends_a_phase_when_the_held_out_loss_stops_falling(model):
    patience = 2
    model.train(
        n_em_iterations=1,
        pretrain_epochs=200,
        q_epochs=200,
        p_epochs=400,
        p_validation_every=5,
        early_stopping_patience=patience,
        validation_size=0.25,
        progress_bar=False,
    )
    hist = model.history_
    ran = hist.groupby(["stage", "model"]).size()
    assert ran[("pretrain", "q")] < 200 and ran[("E", "q")] < 200 and ran[("M", "p")] < 400
    for (stage, gnn), rows in hist.groupby(["stage", "model"]):
        checks = rows["validation_loss"].dropna().to_numpy()
        # the phase ended `patience` checks after its lowest held-out loss, not before
        assert np.argmin(checks) == len(checks) - 1 - patience, (stage, gnn, checks)
    assert len(hist[hist.model == "p"]) % 5 == 0  # p_theta stops at a validation check
    epochs = model.history["epochs_q"]["epochs_q"]
    assert epochs.loc[("pretrain", 0)] == ran[("pretrain", "q")]


def test_without_early_stopping_every_phase_runs_its_length(model):
    model.train(**FAST, early_stopping=False, progress_bar=False)
    ran = model.history_.groupby(["stage", "model"]).size()
    assert ran.to_dict() == {("E", "q"): 2, ("M", "p"): 20, ("pretrain", "q"): 3}


class CountEpochs(Callback):
    def __init__(self):
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs += 1


def test_train_takes_scvi_tools_arguments(model):
    counter = CountEpochs()
    model.train(
        **{**FAST, "pretrain_epochs": 8},
        max_epochs=2,
        early_stopping=False,
        plan_kwargs={"p_epochs": 4, "lr_q": 1e-3},
        trainer_kwargs={"callbacks": [counter]},
        gradient_clip_val=1.0,  # a Lightning Trainer argument, as scvi-tools passes them
        progress_bar=False,
    )
    ran = model.history_.groupby(["stage", "model"]).size()
    # max_epochs caps every q_phi phase; plan_kwargs take precedence over the arguments
    assert ran.to_dict() == {("E", "q"): 2, ("M", "p"): 4, ("pretrain", "q"): 2}
    assert counter.epochs == 2 + 4 + 2  # the callback ran in every phase
    hist = model.history  # scvi-tools' form: one DataFrame per metric, indexed by epoch
    assert set(hist) >= {"train_loss_q", "validation_loss_q", "validation_accuracy_p"}
    assert hist["train_loss_q"].index.name == "epoch" and len(hist["train_loss_q"]) == 4
    assert list(hist["train_loss_p"].columns) == ["train_loss_p"]
    assert scvi_history(None) is None


def test_unknown_or_reserved_settings_are_refused_before_training(model):
    with pytest.raises(ValueError, match="plan_kwargs has unknown settings \\['lr'\\]"):
        model.train(**FAST, plan_kwargs={"lr": 1e-3})
    with pytest.raises(ValueError, match="trainer_kwargs may not set \\['max_epochs'\\]"):
        model.train(**FAST, trainer_kwargs={"max_epochs": 3})
    with pytest.raises(ValueError, match="max_epochs must be at least 1"):
        model.train(**FAST, max_epochs=0)
    assert not model.is_trained_


def test_two_ddp_processes_give_what_one_process_gives(tmp_path, data_dir):
    """``strategy="ddp"`` on 2 CPU processes (gloo) against one process, same seed.

    The two runs differ in their batches (each process takes half of every epoch's batches,
    so an epoch has half the optimiser steps); the tolerance: accuracy on the real labels
    within 0.03 and at least 95% of the cells given the same type.
    """
    script = Path(__file__).with_name("ddp_train.py")
    env = {**os.environ, "SCBIGNN_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    out = {}
    for devices in (1, 2):
        folder = tmp_path / f"devices{devices}"
        run = subprocess.run(
            [sys.executable, str(script), str(folder), str(devices)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        out[devices] = (
            pd.read_csv(folder / "predictions.csv", index_col=0),
            pd.read_csv(folder / "history.csv"),
        )
    (one, hist1), (two, hist2) = out[1], out[2]
    assert hist1["world"].iloc[0] == 1 and hist2["world"].iloc[0] == 2
    acc1 = (one.predicted == one.truth).mean()
    acc2 = (two.predicted == two.truth).mean()
    assert acc1 > 0.9 and abs(acc1 - acc2) <= 0.03, (acc1, acc2)
    assert (one.predicted == two.predicted).mean() >= 0.95
    # same phases and epochs; the shards really differ from one process's batches
    pd.testing.assert_frame_equal(
        hist1[["stage", "model", "epoch"]], hist2[["stage", "model", "epoch"]]
    )
    assert not np.allclose(hist1["train_loss"], hist2["train_loss"])

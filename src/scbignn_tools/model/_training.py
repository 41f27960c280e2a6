"""Training of :class:`~scbignn_tools.model.SCBiGNN`: all or nothing, with checkpoints."""

from __future__ import annotations

import os
from dataclasses import fields, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch

from scbignn_tools.data import GeneSets
from scbignn_tools.graph import ReferenceGraph, expression_basis, graph_coords, knn_graph
from scbignn_tools.graph import row_normalized_adjacency as normalized
from scbignn_tools.module import PseudoLabels, p_inference, q_inference
from scbignn_tools.train import (
    EMConfig,
    EMData,
    EMTrainer,
    Engine,
    calibrate,
    scvi_history,
    validation_split,
)

from ._anndata import Cells, check_training_labels
from ._inference import Predictor, standardize
from ._utils import process_device, resolve_device

_EM = EMConfig()  # train()'s defaults


class TrainingMixin:
    """``train`` of :class:`~scbignn_tools.model.SCBiGNN` (paper section 3.5)."""

    def train(
        self,
        n_em_iterations: int = _EM.n_em_iterations,
        pretrain_epochs: int | None = _EM.pretrain_epochs,
        q_epochs: int = _EM.q_epochs,
        p_epochs: int = _EM.p_epochs,
        lr_q: float = _EM.lr_q,
        lr_p: float = _EM.lr_p,
        weight_decay: float = _EM.weight_decay,
        batch_size: int = _EM.batch_size,
        max_genes: int | None = _EM.max_genes,
        beta: float = _EM.beta,
        pseudo_labels: PseudoLabels = _EM.pseudo_labels,
        pseudo_label_threshold: float = _EM.pseudo_label_threshold,
        class_balance: float = _EM.class_balance,
        knn_method: Literal["auto", "exact", "pynndescent"] = _EM.knn_method,
        validation_size: float = 0.1,
        max_epochs: int | None = None,
        early_stopping: bool = _EM.early_stopping,
        early_stopping_patience: int = _EM.early_stopping_patience,
        p_validation_every: int = _EM.p_validation_every,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        strategy: str = "auto",
        progress_bar: bool = True,
        checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False,
        plan_kwargs: dict | None = None,
        trainer_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        """Pre-train q_phi on the labelled cells, then run EM (paper section 3.5).

        Each EM iteration has an M-step (p_theta learns from true labels and from the
        pseudo-labels of q_phi that reach ``pseudo_label_threshold``, Eq. 9; with
        ``cell_graph="q"`` its kNN graph is first rebuilt from q_phi's ``h``) and an E-step (q_phi
        learns from true labels and pseudo-labels drawn from p_theta, Eqs. 6 and 7). The losses
        and held-out validation accuracy of every epoch go to :attr:`history_`.

        A trained model trains further on the cells of its graph and its AnnData's cells not in
        the graph: for a query model (:meth:`load_query_data`) this is the paper's transductive
        setting, with the query cells as unlabelled cells beside the reference cells.

        Parameters
        ----------
        n_em_iterations
            Number of EM iterations (the paper: 3).
        pretrain_epochs
            Epochs of q_phi on the labelled cells before EM; ``None`` is 30 for an untrained
            model and 0 for a trained one (such as a query model), whose q_phi is trained.
        q_epochs
            Epochs of q_phi in each E-step.
        p_epochs
            Full-graph steps of p_theta in each M-step (each is one Lightning epoch).
        lr_q
            Peak learning rate of q_phi (AdamW; one warm-up and cosine decay over pre-training
            and all E-steps).
        lr_p
            Peak learning rate of p_theta (warm-up and cosine decay in each M-step).
        weight_decay
            AdamW weight decay of both GNNs.
        batch_size
            Cells per q_phi minibatch.
        max_genes
            In training, cells with more non-zero model genes attend among a random subset of
            this many (drawn anew each batch), which bounds the quadratic cost of attention;
            prediction always uses every gene. ``None`` uses every gene in training too.
        beta
            Weight of the labelled cells' loss against the pseudo-labelled ones (Eq. 7).
        pseudo_labels
            ``"argmax"``, ``"sample"`` (the paper: a new draw every epoch) or ``"soft"``
            pseudo-labels. On BaronMouse, sampling lowered q_phi's validation accuracy in the
            E-steps (0.974 after pre-training, 0.947 after the first E-step); argmax kept it.
        pseudo_label_threshold
            In the M-step, unlabelled cells count only where q_phi gives their pseudo-label at
            least this probability (the paper: 0, every cell). With every cell, p_theta learned
            to repeat q_phi and never corrected it (``docs/method.md``).
        class_balance
            Exponent of the class weights ``(n / (C n_c)) ** class_balance`` on every loss term
            (:func:`~scbignn_tools.module.class_weights`): 0 weighs every cell alike, 1 makes
            each cell type count as much as any other. 0.5 raised the 5-fold cross-validation
            accuracy on all three datasets, but for inductive annotation of a strongly shifted
            query (Kang CTRL to STIM) 0 did better, 0.921 against 0.902 (``docs/method.md``).
        knn_method
            ``"exact"`` (sklearn), ``"pynndescent"`` or ``"auto"`` (exact up to 50,000 cells).
        validation_size
            Share of the labelled cells held out (their labels hidden) to measure accuracy, stop
            early and fit the calibration.
        max_epochs
            Upper bound on the epochs of every q_phi phase: caps ``pretrain_epochs`` and
            ``q_epochs`` (scvi-tools' argument). ``None`` leaves them.
        early_stopping
            End each phase when the held-out cells' loss stops falling (without held-out cells,
            every phase runs its full length).
        early_stopping_patience
            Validation checks without a lower held-out loss before a phase ends: epochs for
            q_phi, checks every ``p_validation_every`` steps for p_theta.
        p_validation_every
            p_theta's held-out loss is measured every this many steps.
        accelerator
            ``"auto"``, ``"cpu"``, ``"gpu"``..., as in scvi-tools.
        devices
            Device(s) to use, as in scvi-tools; with ``strategy="ddp"`` and several devices,
            each process trains q_phi on its share of every epoch's batches (p_theta's
            full-graph steps are repeated in each).
        strategy
            Lightning's strategy, such as ``"ddp"`` for several devices. In a script, Lightning
            starts the other processes by running the script again; in a notebook use
            ``"ddp_notebook"``.
        progress_bar
            Show one progress bar over all phases (in epochs; an M-step's full-graph steps count
            as epochs).
        checkpoint_path
            Write the training state to this file after pre-training and after every M- and
            E-step (tensors and plain values, no pickle).
        resume
            Continue from ``checkpoint_path`` when it exists (after an interruption, say): the
            run then ends as the uninterrupted one would. The checkpoint must come from the
            same cells and settings.
        plan_kwargs
            Settings of the training plans, by name: any of the arguments above from
            ``n_em_iterations`` to ``p_validation_every`` (such as ``{"lr_q": 1e-3}``); they
            take precedence over the arguments.
        trainer_kwargs
            Further arguments of :class:`scvi.train.Trainer` and Lightning's ``Trainer``
            (``callbacks``, ``precision``, ``logger``...).
        **kwargs
            Merged into ``trainer_kwargs``, as scvi-tools' ``train`` does.

        Notes
        -----
        Training is all or nothing: when ``train()`` raises or is interrupted (Ctrl-C), the
        model is left exactly as it was before the call, and the exception says so.

        Examples
        --------
        >>> model = scbignn.model.SCBiGNN(adata)
        >>> model.train()
        >>> model.history_.groupby("stage")["validation_accuracy"].last()
        """
        args = locals()
        names = [f.name for f in fields(EMConfig)]
        unknown = sorted(set(plan_kwargs or {}) - set(names))
        if unknown:
            raise ValueError(
                f"plan_kwargs has unknown settings {unknown}; they are {', '.join(names)}."
            )
        settings = {name: args[name] for name in names} | dict(plan_kwargs or {})
        if max_epochs is not None:
            if max_epochs < 1:
                raise ValueError(f"max_epochs must be at least 1, not {max_epochs}.")
            settings["q_epochs"] = min(settings["q_epochs"], max_epochs)
            if settings["pretrain_epochs"] is not None:
                settings["pretrain_epochs"] = min(settings["pretrain_epochs"], max_epochs)
        config = EMConfig(**settings).resolved(trained=self.is_trained_)
        if max_epochs is not None:
            config = replace(config, pretrain_epochs=min(config.pretrain_epochs, max_epochs))
        engine = Engine(accelerator, devices, strategy, dict(trainer_kwargs or {}) | kwargs)
        device = process_device(resolve_device(accelerator, devices, single=False), devices)
        before = self._snapshot()
        try:
            self._fit(
                config, validation_size, device, progress_bar, checkpoint_path, resume, engine
            )
        except BaseException as err:  # also Ctrl-C: never a half-trained model
            self._restore(before)
            state = "as it was before" if self.is_trained_ else "untrained, as before"
            err.add_note(f"SCBiGNN.train() did not finish: the model is {state} the call.")
            raise

    @property
    def history(self) -> dict[str, pd.DataFrame] | None:
        """The training history in scvi-tools' form (:func:`~scbignn_tools.train.scvi_history`).

        :attr:`history_` has the same numbers, one row per epoch.
        """
        return scvi_history(self.history_)

    def _fit(self, config, validation_size, device, progress_bar, checkpoint_path, resume, engine):
        """The body of :meth:`train`: the EM run, then the frozen graph and the calibration."""
        knn_method = config.knn_method
        self.module.to(device)
        cells = self._training_cells()
        labels = cells.labels
        validation = validation_split(labels, validation_size, self.seed)
        train_labels = labels.copy()
        train_labels[validation] = -1
        x = standardize(self.module, cells.x)
        basis = None
        if self.cell_graph == "expression":
            basis = (
                self.reference_.basis
                if self.reference_ is not None
                else expression_basis(x, seed=self.seed)
            )
        coords = None if basis is None else graph_coords(x, None, basis)
        sets = GeneSets(cells.x)
        data = EMData(sets, x, train_labels, validation, labels[validation], coords)
        torch.manual_seed(self.seed)
        trainer = EMTrainer(
            self.module, data, config, device, self.seed, progress_bar, self.n_neighbors, engine
        )
        self.history_ = trainer.fit(checkpoint_path, resume)
        self.is_trained_ = True
        self.module.eval()
        # the final graph of p_theta, kept for prediction and for new cells (inductive mode)
        logits_q, h = q_inference(self.module, sets, x, device=device)
        coords = graph_coords(x, h, basis)
        adj = trainer.graph  # the expression graph does not change with q_phi's h
        if basis is None or adj is None:
            adj = knn_graph(coords, self.n_neighbors, knn_method, self.seed)
        logits_p, h_prime = p_inference(self.module, x, h, normalized(adj, device))
        self.reference_ = ReferenceGraph(
            x=cells.x,
            h=h,
            coords=coords,
            basis=basis,
            adj=adj,
            labels=labels,
            obs_names=cells.names,
            n_neighbors=self.n_neighbors,
            knn_method=knn_method,
            seed=self.seed,
        )
        self.calibration_ = calibrate(
            logits_q[validation], logits_p[validation], labels[validation]
        )
        self.reference_.reference_distances()  # for novelty: once here, not in the first annotate
        self._clear_caches()
        self._predictor_cache = Predictor(  # predictions of the graph cells: already computed
            self.module, self.reference_, self.calibration_, (logits_p, h_prime)
        )

    def _snapshot(self) -> dict:
        """What :meth:`train` changes, copied, to restore if it does not finish."""
        state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        keys = ("is_trained_", "history_", "calibration_", "reference_")
        return {
            "state": state,
            "device": self.device,
            "attributes": {k: getattr(self, k) for k in keys},
        }

    def _restore(self, snapshot: dict) -> None:
        self.module.load_state_dict(snapshot["state"])
        self.module.to(snapshot["device"])
        for key, value in snapshot["attributes"].items():
            setattr(self, key, value)
        self._clear_caches()

    def _training_cells(self) -> Cells:
        """The cells to train on: the graph's, then the AnnData's cells not in the graph."""
        if self.adata is None:
            raise ValueError("This model has no AnnData to train on; load it with one.")
        own = self._cells(None)
        if self.reference_ is None:
            if self.is_trained_:
                raise ValueError(
                    "This model was saved without its reference cells (reference_cells='none'), "
                    "so it cannot train further beside them; annotate inductively, or train a "
                    "new model on the reference."
                )
            check_training_labels(own.labels, self._setup)
            return own
        ref = self.reference_
        new = own.subset(np.flatnonzero(ref.contains(own.names, own.x) < 0))
        return Cells.concat(Cells(ref.obs_names, ref.x, ref.labels), new)

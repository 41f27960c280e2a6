"""The EM loop of paper section 3.5: pre-train q_phi, then alternate M- and E-steps."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_only
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from scbignn_tools.data import GeneSets, StandardizedExpression
from scbignn_tools.graph import knn_graph, row_normalized_adjacency
from scbignn_tools.module import (
    SCBiGNNModule,
    class_weights,
    confident_weights,
    draw_targets,
    p_inference,
    q_inference,
    softmax,
)

from ._config import EMConfig
from ._engine import Engine, quiet_lightning
from ._plans import EpochBatches, PPlan, QPlan, batch_loader, rank_and_world


@dataclass
class EMData:
    """What the EM loop trains on: ``labels`` holds -1 for cells without a training label."""

    sets: GeneSets
    x: StandardizedExpression  # standardised expression, (N, T)
    labels: np.ndarray
    validation: np.ndarray  # indices of held-out labelled cells (labels hidden in training)
    validation_labels: np.ndarray
    graph_coords: np.ndarray | None = None  # p_theta's graph space; None: q_phi's h each M-step
    history: list[dict] = field(default_factory=list)


def validation_split(labels: np.ndarray, size: float, seed: int) -> np.ndarray:
    """Stratified held-out share of the labelled cells (types with one cell stay in training).

    ``labels`` are class codes, -1 for unlabelled cells; returns sorted indices.
    """
    labelled = np.flatnonzero(labels >= 0)
    if size <= 0:
        return np.array([], dtype=np.int64)
    y = labels[labelled]
    counts = pd.Series(y).value_counts()
    can_split = np.isin(y, counts.index[counts >= 2])
    pool, strat = labelled[can_split], y[can_split]
    n_val = max(int(round(size * len(labelled))), len(np.unique(strat)))
    if n_val >= len(pool):
        return np.array([], dtype=np.int64)
    _, val = train_test_split(pool, test_size=n_val, stratify=strat, random_state=seed)
    return np.sort(val)


def _schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warm = max(1, int(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EMTrainer:
    """Pre-train q_phi, then alternate M-steps (p_theta) and E-steps (q_phi), section 3.5.

    Every phase is one ``fit`` of an scvi-tools :class:`~scvi.train.Trainer` (Lightning) on a
    :class:`~scbignn_tools.train.QPlan` or :class:`~scbignn_tools.train.PPlan`, on the
    accelerator, devices and strategy of ``engine``; with ``config.early_stopping`` a phase
    ends when the loss of the held-out labelled cells has not fallen for
    ``config.early_stopping_patience`` validation checks.
    """

    def __init__(
        self,
        module: SCBiGNNModule,
        data: EMData,
        config: EMConfig,
        device,
        seed: int,
        progress_bar: bool,
        n_neighbors: int,
        engine: Engine | None = None,
    ):
        self.module, self.data, self.config, self.device = module, data, config, device
        self.engine = Engine() if engine is None else engine
        self.n_neighbors = n_neighbors
        self.rng = np.random.default_rng(seed)
        self.progress_bar = progress_bar
        self.n_cells = len(data.sets)
        self._bar = None
        self._adj = None  # p_theta's graph, kept across M-steps when it does not depend on q
        self._graph_seed: int | None = None  # the seed it was built with
        self.graph = None  # the last kNN graph (scipy), for the caller to keep
        self._class_weight = None
        self._phase = ("pretrain", 0)
        if config.class_balance:
            v = class_weights(data.labels, module.n_labels, config.class_balance)
            self._class_weight = torch.as_tensor(v)

    # --- one phase each ------------------------------------------------------------------
    def fit_q(self, epochs: int, target_probs: np.ndarray | None) -> int:
        """Train q_phi on true labels (weight beta) and, if given, pseudo-labels from p (Eqs. 6-7).

        Returns the number of epochs run.
        """
        cfg, data = self.config, self.data
        labelled = np.flatnonzero(data.labels >= 0)
        rows = labelled if target_probs is None else np.arange(self.n_cells)
        weights = torch.ones(self.n_cells)
        weights[torch.as_tensor(labelled)] = cfg.beta
        probs = (
            np.full((self.n_cells, self.module.n_labels), 1.0, np.float32)
            if target_probs is None
            else target_probs
        )
        epoch: dict = {}

        def draw() -> list:
            targets = draw_targets(probs, data.labels, cfg.pseudo_labels, self.rng)
            epoch["targets"] = torch.as_tensor(targets)
            batches = list(data.sets.batches(rows, cfg.batch_size, self.rng))
            seeds = self.rng.integers(2**63, size=len(batches))  # gene subsets, per batch
            return list(zip(batches, seeds, strict=True))

        def make(item) -> dict:
            part, seed = item
            rng = np.random.default_rng(seed)
            out = self._q_batch(part, cfg.max_genes, rng)
            idx = torch.as_tensor(part)
            return out | {"targets": epoch["targets"][idx], "weights": weights[idx]}

        plan = QPlan(self.module, *self._q_optim, self._class_weight, self._record)
        train = batch_loader(
            make, EpochBatches(draw, GeneSets.n_batches(len(rows), cfg.batch_size))
        )
        return self._run(plan, train, self._q_validation(), epochs, 1)

    def fit_p(self, h: np.ndarray, target_probs: np.ndarray) -> int:
        """Train p_theta on labels plus q's confident pseudo-labels (Eq. 9); returns its epochs.

        The kNN graph is built on ``data.graph_coords`` or, when these are ``None``, on q's
        ``h`` (the paper). Unlabelled cells count only where q's probability of their
        pseudo-label reaches ``pseudo_label_threshold``. Each epoch is one step on the whole
        graph.
        """
        cfg, data = self.config, self.data
        adj = self._graph_for(h)
        weights = torch.as_tensor(
            confident_weights(target_probs, data.labels, cfg.pseudo_label_threshold)
        )
        epoch: dict = {}

        def draw() -> list:
            targets = draw_targets(target_probs, data.labels, cfg.pseudo_labels, self.rng)
            epoch["targets"] = torch.as_tensor(targets)
            return [0]

        plan = PPlan(
            self.module,
            data.x,
            torch.as_tensor(h),
            adj,
            data.validation,
            data.validation_labels,
            cfg.lr_p,
            cfg.weight_decay,
            cfg.p_epochs,
            self._class_weight,
            self._record,
            _schedule,
        )
        train = batch_loader(
            lambda _: {"targets": epoch["targets"], "weights": weights},
            EpochBatches(draw, 1, shard=False),
        )
        val = None
        if len(data.validation):
            val = batch_loader(lambda _: {}, EpochBatches(lambda: [0], 1, shard=False))
        return self._run(plan, train, val, cfg.p_epochs, cfg.p_validation_every)

    def _q_batch(self, part: np.ndarray, max_genes: int | None, rng) -> dict:
        genes, values, mask = self.data.sets.batch(part, "cpu", max_genes, rng)
        x = self.data.x.rows(part)
        return {"genes": genes, "values": values, "mask": mask, "x": x}

    def _q_validation(self) -> DataLoader | None:
        """The held-out labelled cells, in deterministic batches, with their labels."""
        data = self.data
        if not len(data.validation):
            return None
        batches = list(data.sets.batches(data.validation, 256))
        labels = dict(zip(data.validation, data.validation_labels, strict=True))

        def make(part) -> dict:
            y = torch.as_tensor([labels[i] for i in part], dtype=torch.long)
            return self._q_batch(part, None, None) | {"labels": y}

        return batch_loader(make, EpochBatches(lambda: batches, len(batches), shard=False))

    def _run(self, plan, train, validation, max_epochs: int, check_every: int) -> int:
        """Fit ``plan`` for at most ``max_epochs``; returns the epochs run."""
        if max_epochs <= 0:
            return 0
        before, monitor = len(self.data.history), None
        if self.config.early_stopping and validation is not None:
            monitor = f"validation_loss_{plan._model}"
        with quiet_lightning():
            trainer = self.engine.trainer(
                max_epochs,
                check_every if validation is not None else None,
                monitor,
                self.config.early_stopping_patience,
            )
            plan.train()  # inference between phases left the GNNs in evaluation mode
            trainer.fit(plan, train_dataloaders=train, val_dataloaders=validation)
        self.module.to(self.device)  # Lightning hands the module back on the CPU
        ran = len(self.data.history) - before
        self._advance(max_epochs - ran)  # the bar goes to the end of a phase that stopped early
        return ran

    # --- the graph ---------------------------------------------------------------------
    def _graph_for(self, h: np.ndarray, seed: int | None = None) -> torch.Tensor:
        """p_theta's graph: on ``data.graph_coords`` (built once) or on q's ``h`` (each M-step)."""
        coords = h if self.data.graph_coords is None else self.data.graph_coords
        if self._adj is None or self.data.graph_coords is None:
            self._graph_seed = int(self.rng.integers(2**31)) if seed is None else seed
            self.graph = knn_graph(
                coords, self.n_neighbors, self.config.knn_method, self._graph_seed
            )
            self._adj = row_normalized_adjacency(self.graph, self.device)
        return self._adj

    # --- the loop ------------------------------------------------------------------------
    def phases(self) -> list[tuple[str, int]]:
        """``("pretrain", 0)``, then ``("M", i)`` and ``("E", i)`` for each EM iteration."""
        its = range(1, self.config.n_em_iterations + 1)
        return [("pretrain", 0)] + [(stage, it) for it in its for stage in ("M", "E")]

    def fit(
        self, checkpoint: str | os.PathLike | None = None, resume: bool = False
    ) -> pd.DataFrame:
        """Run pre-training and the EM iterations; returns the history.

        q_phi keeps one optimiser through pre-training and all E-steps, with one warm-up and
        cosine decay over all of them, so E-steps fine-tune q_phi at a falling learning rate.
        With ``checkpoint``, the state after every phase is written there (tensors and plain
        values, read back with ``torch.load(weights_only=True)``); with ``resume``, a run
        continues from that file when it exists and gives what the uninterrupted run gives.
        """
        cfg = self.config
        with quiet_lightning():  # how many processes share an epoch's batches
            world = self.engine.trainer(1, None, None, 0).world_size
        n_labelled = int((self.data.labels >= 0).sum())
        q_steps = cfg.pretrain_epochs * (
            GeneSets.n_batches(n_labelled, cfg.batch_size) // world
        ) + (
            cfg.n_em_iterations
            * cfg.q_epochs
            * (GeneSets.n_batches(self.n_cells, cfg.batch_size) // world)
        )
        opt = torch.optim.AdamW(
            self.module.q.parameters(), lr=cfg.lr_q, weight_decay=cfg.weight_decay
        )
        self._q_optim = (opt, _schedule(opt, max(q_steps, 1)))
        phases = self.phases()
        done = (
            self._resume(checkpoint) if resume and checkpoint and os.path.exists(checkpoint) else 0
        )
        ticks = {"pretrain": cfg.pretrain_epochs, "M": cfg.p_epochs, "E": cfg.q_epochs}
        total = sum(ticks[stage] for stage, _ in phases)
        initial = sum(ticks[stage] for stage, _ in phases[:done])
        bar = tqdm(
            total=total,
            initial=initial,
            disable=not self.progress_bar or rank_zero_only.rank != 0,
            desc="scBiGNN",
            unit="epoch",
        )
        with bar:
            self._bar = bar
            h = None
            for index in range(done, len(phases)):
                stage, it = phases[index]
                self._phase = (stage, it)
                if stage != "pretrain" and h is None:  # q_phi is fixed from M- to E-step
                    logits_q, h = q_inference(
                        self.module, self.data.sets, self.data.x, device=self.device
                    )
                if stage == "pretrain":
                    self.fit_q(cfg.pretrain_epochs, None)
                elif stage == "M":  # M-step: q fixed, p learns
                    self.fit_p(h, softmax(logits_q))
                else:  # E-step: p fixed, q learns, on the M-step's graph
                    logits_p, _ = p_inference(self.module, self.data.x, h, self._adj)
                    self.fit_q(cfg.q_epochs, softmax(logits_p))
                    h = None
                if checkpoint is not None and rank_and_world()[0] == 0:
                    self._save(checkpoint, index + 1)
        return pd.DataFrame(self.data.history)

    def _save(self, path: str | os.PathLike, done: int) -> None:
        """Write the state after ``done`` phases to ``path`` (replaced atomically)."""
        opt, sched = self._q_optim
        state = {
            "done": done,
            "n_cells": self.n_cells,
            "config": asdict(self.config),
            "module": self.module.state_dict(),
            "q_optimizer": opt.state_dict(),
            "q_scheduler": sched.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": self.data.history,
            "graph_seed": self._graph_seed,
        }
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    def _resume(self, path: str | os.PathLike) -> int:
        """Restore the state of a checkpoint; returns the number of phases it had finished."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["n_cells"] != self.n_cells or state["config"] != asdict(self.config):
            raise ValueError(
                f"The checkpoint {path} is of another training run (other cells or settings); "
                "delete it or pass resume=False."
            )
        self.module.load_state_dict(state["module"])
        opt, sched = self._q_optim
        opt.load_state_dict(state["q_optimizer"])
        sched.load_state_dict(state["q_scheduler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.data.history[:] = state["history"]
        done = state["done"]
        phases = self.phases()
        seed = state["graph_seed"]
        if seed is not None and (
            self.data.graph_coords is not None or (done < len(phases) and phases[done][0] == "E")
        ):  # the graph the uninterrupted run holds at this point
            h = None
            if self.data.graph_coords is None:
                _, h = q_inference(self.module, self.data.sets, self.data.x, device=self.device)
            self._graph_for(h, seed)
        return done

    def _record(self, model, epoch, loss, val_loss, val_acc) -> None:
        stage, em_iteration = self._phase
        self.data.history.append(
            {
                "stage": stage,
                "em_iteration": em_iteration,
                "model": model,
                "epoch": epoch,
                "train_loss": loss,
                "validation_loss": val_loss,
                "validation_accuracy": val_acc,
            }
        )
        self._advance(1)

    def _advance(self, n: int) -> None:
        if self._bar is None or n <= 0:
            return
        last = self.data.history[-1]
        val = last["validation_accuracy"]
        tag = f"{last['stage']}{last['em_iteration'] or ''}:{last['model']}"
        self._bar.set_postfix(
            stage=tag,
            loss=f"{last['train_loss']:.3f}",
            val_acc="-" if val is None else f"{val:.3f}",
            refresh=False,
        )
        self._bar.update(n)

"""The EM loop of paper section 3.5: pre-train q_phi, then alternate M- and E-steps."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from scbignn_tools.data import GeneSets
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


@dataclass
class EMData:
    """What the EM loop trains on: ``labels`` holds -1 for cells without a training label."""

    sets: GeneSets
    x: torch.Tensor  # standardised expression, (N, T), on the device
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
    """Pre-train q_phi, then alternate M-steps (p_theta) and E-steps (q_phi), section 3.5."""

    def __init__(
        self,
        module: SCBiGNNModule,
        data: EMData,
        config: EMConfig,
        device,
        seed: int,
        progress_bar: bool,
        n_neighbors: int,
    ):
        self.module, self.data, self.config, self.device = module, data, config, device
        self.n_neighbors = n_neighbors
        self.rng = np.random.default_rng(seed)
        self.progress_bar = progress_bar
        self.n_cells = len(data.sets)
        self._bar = None
        self._adj = None  # p_theta's graph, kept across M-steps when it does not depend on q
        self._graph_seed: int | None = None  # the seed it was built with
        self.graph = None  # the last kNN graph (scipy), for the caller to keep
        self._class_weight = None
        if config.class_balance:
            v = class_weights(data.labels, module.n_labels, config.class_balance)
            self._class_weight = torch.as_tensor(v, device=device)

    # --- one step each -------------------------------------------------------------------
    def fit_q(
        self, stage: str, em_iteration: int, epochs: int, target_probs: np.ndarray | None
    ) -> None:
        """Train q_phi on true labels (weight beta) and, if given, pseudo-labels from p (Eqs. 6-7)."""
        cfg, data, q = self.config, self.data, self.module.q
        labelled = np.flatnonzero(data.labels >= 0)
        rows = labelled if target_probs is None else np.arange(self.n_cells)
        weights = torch.ones(self.n_cells, device=self.device)
        weights[torch.as_tensor(labelled, device=self.device)] = cfg.beta
        opt, sched = self._q_optim
        uniform = np.full((self.n_cells, self.module.n_labels), 1.0, np.float32)
        for epoch in range(epochs):
            probs = uniform if target_probs is None else target_probs
            targets = torch.as_tensor(
                draw_targets(probs, data.labels, cfg.pseudo_labels, self.rng), device=self.device
            )
            q.train()
            total = 0.0
            for part in data.sets.batches(rows, cfg.batch_size, self.rng):
                genes, values, mask = data.sets.batch(part, self.device, cfg.max_genes, self.rng)
                idx = torch.as_tensor(part, device=self.device)
                logits, _ = q(genes, values, mask, data.x[idx])
                loss = self.module.loss(logits, targets[idx], weights[idx], self._class_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(part)
            val = self._validate_q()
            self._record(stage, em_iteration, "q", epoch, total / len(rows), val)

    def fit_p(self, stage: str, em_iteration: int, h: np.ndarray, target_probs: np.ndarray) -> None:
        """Train p_theta on labels plus q's confident pseudo-labels (Eq. 9).

        The kNN graph is built on ``data.graph_coords`` or, when these are ``None``, on q's
        ``h`` (the paper). Unlabelled cells count only where q's probability of their
        pseudo-label reaches ``pseudo_label_threshold``.
        """
        cfg, data, p = self.config, self.data, self.module.p
        adj = self._graph_for(h)
        weights = torch.as_tensor(
            confident_weights(target_probs, data.labels, cfg.pseudo_label_threshold),
            device=self.device,
        )
        h_t = torch.as_tensor(h, device=self.device)
        opt = torch.optim.AdamW(p.parameters(), lr=cfg.lr_p, weight_decay=cfg.weight_decay)
        sched = _schedule(opt, cfg.p_epochs)
        for epoch in range(cfg.p_epochs):
            targets = torch.as_tensor(
                draw_targets(target_probs, data.labels, cfg.pseudo_labels, self.rng),
                device=self.device,
            )
            p.train()
            logits, _ = p(data.x, h_t, adj)
            loss = self.module.loss(logits, targets, weights, self._class_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            val = None
            if len(data.validation) and (epoch == cfg.p_epochs - 1 or epoch % 20 == 0):
                pred = (
                    logits.detach()[torch.as_tensor(data.validation, device=self.device)]
                    .argmax(1)
                    .cpu()
                    .numpy()
                )
                val = float(np.mean(pred == data.validation_labels))
            self._record(stage, em_iteration, "p", epoch, loss.item(), val, advance=False)
        self._advance(1)

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
        n_labelled = int((self.data.labels >= 0).sum())
        q_steps = cfg.pretrain_epochs * math.ceil(n_labelled / cfg.batch_size) + (
            cfg.n_em_iterations * cfg.q_epochs * math.ceil(self.n_cells / cfg.batch_size)
        )
        opt = torch.optim.AdamW(
            self.module.q.parameters(), lr=cfg.lr_q, weight_decay=cfg.weight_decay
        )
        self._q_optim = (opt, _schedule(opt, max(q_steps, 1)))
        phases = self.phases()
        done = (
            self._resume(checkpoint) if resume and checkpoint and os.path.exists(checkpoint) else 0
        )
        ticks = {"pretrain": cfg.pretrain_epochs, "M": 1, "E": cfg.q_epochs}
        total = sum(ticks[stage] for stage, _ in phases)
        initial = sum(ticks[stage] for stage, _ in phases[:done])
        bar = tqdm(
            total=total,
            initial=initial,
            disable=not self.progress_bar,
            desc="scBiGNN",
            unit="epoch",
        )
        with bar:
            self._bar = bar
            h = None
            for index in range(done, len(phases)):
                stage, it = phases[index]
                if stage != "pretrain" and h is None:  # q_phi is fixed from M- to E-step
                    logits_q, h = q_inference(
                        self.module, self.data.sets, self.data.x, device=self.device
                    )
                if stage == "pretrain":
                    self.fit_q("pretrain", 0, cfg.pretrain_epochs, None)
                elif stage == "M":  # M-step: q fixed, p learns
                    self.fit_p("M", it, h, softmax(logits_q))
                else:  # E-step: p fixed, q learns, on the M-step's graph
                    logits_p, _ = p_inference(self.module, self.data.x, h, self._adj)
                    self.fit_q("E", it, cfg.q_epochs, softmax(logits_p))
                    h = None
                if checkpoint is not None:
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

    def _validate_q(self) -> float | None:
        if not len(self.data.validation):
            return None
        logits, _ = q_inference(
            self.module, self.data.sets, self.data.x, self.data.validation, device=self.device
        )
        return float(np.mean(logits.argmax(1) == self.data.validation_labels))

    def _record(self, stage, em_iteration, model, epoch, loss, val, advance=True) -> None:
        self.data.history.append(
            {
                "stage": stage,
                "em_iteration": em_iteration,
                "model": model,
                "epoch": epoch,
                "train_loss": loss,
                "validation_accuracy": val,
            }
        )
        if advance:
            self._advance(1)

    def _advance(self, n: int) -> None:
        if self._bar is None:
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

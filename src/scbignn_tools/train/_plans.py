"""Lightning plans of the EM phases (paper section 3.5): q_phi's epochs and p_theta's steps.

Each phase of :class:`~scbignn_tools.train.EMTrainer` is one ``fit`` of an scvi-tools
:class:`~scvi.train.Trainer` (Lightning) on one of these plans, so that accelerators, several
devices (``strategy="ddp"``), callbacks and early stopping come from Lightning.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from scbignn_tools.module import SCBiGNNModule

Record = Callable[[str, int, float, float | None, float | None], None]
"""``record(model, epoch, train_loss, validation_loss, validation_accuracy)``."""


def rank_and_world() -> tuple[int, int]:
    """The rank of this process and the number of processes (0 and 1 outside ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochBatches(Sampler):
    """An epoch's batches from ``draw()``, shared out among the processes (with ``shard``).

    ``draw()`` returns the epoch's batches (arrays of cell indices) and may use a random
    generator: every process holds the same generator state, so all draw the same batches, and
    process ``r`` of ``W`` takes batches ``r, r + W, ...`` (a last incomplete round is dropped so
    that all take as many steps).
    """

    def __init__(self, draw: Callable[[], list], n_batches: int, shard: bool = True):
        self.draw, self.n_batches, self.shard = draw, n_batches, shard

    def __iter__(self):
        batches = self.draw()
        rank, world = rank_and_world()
        if world > 1 and self.shard:
            batches = batches[rank : len(batches) // world * world : world]
        yield from batches

    def __len__(self) -> int:
        world = rank_and_world()[1] if self.shard else 1
        return max(self.n_batches // world, 1)


class _Calls(Dataset):
    """A map-style dataset whose item for a key is ``fn(key)`` (a whole batch)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __getitem__(self, key):
        return self.fn(key)


def batch_loader(fn: Callable, sampler: Sampler) -> DataLoader:
    """A loader that yields ``fn(rows)`` for each batch of ``rows`` the sampler gives."""
    return DataLoader(_Calls(fn), sampler=sampler, batch_size=None, num_workers=0)


class _PhasePlan(pl.LightningModule):
    """Train loss, validation loss and accuracy per epoch, reduced over processes."""

    def __init__(self, n_labels: int, record: Record, model: str):
        super().__init__()
        self.train_loss = MeanMetric()
        self.validation_loss = MeanMetric()
        self.validation_accuracy = MulticlassAccuracy(n_labels, average="micro")
        self._record, self._model = record, model
        self._validated: tuple[float, float] | None = None

    def on_validation_epoch_end(self) -> None:
        """Log the held-out loss and accuracy of the epoch (reduced over processes)."""
        loss, acc = self.validation_loss.compute(), self.validation_accuracy.compute()
        self.validation_loss.reset()
        self.validation_accuracy.reset()
        self.log(f"validation_loss_{self._model}", loss, sync_dist=False)
        self.log(f"validation_accuracy_{self._model}", acc, sync_dist=False)
        self._validated = (float(loss), float(acc))

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training loss and record the epoch in the history."""
        loss = float(self.train_loss.compute())
        self.train_loss.reset()
        self.log(f"train_loss_{self._model}", loss)
        val_loss, val_acc = self._validated or (None, None)
        self._validated = None
        self._record(self._model, self.current_epoch, loss, val_loss, val_acc)

    def _validate(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        self.validation_loss.update(loss)
        self.validation_accuracy.update(logits, labels)


class QPlan(_PhasePlan):
    """One q_phi phase (pre-training or an E-step): the loss of Eqs. 6 and 7 per minibatch.

    Batches are dicts with ``genes``, ``values``, ``mask`` (padded gene sets), ``x``
    (standardised expression), ``targets`` and ``weights``; validation batches carry ``labels``
    instead of the last two. The optimiser and its schedule are passed in, so that they run on
    across phases.
    """

    def __init__(
        self,
        module: SCBiGNNModule,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        class_weight: torch.Tensor | None,
        record: Record,
    ):
        super().__init__(module.n_labels, record, "q")
        self.q = module.q
        self._optimizer, self._scheduler = optimizer, scheduler
        self.class_weight = class_weight

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss of q_phi on a minibatch (Eqs. 6 and 7)."""
        logits, _ = self.q(batch["genes"], batch["values"], batch["mask"], batch["x"])
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        loss = SCBiGNNModule.loss(logits, batch["targets"], batch["weights"], weight)
        self.train_loss.update(loss.detach(), weight=len(logits))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Score a batch of held-out labelled cells."""
        logits, _ = self.q(batch["genes"], batch["values"], batch["mask"], batch["x"])
        self._validate(logits, batch["labels"])

    def configure_optimizers(self):
        """The optimiser and per-step schedule shared by all q_phi phases."""
        return {
            "optimizer": self._optimizer,
            "lr_scheduler": {"scheduler": self._scheduler, "interval": "step"},
        }


class PPlan(_PhasePlan):
    """One M-step: p_theta on the whole cell graph, one full-graph step per epoch (Eq. 9).

    ``x`` ``(N, T)``, ``h`` ``(N, d)`` and the sparse ``adj`` ``(N, N)`` are fixed for the
    phase and kept on the device; each training batch carries the epoch's ``targets``
    ``(N, C)`` and ``weights`` ``(N,)``, and validation scores the held-out ``validation``
    cells (their labels hidden in training) in evaluation mode.
    """

    def __init__(
        self,
        module: SCBiGNNModule,
        x: torch.Tensor,
        h: torch.Tensor,
        adj: torch.Tensor,
        validation: np.ndarray,
        validation_labels: np.ndarray,
        lr: float,
        weight_decay: float,
        total_steps: int,
        class_weight: torch.Tensor | None,
        record: Record,
        schedule: Callable,
    ):
        super().__init__(module.n_labels, record, "p")
        self.p = module.p
        self.inputs = (x, h, adj)
        self.validation = torch.as_tensor(validation, dtype=torch.long)
        self.validation_labels = torch.as_tensor(validation_labels, dtype=torch.long)
        self.lr, self.weight_decay, self.total_steps = lr, weight_decay, total_steps
        self.class_weight = class_weight
        self._schedule = schedule

    def on_fit_start(self) -> None:
        """Move the graph's inputs to the device of the phase."""
        self.inputs = tuple(t.to(self.device) for t in self.inputs)
        self.validation = self.validation.to(self.device)
        self.validation_labels = self.validation_labels.to(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss of p_theta on the whole graph (Eq. 9)."""
        logits, _ = self.p(*self.inputs)
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        loss = SCBiGNNModule.loss(logits, batch["targets"], batch["weights"], weight)
        self.train_loss.update(loss.detach())
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """Score the held-out cells, whose labels p_theta did not see."""
        logits, _ = self.p(*self.inputs)
        self._validate(logits[self.validation], self.validation_labels)

    def configure_optimizers(self):
        """A new AdamW and warm-up and cosine schedule for this M-step."""
        opt = torch.optim.AdamW(self.p.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = self._schedule(opt, self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

"""Where the EM phases run: an scvi-tools Lightning trainer per phase."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

from lightning.pytorch.callbacks import EarlyStopping
from scvi.train import Trainer


@dataclass(frozen=True)
class Engine:
    """Where and how the EM phases run.

    Lightning's ``accelerator``, ``devices`` and ``strategy``, and further arguments of
    :class:`scvi.train.Trainer` (callbacks, precision, ...).
    """

    accelerator: str = "auto"
    devices: int | str | list = "auto"
    strategy: str = "auto"
    trainer_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        reserved = sorted(_RESERVED & set(self.trainer_kwargs))
        if reserved:
            raise ValueError(
                f"trainer_kwargs may not set {reserved}: pass them as train() arguments."
            )

    def trainer(
        self, max_epochs: int, check_every: int | None, monitor: str | None, patience: int
    ) -> Trainer:
        """An scvi-tools :class:`~scvi.train.Trainer` for one phase.

        With ``monitor``, Lightning's early stopping on that metric (lower is better) after
        ``patience`` validation checks without improvement; it works under DDP too, where
        scvi-tools' own early stopping is turned off.
        """
        kwargs = dict(self.trainer_kwargs)
        callbacks = list(kwargs.pop("callbacks", []))
        if monitor is not None:
            callbacks.append(
                EarlyStopping(
                    monitor=monitor, patience=patience, mode="min", check_on_train_epoch_end=False
                )
            )
        kwargs.setdefault("logger", False)  # the history is kept by the plans
        return Trainer(
            max_epochs=max_epochs,
            accelerator=self.accelerator,
            devices=self.devices,
            strategy=self.strategy,
            check_val_every_n_epoch=check_every,
            enable_progress_bar=False,  # one bar over all phases instead
            use_distributed_sampler=False,  # EpochBatches shares the batches out itself
            early_stopping=False,
            callbacks=callbacks,
            **kwargs,
        )


_RESERVED = {  # set by EMTrainer for every phase
    "max_epochs",
    "accelerator",
    "devices",
    "strategy",
    "check_val_every_n_epoch",
    "enable_progress_bar",
    "use_distributed_sampler",
    "early_stopping",
}


@contextmanager
def quiet_lightning():
    """Lightning announces its devices at every ``Trainer``, and each EM phase makes one."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():  # Lightning 2.6 on torch 2.13, not ours to fix
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            # scvi-tools' own early stopping is off (ours is a callback, which works with DDP)
            warnings.filterwarnings("ignore", message="early_stopping was automatically disabled")
            # the metrics are torchmetrics objects, reduced over the processes already
            warnings.filterwarnings("ignore", message="It is recommended to use `self.log")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)

"""The settings of EM training (paper section 3.5), each default in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from scbignn_tools.module import PseudoLabels

PRETRAIN_EPOCHS = 30  # q_phi's pre-training of an untrained model


@dataclass(frozen=True)
class EMConfig:
    """Schedule and optimiser settings of :meth:`~scbignn_tools.model.SCBiGNN.train`.

    The defaults of :meth:`~scbignn_tools.model.SCBiGNN.train` are these fields' defaults;
    each field is documented there.
    """

    n_em_iterations: int = 3
    pretrain_epochs: int | None = None
    q_epochs: int = 10
    p_epochs: int = 200
    lr_q: float = 3e-3
    lr_p: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_genes: int | None = 256
    beta: float = 1.0
    pseudo_labels: PseudoLabels = "argmax"
    pseudo_label_threshold: float = 0.95
    class_balance: float = 0.5
    knn_method: Literal["auto", "exact", "pynndescent"] = "auto"
    early_stopping: bool = True
    early_stopping_patience: int = 2
    p_validation_every: int = 10

    def resolved(self, trained: bool) -> EMConfig:
        """The config with ``pretrain_epochs=None`` made concrete: 0 for a trained q_phi."""
        if self.pretrain_epochs is not None:
            return self
        return replace(self, pretrain_epochs=0 if trained else PRETRAIN_EPOCHS)

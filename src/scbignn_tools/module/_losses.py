"""What the EM losses weigh (paper Eqs. 6, 7 and 9): targets, cell weights and class weights.

The loss itself is :meth:`~scbignn_tools.module.SCBiGNNModule.loss`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PseudoLabels = Literal["sample", "soft", "argmax"]


def draw_targets(
    probs: np.ndarray, labels: np.ndarray, mode: PseudoLabels, rng: np.random.Generator
) -> np.ndarray:
    r"""Targets for every cell: one-hot true labels, and pseudo-labels from ``probs`` elsewhere.

    ``"sample"`` draws :math:`\hat y_i \sim` ``probs`` (Eqs. 6 and 9), ``"argmax"`` takes the
    most likely class and ``"soft"`` keeps the distribution (the expectation in Eqs. 6 and 9).
    """
    n, c = probs.shape
    if mode == "soft":
        targets = probs.astype(np.float32, copy=True)
    else:
        if mode == "sample":
            cum = np.cumsum(probs, axis=1)
            pick = (rng.random((n, 1)) * cum[:, -1:] > cum).sum(axis=1)
        elif mode == "argmax":
            pick = probs.argmax(axis=1)
        else:
            raise ValueError(f"pseudo_labels must be 'sample', 'soft' or 'argmax', not {mode!r}.")
        targets = np.eye(c, dtype=np.float32)[np.minimum(pick, c - 1)]
    known = labels >= 0
    targets[known] = np.eye(c, dtype=np.float32)[labels[known]]
    return targets


def confident_weights(probs: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Weights of the cells in p_theta's loss (Eq. 9): 1 or 0.

    1 for labelled cells and for unlabelled cells whose most likely class has at least
    ``threshold`` probability, 0 for the others.
    """
    return ((labels >= 0) | (probs.max(axis=1) >= threshold)).astype(np.float32)


def class_weights(labels: np.ndarray, n_classes: int, exponent: float) -> np.ndarray:
    r"""Weights :math:`v_c = (n / (C\,n_c))^{\gamma}` of the classes, for a class-balanced loss.

    :math:`n_c` counts the labelled cells of class :math:`c`; :math:`\gamma` = ``exponent`` is 0
    for no balancing and 1 for sklearn's ``class_weight="balanced"``. A class without labelled
    cells weighs as the rarest class that has some. The weights are scaled so that their mean
    over the labelled cells is 1. Shape ``(n_classes,)``.
    """
    known = labels[labels >= 0]
    counts = np.bincount(known, minlength=n_classes).astype(np.float64)
    v = (len(known) / (n_classes * np.maximum(counts, 1))) ** exponent
    v[counts == 0] = v[counts > 0].max()  # a class without labelled cells: as the rarest one
    return (v / v[known].mean()).astype(np.float32)

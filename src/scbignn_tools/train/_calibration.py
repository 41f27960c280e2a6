"""Temperature scaling and calibration error of predicted probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scbignn_tools.module import softmax


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out labels (Guo et al., 2017)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(1e-2, 1e3))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """Mean confidence, accuracy and number of cells of each non-empty confidence bin.

    Parameters
    ----------
    probs
        Cells x classes probabilities.
    labels
        True class index of each cell.
    n_bins
        Equal-width bins over [0, 1] of the highest probability.

    Returns
    -------
    tuple of numpy.ndarray
        Three arrays over the non-empty bins: mean confidence, accuracy, cell count.
    """
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    keep = count > 0
    mean_conf = np.bincount(bins, conf, minlength=n_bins)[keep] / count[keep]
    accuracy = np.bincount(bins, correct, minlength=n_bins)[keep] / count[keep]
    return mean_conf, accuracy, count[keep]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: mean gap between confidence and accuracy over confidence bins."""
    return binned_calibration_error(*reliability_bins(probs, labels, n_bins))


def binned_calibration_error(conf: np.ndarray, accuracy: np.ndarray, count: np.ndarray) -> float:
    """The expected calibration error of bins from :func:`~scbignn_tools.train.reliability_bins`."""
    return float(np.sum(count * np.abs(accuracy - conf)) / count.sum())


MIN_CALIBRATION_CELLS = 10  # fewer held-out cells: no temperature is fitted


@dataclass(frozen=True)
class Calibration:
    """Temperatures of q_phi and p_theta and their expected calibration error before and after.

    The temperatures are fitted on all held-out labelled cells of
    :meth:`~scbignn_tools.model.SCBiGNN.train`. The errors after scaling are cross-fitted
    (:func:`~scbignn_tools.train.cross_fitted_calibration_error`): each cell's probabilities come from a temperature
    fitted on the other cells, so they measure what scaling does for unseen cells. The errors
    are ``None`` when fewer than ``MIN_CALIBRATION_CELLS`` were held out, and then both
    temperatures are 1 (no scaling).
    """

    n_cells: int = 0
    temperature_q: float = 1.0
    temperature_p: float = 1.0
    ece_q_before: float | None = None
    ece_q_after: float | None = None
    ece_p_before: float | None = None
    ece_p_after: float | None = None


def cross_fitted_calibration_error(
    logits: np.ndarray, labels: np.ndarray, n_splits: int = 2, seed: int = 0
) -> float:
    """Expected calibration error of temperature scaling on cells it was not fitted on.

    The cells are split into ``n_splits`` random folds; each fold's probabilities are scaled by
    the temperature fitted on the other folds, and the error is measured over all cells.
    """
    from sklearn.model_selection import KFold

    probs = np.empty_like(logits, dtype=np.float64)
    folds = KFold(n_splits, shuffle=True, random_state=seed).split(logits)
    for fit, held in folds:
        probs[held] = softmax(logits[held] / fit_temperature(logits[fit], labels[fit]))
    return expected_calibration_error(probs, labels)


def calibrate(
    logits_q: np.ndarray, logits_p: np.ndarray, labels: np.ndarray, seed: int = 0
) -> Calibration:
    """Temperatures of q_phi and p_theta on held-out labelled cells, with ECE before and after.

    The error after scaling is cross-fitted (:func:`~scbignn_tools.train.cross_fitted_calibration_error`).
    """
    if len(labels) < MIN_CALIBRATION_CELLS:
        return Calibration(n_cells=int(len(labels)))
    out: dict[str, float] = {"n_cells": int(len(labels))}
    for name, logits in (("q", logits_q), ("p", logits_p)):
        out[f"temperature_{name}"] = fit_temperature(logits, labels)
        out[f"ece_{name}_before"] = expected_calibration_error(softmax(logits), labels)
        out[f"ece_{name}_after"] = cross_fitted_calibration_error(logits, labels, seed=seed)
    return Calibration(**out)

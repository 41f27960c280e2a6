"""Calibration: the error is torchmetrics', and the error after scaling is measured out of sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from scbignn_tools import train
from scbignn_tools.train import (
    calibrate,
    cross_fitted_calibration_error,
    expected_calibration_error,
    fit_temperature,
)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize(("n", "n_classes", "n_bins"), [(500, 3, 15), (1000, 10, 10), (40, 4, 5)])
def test_ece_equals_torchmetrics(n, n_classes, n_bins):
    rng = np.random.default_rng(n)
    probs = _softmax(rng.normal(scale=3, size=(n, n_classes)))
    labels = rng.integers(0, n_classes, n)
    want = multiclass_calibration_error(
        torch.as_tensor(probs), torch.as_tensor(labels), n_classes, n_bins=n_bins, norm="l1"
    )
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(float(want), abs=1e-6)


def test_temperature_scaling_fits_overconfident_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3))
    logits[np.arange(500), labels] += 1.0
    t = fit_temperature(logits * 10, labels)  # ten times too confident
    assert 8 < t < 12
    assert expected_calibration_error(_softmax(logits * 10 / t), labels) < (
        expected_calibration_error(_softmax(logits * 10), labels)
    )


def test_error_after_scaling_is_measured_on_cells_the_temperature_never_saw(monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 32)
    logits = rng.normal(size=(32, 4)) * 5
    seen = []
    fit = train._calibration.fit_temperature

    def spy(z, y):
        seen.append({tuple(row) for row in z})
        return fit(z, y)

    monkeypatch.setattr(train._calibration, "fit_temperature", spy)
    cross_fitted_calibration_error(logits, labels)
    assert len(seen) == 2 and not seen[0] & seen[1]  # two folds, each fitted on the other
    assert seen[0] | seen[1] == {tuple(row) for row in logits}
    monkeypatch.setattr(train._calibration, "fit_temperature", fit)
    cal = calibrate(logits, logits, labels)
    assert cal.ece_p_after == cross_fitted_calibration_error(logits, labels)
    assert cal.temperature_p == fit_temperature(logits, labels)  # all cells, for predictions
    assert cal.ece_p_before == pytest.approx(expected_calibration_error(_softmax(logits), labels))


def test_too_few_cells_fit_no_temperature():
    cal = calibrate(np.zeros((5, 2)), np.zeros((5, 2)), np.array([0, 1, 0, 1, 0]))
    assert cal.temperature_p == 1.0 and cal.ece_p_after is None and cal.n_cells == 5

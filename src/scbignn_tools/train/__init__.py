"""Paper section 3.5: the EM loop and its settings; calibration of the trained model."""

from ._calibration import (
    Calibration,
    binned_calibration_error,
    calibrate,
    cross_fitted_calibration_error,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from ._config import EMConfig
from ._em import EMData, EMTrainer, Engine, validation_split
from ._history import scvi_history
from ._plans import PPlan, QPlan

__all__ = [
    "Calibration",
    "EMConfig",
    "EMData",
    "EMTrainer",
    "Engine",
    "PPlan",
    "QPlan",
    "binned_calibration_error",
    "calibrate",
    "cross_fitted_calibration_error",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "scvi_history",
    "validation_split",
]

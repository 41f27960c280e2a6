"""The one place that touches private scvi-tools API."""

from __future__ import annotations

import torch
from scvi.model._utils import parse_device_args


def resolve_device(accelerator: str = "auto", devices: int | str = "auto") -> torch.device:
    """The torch device scvi-tools would train on for these ``accelerator``/``devices`` values."""
    _, _, device = parse_device_args(
        accelerator, devices, return_device="torch", validate_single_device=True
    )
    return device

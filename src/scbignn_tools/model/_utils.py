"""The one place that touches private scvi-tools API."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model._utils import parse_device_args
from scvi.model.base._archesmixin import _pad_and_sort_query_anndata


def resolve_device(
    accelerator: str = "auto", devices: int | str | list[int] = "auto", single: bool = True
) -> torch.device:
    """The torch device scvi-tools would use for these ``accelerator``/``devices`` values.

    With ``single``, several devices are refused (prediction uses one).
    """
    _, _, device = parse_device_args(
        accelerator, devices, return_device="torch", validate_single_device=single
    )
    return device


def process_device(device: torch.device, devices: int | str | list[int]) -> torch.device:
    """The GPU of this process when Lightning's DDP runs one process per GPU (``LOCAL_RANK``)."""
    rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type != "cuda" or rank == 0:
        return device
    ids = devices if isinstance(devices, list) else list(range(torch.cuda.device_count()))
    return torch.device("cuda", ids[rank])


def pad_and_sort(adata: AnnData, var_names) -> AnnData:
    """``adata`` with exactly ``var_names`` (missing genes as zeros), as scvi-tools pads queries.

    May change ``adata`` itself: pass a copy.
    """
    out = _pad_and_sort_query_anndata(adata, pd.Index(var_names), inplace=False)
    return adata if out is None else out


def reference_var_names(registry: dict) -> np.ndarray:
    """The genes of the AnnData a registry was made from."""
    field = registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return np.asarray(field["column_names"])

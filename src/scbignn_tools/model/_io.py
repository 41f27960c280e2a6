"""Reading a saved model folder: the one place that opens ``model.pt``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from anndata import AnnData
from mudata import MuData

from scbignn_tools.graph import ReferenceGraph
from scbignn_tools.train import Calibration


@dataclass
class SavedModel:
    """The contents of a folder written by :meth:`SCBiGNN.save`.

    ``attributes`` are the model's public attributes ending in ``_`` (``registry_``,
    ``init_params_``, ``history_``, ``reference_``...), ``state_dict`` the module's tensors.
    """

    attributes: dict
    var_names: np.ndarray
    state_dict: dict

    @property
    def genes(self) -> list[str]:
        """The model genes, in the order of its gene embeddings."""
        return [str(g) for g in self.attributes["init_params_"]["non_kwargs"]["genes"]]


def read_saved(dir_path: str | os.PathLike, prefix: str | None = None) -> SavedModel:
    """Read a model folder written by :meth:`SCBiGNN.save` (scvi-tools' layout)."""
    path = os.path.join(dir_path, f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{dir_path} holds no saved model ({prefix or ''}model.pt); save one with "
            "model.save(...) or `scbignn train`."
        )
    saved = torch.load(path, map_location="cpu", weights_only=False)
    state = dict(saved["model_state_dict"])
    state.pop("pyro_param_store", None)
    return SavedModel(dict(saved["attr_dict"]), np.asarray(saved["var_names"]), state)


class SaveLoadMixin:
    """``load`` of :class:`~scbignn_tools.model.SCBiGNN`, with scvi-tools' signature."""

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
    ):
        """Load a model saved by :meth:`~scvi.model.base.BaseModelClass.save`.

        Parameters
        ----------
        dir_path
            The folder the model was saved to.
        adata
            An AnnData laid out like the reference (the reference itself, or a query from
            :meth:`prepare_query_anndata`); it is registered with the saved setup, as
            scvi-tools does. ``None``: a model without data, which annotates any AnnData passed
            to it. To annotate a query, :meth:`load_query_data` is simpler.
        accelerator
            As in scvi-tools.
        device
            As in scvi-tools.
        prefix
            Prefix of the saved file names.
        backup_url
            Not supported: models are read from local folders only.

        Returns
        -------
        The model.
        """
        if backup_url is not None:
            raise ValueError("backup_url is not supported; download the folder and pass its path.")
        return cls._from_saved(read_saved(dir_path, prefix), adata, accelerator, device)

    @classmethod
    def _from_saved(cls, saved: SavedModel, adata, accelerator: str, device: int | str):
        """Build a model from what a folder (or a model in memory) holds."""
        from ._utils import resolve_device

        attributes = dict(saved.attributes)
        registry = attributes.pop("registry_")
        if registry.get("model_name", cls.__name__) != cls.__name__:
            raise ValueError(f"The folder holds a {registry['model_name']}, not an {cls.__name__}.")
        init_params = attributes.pop("init_params_")
        if adata is not None:
            method = getattr(cls, registry.get("setup_method_name", "setup_anndata"))
            method(adata, source_registry=registry, **registry["setup_args"])
        model = cls(adata, registry=registry, **init_params["non_kwargs"])
        for key, value in upgrade_attributes(attributes, init_params).items():
            setattr(model, key, value)
        model.module.load_state_dict(saved.state_dict)
        model.module.to(resolve_device(accelerator, device))
        model.module.eval()
        model._clear_caches()
        return model


def upgrade_attributes(attributes: dict, init_params: dict) -> dict:
    """Typed objects for what folders of version 0.1 saved as dicts (reference, calibration)."""
    out = dict(attributes)
    knn_method = out.pop("knn_method_", "auto")
    ref = out.get("reference_")
    if isinstance(ref, dict):
        kw = init_params["non_kwargs"]
        out["reference_"] = ReferenceGraph(
            **ref,
            n_neighbors=kw.get("n_neighbors", 10),
            knn_method=knn_method,
            seed=kw.get("seed", 0),
        )
    cal = out.get("calibration_")
    if isinstance(cal, dict):
        out["calibration_"] = Calibration(**cal)
    return out

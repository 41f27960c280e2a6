"""The model folder format: JSON, safetensors and ``.npz`` arrays, so that opening runs no code.

A folder holds ``model.json`` (format version, settings, registry, genes, classes,
calibration, history), ``weights.safetensors`` (the module's tensors) and, unless the model was
saved without them, ``reference.npz`` (the reference graph's arrays, read with
``allow_pickle=False``). Nothing on this path unpickles. Folders of scbignn-tools 0.1 (a pickled
``model.pt``) are refused; ``_legacy.read_pickled`` converts them on the user's explicit opt-in.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from scipy import sparse

from scbignn_tools.graph import ReferenceGraph
from scbignn_tools.train import Calibration

FORMAT_VERSION = 1
MODEL_FILE, WEIGHTS_FILE, REFERENCE_FILE = "model.json", "weights.safetensors", "reference.npz"
PICKLED_FILE = "model.pt"  # the format of scbignn-tools 0.1


class ModelFolderError(ValueError):
    """A folder that is not a model this version can open safely."""


@dataclass
class SavedModel:
    """What a model folder holds, as plain objects.

    ``attributes`` are the model's saved attributes (``registry_``, ``init_params_``,
    ``is_trained_``, ``history_``, ``calibration_``, ``reference_``, ``gene_selection_``),
    ``state_dict`` the module's tensors.
    """

    attributes: dict
    var_names: np.ndarray
    state_dict: dict

    @property
    def genes(self) -> list[str]:
        """The model genes, in the order of its gene embeddings."""
        return [str(g) for g in self.attributes["init_params_"]["non_kwargs"]["genes"]]


def _file(dir_path, prefix: str | None, name: str) -> Path:
    return Path(dir_path) / f"{prefix or ''}{name}"


def write_folder(
    saved: SavedModel, dir_path, prefix: str | None, overwrite: bool, extra=None
) -> None:
    """Write ``saved`` into ``dir_path`` atomically: a temporary folder beside it, then a rename.

    ``extra(tmp_dir)`` may write more files (the AnnData). Other files already in the folder
    are kept; the model's own files are replaced only with ``overwrite``.
    """
    target = Path(dir_path)
    names = [f"{prefix or ''}{n}" for n in (MODEL_FILE, WEIGHTS_FILE, REFERENCE_FILE)]
    if target.exists() and not target.is_dir():
        raise ModelFolderError(f"{target} is a file; give a folder to save the model to.")
    if not overwrite and any(
        (target / n).exists() for n in [*names, f"{prefix or ''}{PICKLED_FILE}"]
    ):
        raise ModelFolderError(
            f"{target} already holds a model; pass overwrite=True to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.saving-"))
    try:
        if target.exists():  # keep what else the folder holds
            for item in target.iterdir():
                if item.name not in names and item.is_file():
                    shutil.copy2(item, tmp / item.name)
        a = saved.attributes
        save_file({k: v.contiguous() for k, v in saved.state_dict.items()}, tmp / names[1])
        ref = a.get("reference_")
        if ref is not None:
            np.savez(tmp / names[2], **_graph_arrays(ref))
        if extra is not None:
            extra(tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "model": a["registry_"].get("model_name", "SCBiGNN"),
            "scbignn_tools_version": _version(),
            "init_params": a["init_params_"],
            "registry": _encode(a["registry_"]),
            "var_names": [str(v) for v in saved.var_names],
            "is_trained": bool(a.get("is_trained_", False)),
            "gene_selection": a.get("gene_selection_", "given"),
            "calibration": asdict(a.get("calibration_") or Calibration()),
            "history": _history_to_json(a.get("history_")),
            "reference": None if ref is None else _graph_meta(ref),
        }
        (tmp / names[0]).write_text(json.dumps(meta, indent=1))
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_folder(dir_path, prefix: str | None = None) -> SavedModel:
    """Read a folder written by :func:`write_folder`; refuses anything else, runs no code."""
    path = _file(dir_path, prefix, MODEL_FILE)
    if not path.exists():
        if _file(dir_path, prefix, PICKLED_FILE).exists():
            raise ModelFolderError(
                f"{dir_path} holds a model in the pickled format of scbignn-tools 0.1 "
                f"({prefix or ''}{PICKLED_FILE}). Opening a pickle runs any code it holds, so it "
                "is not opened. If you trust where it came from, convert it once with "
                f"SCBiGNN.convert_pickled_save({str(dir_path)!r}, 'converted_model', "
                "trust_pickle=True) and open the new folder."
            )
        raise FileNotFoundError(
            f"{dir_path} holds no saved model ({prefix or ''}{MODEL_FILE}); save one with "
            "model.save(...) or `scbignn train`."
        )
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(
            f"{path} is not a scbignn-tools model file (not JSON: {err})."
        ) from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise ModelFolderError(f"{path} is not a scbignn-tools model file (no format_version).")
    if meta["format_version"] > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path} has format version {meta['format_version']}, newer than this "
            f"scbignn-tools ({_version()}) reads ({FORMAT_VERSION}); upgrade scbignn-tools."
        )
    try:
        state = load_file(_file(dir_path, prefix, WEIGHTS_FILE))
    except (SafetensorError, OSError) as err:
        raise ModelFolderError(f"The weights of {dir_path} cannot be read: {err}") from None
    reference = None
    if meta["reference"] is not None:
        try:
            with np.load(_file(dir_path, prefix, REFERENCE_FILE), allow_pickle=False) as arrays:
                reference = _graph_from_arrays(dict(arrays), meta["reference"])
        except (ValueError, OSError, KeyError) as err:
            raise ModelFolderError(
                f"The reference cells of {dir_path} cannot be read: {err}"
            ) from None
    attributes = {
        "registry_": _decode(meta["registry"]),
        "init_params_": meta["init_params"],
        "is_trained_": meta["is_trained"],
        "gene_selection_": meta["gene_selection"],
        "calibration_": Calibration(**meta["calibration"]),
        "history_": _history_from_json(meta["history"]),
        "reference_": reference,
    }
    return SavedModel(attributes, np.asarray(meta["var_names"], dtype=object), state)


# ---------------------------------------------------------------------------- plain encodings
def _encode(value):
    """JSON for a registry: numpy arrays become ``{"__ndarray__": [...], "dtype": ...}``."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, np.ndarray):
        kind = "str" if value.dtype.kind in "OUS" else value.dtype.str
        return {"__ndarray__": value.tolist(), "dtype": kind}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Index):
        return {"__ndarray__": [str(v) for v in value], "dtype": "str"}
    return value


def _decode(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            if value["dtype"] == "str":
                return np.asarray(value["__ndarray__"], dtype=object)
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _history_to_json(history: pd.DataFrame | None) -> dict | None:
    if history is None:
        return None
    data = {c: [None if _isnan(v) else _plain(v) for v in history[c]] for c in history.columns}
    return {"data": data, "dtypes": {c: str(t) for c, t in history.dtypes.items()}}


def _history_from_json(history: dict | None) -> pd.DataFrame | None:
    if history is None:
        return None
    frame = pd.DataFrame(history["data"])
    return frame.astype({c: t for c, t in history["dtypes"].items() if t != "object"})


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float | np.floating) and np.isnan(v))


def _graph_arrays(g: ReferenceGraph) -> dict[str, np.ndarray]:
    out = {"h": g.h, "labels": g.labels, "obs_names": np.asarray(g.obs_names, dtype=str)}
    out["own_distances"] = g.reference_distances()  # novelty's yardstick: not recomputed on load
    for name, m in (("x", g.x), ("adj", g.adj)):
        m = sparse.csr_matrix(m)
        out |= {f"{name}_data": m.data, f"{name}_indices": m.indices, f"{name}_indptr": m.indptr}
        out[f"{name}_shape"] = np.asarray(m.shape)
    if g.basis is not None:  # a graph of h has h as its coordinates: not stored twice
        out["basis_mean"], out["basis_components"] = g.basis
        out["coords"] = g.coords
    return out


def _graph_meta(g: ReferenceGraph) -> dict:
    return {"n_neighbors": g.n_neighbors, "knn_method": g.knn_method, "seed": g.seed}


def _graph_from_arrays(a: dict, meta: dict) -> ReferenceGraph:
    def csr(name):
        shape = tuple(int(s) for s in a[f"{name}_shape"])
        return sparse.csr_matrix(
            (a[f"{name}_data"], a[f"{name}_indices"], a[f"{name}_indptr"]), shape
        )

    basis = (a["basis_mean"], a["basis_components"]) if "basis_mean" in a else None
    own = a.get("own_distances")  # absent in older folders: measured when needed
    n_labelled = int((a["labels"] >= 0).sum())
    if own is not None and (
        own.shape != (n_labelled,) or not np.isfinite(own).all() or (np.diff(own) < 0).any()
    ):
        raise ValueError(
            f"own_distances should be the {n_labelled} labelled cells' sorted, finite "
            f"neighbour distances, not an array of shape {own.shape}; the file is damaged"
        )
    return ReferenceGraph(
        x=csr("x"),
        h=a["h"],
        coords=a["h"] if basis is None else a["coords"],  # a graph of h: the same array
        basis=basis,
        adj=csr("adj"),
        labels=a["labels"],
        obs_names=a["obs_names"],
        n_neighbors=int(meta["n_neighbors"]),
        knn_method=meta["knn_method"],
        seed=int(meta["seed"]),
        own_distances=own,
    )


def _version() -> str:
    from importlib.metadata import version

    return version("scbignn-tools")

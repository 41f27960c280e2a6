"""Folders of scbignn-tools 0.1 (a pickled ``model.pt``), read through a restricted unpickler.

A pickle names the functions that rebuild its objects, and a planted one can name ``exec`` or
``os.system``. The unpickler here resolves only the types a 0.1 folder holds (numpy arrays,
scipy's CSR matrix, pandas' DataFrame, torch tensors, plain containers) and refuses any other
name before anything is called (the pattern of Python's ``pickle`` documentation, "Restricting
Globals"), so even a converted folder runs no code from the file.
"""

from __future__ import annotations

import inspect
import pickle
import types

import numpy as np
import numpy.dtypes
import torch

from scbignn_tools.graph import ReferenceGraph
from scbignn_tools.train import Calibration

from ._format import PICKLED_FILE, ModelFolderError, SavedModel, _file

_ALLOWED = {
    ("_codecs", "encode"),  # numpy's pickles carry raw bytes this way
    ("builtins", "dict"),
    ("builtins", "slice"),
    ("__builtin__", "dict"),
    ("__builtin__", "slice"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("torch._utils", "_rebuild_tensor_v2"),
} | {("numpy.dtypes", name) for name, _ in inspect.getmembers(numpy.dtypes, inspect.isclass)}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise ModelFolderError(
                f"The 0.1 model file names {module}.{name}, which a model folder does not hold; "
                "it is not opened."
            )
        return super().find_class(module, name)


_RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="scbignn_restricted_pickle",
    Unpickler=_RestrictedUnpickler,
    load=lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load(),
)


def read_pickled(dir_path, prefix: str | None = None) -> SavedModel:
    """Read a folder of scbignn-tools 0.1, resolving only the types such a folder holds."""
    saved = torch.load(
        _file(dir_path, prefix, PICKLED_FILE),
        map_location="cpu",
        weights_only=False,  # torch's own allowlist cannot rebuild pandas' DataFrame; ours can
        pickle_module=_RESTRICTED_PICKLE,
    )
    state = dict(saved["model_state_dict"])
    state.pop("pyro_param_store", None)
    attributes = dict(saved["attr_dict"])
    init = attributes["init_params_"]
    knn_method = attributes.pop("knn_method_", "auto")
    ref = attributes.get("reference_")
    if isinstance(ref, dict):  # 0.1 kept the reference graph as a dict
        kw = init["non_kwargs"]
        attributes["reference_"] = ReferenceGraph(
            **ref,
            n_neighbors=kw.get("n_neighbors", 10),
            knn_method=knn_method,
            seed=kw.get("seed", 0),
        )
    if isinstance(attributes.get("calibration_"), dict):
        attributes["calibration_"] = Calibration(**attributes["calibration_"])
    return SavedModel(attributes, np.asarray(saved["var_names"]), state)

"""Where the model meets AnnData: the setup it was registered with, and cells read as arrays."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    LabelsWithUnlabeledObsField,
    LayerField,
    MuDataLabelsWithUnlabeledObsField,
    MuDataLayerField,
)

from scbignn_tools.data import DataFormat, check_expression, model_input

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass(frozen=True)
class Setup:
    """The arguments of ``setup_anndata``/``setup_mudata`` and the classes, read from a registry.

    A model reads any AnnData through this, registered or not: a query is never registered.
    """

    labels_key: str
    unlabeled_category: str
    classes: tuple[str, ...]
    layer: str | None = None
    data_format: DataFormat = "counts"
    rna_mod: str | None = None  # the RNA modality of a MuData, None for AnnData

    @classmethod
    def from_registry(cls, registry: dict) -> Setup:
        """The setup of a registry (``model.registry_``)."""
        args = registry["setup_args"]
        labels = registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
        mapping = [str(c) for c in labels["categorical_mapping"]]
        mods = args.get("modalities")
        return cls(
            labels_key=args["labels_key"],
            unlabeled_category=str(args["unlabeled_category"]),
            classes=tuple(mapping[:-1]),  # the unlabelled category is last
            layer=args.get("layer"),
            data_format=args.get("data_format", "counts"),
            rna_mod=None if mods is None else mods.get("rna_layer", "rna"),
        )

    def rna(self, adata: AnnData | MuData) -> AnnData:
        """The AnnData holding the expression: ``adata`` itself or its RNA modality."""
        return adata[self.rna_mod or "rna"] if isinstance(adata, MuData) else adata


@dataclass
class Cells:
    """Cells resolved into arrays once: names, normalised expression of the model genes, labels.

    ``x`` is ``(N, T)`` sparse in the model's gene order (missing genes are zero); ``labels``
    holds class codes, -1 for unlabelled cells.
    """

    names: np.ndarray
    x: sparse.csr_matrix
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, rows: np.ndarray) -> Cells:
        """The cells at ``rows``."""
        return Cells(self.names[rows], self.x[rows], self.labels[rows])

    @staticmethod
    def concat(first: Cells, second: Cells) -> Cells:
        """``first``'s cells followed by ``second``'s."""
        return Cells(
            np.concatenate([first.names, second.names]),
            sparse.vstack([first.x, second.x]).tocsr(),
            np.concatenate([first.labels, second.labels]),
        )


class SetupMixin:
    """``setup_anndata`` and ``setup_mudata`` of :class:`~scbignn_tools.model.SCBiGNN`."""

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        unlabeled_category: str,
        layer: str | None = None,
        data_format: DataFormat = "counts",
        **kwargs,
    ) -> None:
        """Register an AnnData with cell type labels for :class:`SCBiGNN`.

        Parameters
        ----------
        adata
            AnnData with cells in rows.
        labels_key
            Column of ``adata.obs`` with the cell types.
        unlabeled_category
            Value in ``labels_key`` of the cells to annotate (the unlabelled cells).
        layer
            Layer with the expression; ``None`` uses ``adata.X``.
        data_format
            ``"counts"`` (raw, non-negative integers) or ``"log1p"`` (unscaled log-normalised
            values, as after ``sc.pp.normalize_total`` and ``sc.pp.log1p``).
        **kwargs
            Passed on to :meth:`~scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> import scanpy as sc
        >>> import scbignn_tools as scbignn
        >>> adata = sc.read_h5ad("reference.h5ad")  # raw counts in X
        >>> scbignn.model.SCBiGNN.setup_anndata(
        ...     adata, labels_key="cell_type", unlabeled_category="Unknown"
        ... )
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_setup(adata, labels_key, unlabeled_category, layer, data_format, kwargs)
        fields_ = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category),
        ]
        adata_manager = AnnDataManager(fields=fields_, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        labels_key: str,
        unlabeled_category: str,
        layer: str | None = None,
        data_format: DataFormat = "counts",
        modalities: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        """Register a MuData whose RNA modality holds the expression and labels.

        Parameters
        ----------
        mdata
            MuData with an RNA modality.
        labels_key
            Column of the RNA modality's ``obs`` with the cell types.
        unlabeled_category
            Value in ``labels_key`` of the cells to annotate.
        layer
            Layer of the RNA modality with the expression; ``None`` uses its ``X``.
        data_format
            ``"counts"`` or ``"log1p"``, as in :meth:`setup_anndata`.
        modalities
            ``{"rna_layer": name}``: the RNA modality, ``"rna"`` by default.
        **kwargs
            Passed on to :meth:`~scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> scbignn.model.SCBiGNN.setup_mudata(
        ...     mdata,
        ...     labels_key="cell_type",
        ...     unlabeled_category="Unknown",
        ...     modalities={"rna_layer": "rna"},
        ... )
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        rna = (modalities or {}).get("rna_layer", "rna")
        if rna not in mdata.mod:
            raise KeyError(
                f"MuData has no modality {rna!r}; its modalities are {list(mdata.mod)}. "
                "Name the RNA one with modalities={'rna_layer': ...}."
            )
        check_setup(mdata[rna], labels_key, unlabeled_category, layer, data_format, kwargs)
        fields_ = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY, layer, mod_key=rna, is_count_data=False, mod_required=True
            ),
            MuDataLabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category, mod_key=rna
            ),
        ]
        adata_manager = AnnDataManager(fields=fields_, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)


def read_cells(
    adata: AnnData | MuData, setup: Setup, genes: list[str], check: bool = True
) -> Cells:
    """Read ``adata`` into :class:`Cells`: checks, normalisation, the model's genes, label codes.

    Cells without a ``labels_key`` column, with the unlabelled category or with a type the model
    does not know (a warning says how many) are unlabelled. ``check=False`` skips the pass over
    the values (:func:`~scbignn_tools.data.check_expression`) for data already checked.
    """
    rna = setup.rna(adata)
    if rna.n_obs == 0:
        raise ValueError("The AnnData has no cells; there is nothing to annotate.")
    if setup.layer is not None and setup.layer not in rna.layers:
        raise KeyError(f"The model reads layer {setup.layer!r}, which this data lacks.")
    X = rna.layers[setup.layer] if setup.layer is not None else rna.X
    if check:
        check_expression(X, setup.data_format, f"layers[{setup.layer!r}]" if setup.layer else "X")
    x = model_input(X, rna.var_names, genes, setup.data_format)
    n_empty = int(np.sum(np.diff(x.indptr) == 0))
    if n_empty:
        raise ValueError(
            f"{n_empty} cells express none of the model's {len(genes)} genes, so nothing can "
            "be said about them. Remove them, e.g. adata = adata[np.asarray(adata[:, "
            "model.genes].X.sum(1)).ravel() > 0], or check that the genes are named as in the "
            "reference."
        )
    labels = np.full(rna.n_obs, -1, dtype=np.int64)
    if setup.labels_key in rna.obs:
        values = rna.obs[setup.labels_key].astype(str).to_numpy()
        labels = pd.Categorical(values, categories=list(setup.classes)).codes.astype(np.int64)
        unknown = (labels < 0) & (values != setup.unlabeled_category)
        if unknown.any():
            warnings.warn(
                f"{int(unknown.sum())} cells have types in obs[{setup.labels_key!r}] that the "
                f"model does not know (e.g. {values[unknown][0]!r}); they count as unlabelled.",
                UserWarning,
                stacklevel=3,
            )
    return Cells(np.asarray(rna.obs_names, dtype=str), x, labels)


def check_training_labels(labels: np.ndarray, setup: Setup) -> None:
    """Raise a clear error when the labels cannot train a classifier."""
    present = np.unique(labels[labels >= 0])
    if len(present) == 0:
        raise ValueError(
            f"No labelled cells: every cell of obs[{setup.labels_key!r}] is the "
            "unlabeled_category. SCBiGNN needs a labelled reference."
        )
    if len(present) < 2:
        raise ValueError(
            f"Only one cell type ({setup.classes[present[0]]!r}) is labelled in "
            f"obs[{setup.labels_key!r}]; a classifier needs at least two."
        )


def check_setup(adata, labels_key, unlabeled_category, layer, data_format, kwargs) -> None:
    """Clear errors for bad input before scvi-tools registers it."""
    transfer = kwargs.get("source_registry") is not None
    if transfer:
        kwargs.setdefault("allow_missing_labels", True)
    elif labels_key not in adata.obs:
        raise KeyError(
            f"labels_key {labels_key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}). Put the cell types there, with "
            f"{unlabeled_category!r} for the cells to annotate."
        )
    if labels_key in adata.obs and adata.obs[labels_key].isna().any():
        raise ValueError(
            f"obs[{labels_key!r}] has {int(adata.obs[labels_key].isna().sum())} missing "
            f"values. Fill them with the unlabeled_category, e.g. "
            f"adata.obs[{labels_key!r}] = adata.obs[{labels_key!r}].astype(object).fillna({unlabeled_category!r})."
        )
    if labels_key in adata.obs and not transfer:
        _check_unlabeled_category(adata.obs[labels_key], labels_key, unlabeled_category)
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} is not in adata.layers ({list(adata.layers)}).")
    X = adata.layers[layer] if layer is not None else adata.X
    check_expression(X, data_format, f"layers[{layer!r}]" if layer else "adata.X")


def _check_unlabeled_category(labels: pd.Series, key: str, unlabeled_category) -> None:
    """Refuse an unlabelled category that the data spell otherwise; say when no cell has it."""
    numeric = pd.api.types.is_numeric_dtype(labels) or (
        isinstance(labels.dtype, pd.CategoricalDtype)
        and pd.api.types.is_numeric_dtype(labels.cat.categories)
    )
    if numeric and isinstance(unlabeled_category, str):
        raise ValueError(
            f"obs[{key!r}] holds numbers ({labels.dtype}) but unlabeled_category is the text "
            f"{unlabeled_category!r}. Make the labels text first: adata.obs[{key!r}] = "
            f"adata.obs[{key!r}].astype(str), with {unlabeled_category!r} for the cells to "
            "annotate."
        )
    values = labels.astype(str)
    if (values == str(unlabeled_category)).any():
        return
    wanted = str(unlabeled_category).strip().casefold()
    variants = sorted({v for v in values.unique() if v.strip().casefold() == wanted})
    if variants:
        n = int(values.isin(variants).sum())
        raise ValueError(
            f"No cell of obs[{key!r}] is {unlabeled_category!r}, but {n} are "
            f"{' or '.join(repr(v) for v in variants)}: as written they would be trained as a "
            f"cell type. Pass unlabeled_category={variants[0]!r}, or rename them."
        )
    warnings.warn(
        f"No cell of obs[{key!r}] is {unlabeled_category!r}: all {len(values)} cells are "
        "labelled and train as reference cells. Set the cells to annotate to "
        f"{unlabeled_category!r} if there are any.",
        UserWarning,
        stacklevel=4,
    )

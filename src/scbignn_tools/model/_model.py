from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass

from scbignn_tools.data import DataFormat, gene_columns, log_normalize, select_genes
from scbignn_tools.graph import ReferenceGraph
from scbignn_tools.module import (
    SCBiGNNModule,
    importance_table,
)
from scbignn_tools.train import (
    Calibration,
)

from ._anndata import Cells, Setup, SetupMixin, read_cells
from ._annotate import AnnotateMixin
from ._inference import Predictor
from ._io import SaveLoadMixin
from ._query import QueryMixin
from ._training import TrainingMixin


class SCBiGNN(SetupMixin, TrainingMixin, AnnotateMixin, QueryMixin, SaveLoadMixin, BaseModelClass):
    """scBiGNN: bilevel gene- and cell-level GNNs for cell type annotation (Yang et al., 2023).

    q_phi, a gene-level GNN, learns each cell's representation ``h`` by self-attention among the
    cell's non-zero genes; p_theta, a cell-level GNN, classifies cells from ``h`` and their
    expression on a kNN graph of the cells (of the expression by default, of ``h`` in the
    paper; see ``cell_graph``). They are trained alternately by EM on the labelled cells and on
    each other's pseudo-labels for the unlabelled ones (:meth:`train`).

    Parameters
    ----------
    adata
        AnnData (or MuData) registered with :meth:`setup_anndata` (or :meth:`setup_mudata`);
        ``None`` only with ``registry`` and ``genes`` (when a saved model is loaded).
    n_top_genes
        Number ``T`` of variable genes the model uses (ranked by ``gene_selection``).
    gene_selection
        How the ``n_top_genes`` are ranked: ``"variance"`` of the log-normalised data (the
        paper), scanpy's ``"seurat_v3"`` on the counts or ``"cell_ranger"`` on the
        log-normalised data; ``"auto"`` is ``"seurat_v3"`` for counts and ``"cell_ranger"`` for
        ``log1p`` input (``docs/method.md`` compares them).
    genes
        Use these genes instead of selecting ``n_top_genes``. A saved model stores its genes
        here, so that query data are mapped to the same genes.
    n_features
        Feature size of both GNNs.
    n_hidden
        Hidden size of every MLP.
    gene_layers
        Attention layers of q_phi (the paper: 2, or 1 for BaronMouse).
    gene_heads
        Attention heads per layer of q_phi (the paper: 1, or 4 for BaronMouse).
    readout
        q_phi's read-out (Eq. 5): ``"learnable"`` per-gene weights or ``"mean"``.
    cell_layers
        Graph layers of p_theta.
    n_neighbors
        ``k`` of the kNN graph of p_theta.
    cell_graph
        The space of p_theta's kNN graph: ``"expression"``, 50 principal components of the
        standardised expression, or ``"q"``, q_phi's ``h`` (the paper, section 3.4). On a graph
        of ``h``, p_theta repeated q_phi's predictions on every fold of BaronMouse and PBMC3k;
        on the expression graph it corrects q_phi (``docs/method.md``).
    dropout_q
        Dropout in q_phi's attention layers and on the input of its linear path.
    dropout_p
        Dropout in p_theta.
    linear_path
        Give q_phi a linear path from the standardised expression, which the paper does not
        have (see :class:`~scbignn_tools.module.GeneLevelGNN`); ``False`` is the paper's q_phi.
    seed
        Seed of the parameter initialisation and of all randomness in :meth:`train`.
    registry
        A saved model's registry: the model is being rebuilt (by :meth:`load`), so it needs no
        AnnData, and its per-gene statistics come from the saved weights.

    Attributes
    ----------
    history_
        What :meth:`train` did, a DataFrame with a row per epoch of each phase (its losses and
        held-out accuracy).
    calibration_
        The temperature of p_theta's probabilities and the held-out calibration error before and
        after it (:class:`~scbignn_tools.train.Calibration`).
    reference_
        The frozen reference cells, their kNN graph and p_theta's outputs on them
        (:class:`~scbignn_tools.graph.ReferenceGraph`); ``None`` before :meth:`train`.

    Examples
    --------
    >>> import scbignn_tools as scbignn
    >>> scbignn.model.SCBiGNN.setup_anndata(
    ...     adata, labels_key="cell_type", unlabeled_category="Unknown"
    ... )
    >>> model = scbignn.model.SCBiGNN(adata)
    >>> model.train()
    >>> model.annotate(adata)
    """

    _module_cls = SCBiGNNModule

    def __init__(
        self,
        adata: AnnData | MuData | None = None,
        n_top_genes: int = 2000,
        gene_selection: Literal["auto", "seurat_v3", "cell_ranger", "variance"] = "auto",
        genes: Sequence[str] | None = None,
        n_features: int = 32,
        n_hidden: int = 32,
        gene_layers: int = 2,
        gene_heads: int = 1,
        readout: Literal["learnable", "mean"] = "learnable",
        cell_layers: int = 3,
        n_neighbors: int = 10,
        cell_graph: Literal["expression", "q"] = "expression",
        dropout_q: float = 0.5,
        dropout_p: float = 0.5,
        linear_path: bool = True,
        seed: int = 0,
        registry: dict | None = None,
    ):
        super().__init__(adata, registry=registry)
        if cell_graph not in ("expression", "q"):
            raise ValueError(f"cell_graph must be 'expression' or 'q', not {cell_graph!r}.")
        self._setup = Setup.from_registry(self.registry_)
        X = var_names = x_norm = None
        if adata is not None:
            rna = self._setup.rna(adata)
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            var_names = rna.var_names
            if genes is None or registry is None:  # once, for the genes and their statistics
                x_norm = log_normalize(X, self._data_format)
        self.gene_selection_ = "given"  # the ranking that chose the genes, saved with the model
        if genes is None:
            if X is None:
                raise ValueError("Without an AnnData the model needs its `genes`.")
            if gene_selection == "auto":
                gene_selection = "seurat_v3" if self._data_format == "counts" else "cell_ranger"
            counts = X if self._data_format == "counts" else None
            selection = select_genes(x_norm, var_names, n_top_genes, gene_selection, counts)
            genes, self.gene_selection_ = selection.genes, selection.describe()
        genes = [str(g) for g in genes]
        self.n_neighbors = n_neighbors
        self.cell_graph = cell_graph
        self.seed = seed
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.module = self._module_cls(
                n_genes=len(genes),
                n_labels=len(self.classes),
                n_features=n_features,
                n_hidden=n_hidden,
                gene_layers=gene_layers,
                gene_heads=gene_heads,
                readout=readout,
                cell_layers=cell_layers,
                dropout_q=dropout_q,
                dropout_p=dropout_p,
                linear_path=linear_path,
            )
        if X is not None and registry is None:  # per-gene statistics that standardise p_theta's
            # input; a model rebuilt from a saved registry takes them from its saved weights
            x = gene_columns(x_norm, var_names, genes)
            mean = np.asarray(x.mean(axis=0)).ravel()
            std = np.sqrt(np.maximum(np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2, 0))
            self.module.gene_mean.copy_(torch.as_tensor(mean))
            self.module.gene_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))
        self._model_summary_string = (
            f"SCBiGNN model with {len(genes)} genes ({self.gene_selection_}), "
            f"{len(self.classes)} cell types; q_phi: "
            f"{gene_layers} attention layer(s) x {gene_heads} head(s), {readout} read-out; "
            f"p_theta: {cell_layers} graph layers on a {n_neighbors}-NN graph of "
            f"{'the expression' if cell_graph == 'expression' else 'h'}."
        )
        self.calibration_ = Calibration()
        self.reference_: ReferenceGraph | None = None
        self._clear_caches()
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ outputs
    def predict(
        self,
        adata: AnnData | MuData | None = None,
        soft: bool = False,
        model: Literal["p", "q"] = "p",
        batch_size: int = 256,
        remove_query_shift: bool = True,
    ) -> np.ndarray | pd.DataFrame:
        """Cell types predicted by p_theta (default) or q_phi.

        Cells of p_theta's trained graph (same name and same expression) get the graph's
        prediction; other cells join the graph inductively, each linked to its nearest graph
        cells, so that a cell's prediction does not depend on the other cells passed with it.

        Parameters
        ----------
        adata
            Data to annotate, with the same kind of values as the training data; ``None``
            uses the AnnData of the model. Genes are matched by name.
        soft
            Return the class probabilities instead of the labels.
        model
            ``"p"`` for p_theta (cell-level GNN), ``"q"`` for q_phi (gene-level GNN).
        batch_size
            Cells per q_phi batch.
        remove_query_shift
            As in :meth:`get_annotation`; p_theta only.

        Returns
        -------
        Labels (``soft=False``) or a cells x cell types DataFrame of probabilities.

        Examples
        --------
        >>> labels = model.predict(query)
        >>> probabilities = model.predict(query, soft=True)  # cells x cell types
        """
        cells = self._cells(adata)
        out = self._infer(cells, model == "p", remove_query_shift, batch_size)
        probs = out.probs_p if model == "p" else out.probs_q
        if soft:
            return pd.DataFrame(probs, index=pd.Index(cells.names), columns=self.classes)
        return np.asarray(self.classes)[probs.argmax(1)]

    def get_latent_representation(
        self,
        adata: AnnData | MuData | None = None,
        representation: Literal["h", "h_prime"] = "h",
        batch_size: int = 256,
    ) -> np.ndarray:
        """Cell representations: q_phi's ``h`` (Eq. 1) or p_theta's jumping-knowledge ``h_prime``.

        Parameters
        ----------
        adata
            Data to embed; ``None`` uses the AnnData of the model.
        representation
            ``"h"`` (n_features columns) or ``"h_prime"`` (p_theta's input and all its layers).
        batch_size
            Cells per q_phi batch.

        Returns
        -------
        numpy.ndarray
            Cells x features, in the order of ``adata``'s cells.

        Examples
        --------
        >>> adata.obsm["X_scbignn"] = model.get_latent_representation()
        >>> sc.pp.neighbors(adata, use_rep="X_scbignn")
        """
        if representation == "h_prime" and self.reference_ is None and self.is_trained_:
            raise ValueError("This model was saved without reference cells: no h_prime.")
        out = self._infer(self._cells(adata), representation == "h_prime", True, batch_size)
        return out.h if representation == "h" else out.h_prime

    def get_gene_importance(
        self,
        adata: AnnData | MuData | None = None,
        groupby: str | np.ndarray | None = None,
        batch_size: int = 32,
    ) -> pd.Series | pd.DataFrame:
        r"""Attention-derived gene importance (paper section 4.5).

        The attention matrices of all heads, layers and cells are averaged into one gene x gene
        matrix :math:`\tilde{\mathbf{A}}` (each pair over the cells that express both genes),
        and gene :math:`j` scores :math:`s_j = \sum_i \tilde A_{ij}`, the attention it receives.

        Parameters
        ----------
        adata
            Cells to average over; ``None`` uses the AnnData of the model.
        groupby
            ``None`` for one score per gene; ``"prediction"`` for one per predicted cell type;
            else a column of ``adata.obs`` or an array with a group per cell.
        batch_size
            Cells per batch (the attention of a batch is ``batch_size x L x L``).

        Returns
        -------
        pandas.Series or pandas.DataFrame
            A Series over the model's genes, or a genes x groups DataFrame (groups in the
            model's order of :attr:`classes` when they are cell types of the model, else sorted).

        Examples
        --------
        >>> model.get_gene_importance().nlargest(10)
        >>> per_type = model.get_gene_importance(groupby="prediction")  # genes x types
        """
        target = self._target(adata)
        cells = self._cells(target)
        by_prediction = isinstance(groupby, str) and groupby == "prediction"
        out = self._infer(cells, by_prediction, True, batch_size, attention=by_prediction)
        if groupby is None:
            groups = np.zeros(len(cells), int)
        elif by_prediction:
            groups = np.asarray(self.classes)[out.probs_p.argmax(1)]
        elif isinstance(groupby, str):
            groups = np.asarray(self._setup.rna(target).obs[groupby])
        else:
            groups = np.asarray(groupby)
        acc = self._predictor().attention(out, groups, batch_size, self.classes)
        table = importance_table(acc, self.genes)
        return table.iloc[:, 0].rename("importance") if groupby is None else table

    def get_normalized_expression(self, *args, **kwargs):
        """Not for this model: scBiGNN classifies cells and does not model their expression.

        Use :func:`scanpy.pp.normalize_total` for normalised expression,
        :meth:`get_latent_representation` for embeddings.
        """
        raise NotImplementedError(
            "SCBiGNN classifies cells and does not model expression: use sc.pp.normalize_total "
            "for normalised expression, model.get_latent_representation() for embeddings."
        )

    def differential_abundance(self, *args, **kwargs):
        """Not for this model: see :meth:`get_gene_importance` for the genes behind each type."""
        raise NotImplementedError(
            "SCBiGNN has no differential abundance: model.get_gene_importance(groupby="
            "'prediction') gives the genes behind each predicted type."
        )

    # ------------------------------------------------------------------ helpers
    @property
    def genes(self) -> list[str]:
        """The model's genes, in the order of its gene embeddings."""
        return list(self.init_params_["non_kwargs"]["genes"])

    @property
    def classes(self) -> list[str]:
        """Cell types the model predicts, in the order of its outputs."""
        return list(self._setup.classes)

    @property
    def _data_format(self) -> DataFormat:
        return self._setup.data_format

    def _target(self, adata: AnnData | MuData | None) -> AnnData | MuData:
        if adata is not None:
            return adata
        if self.adata is None:
            raise ValueError("This model has no AnnData; pass the data to annotate.")
        return self.adata

    def _cells(self, adata: AnnData | MuData | None) -> Cells:
        """The cells of ``adata`` (``None``: the model's) as arrays."""
        target = self._target(adata)
        own = target is self.adata  # checked by setup_anndata, or when load_query_data took it
        with warnings.catch_warnings():
            if own:  # its missing genes were reported when it was attached
                warnings.filterwarnings("ignore", "(?s).*missing from the data", UserWarning)
            return read_cells(target, self._setup, self.genes, check=not own)

    def _predictor(self) -> Predictor:
        """Both GNNs against the reference graph (one per trained state, with its caches)."""
        if self._predictor_cache is None:
            self._predictor_cache = Predictor(self.module, self.reference_, self.calibration_)
        return self._predictor_cache

    def _infer(
        self,
        cells: Cells,
        with_p: bool,
        remove_shift: bool,
        batch_size: int,
        attention: bool = False,
        own_cells: Cells | None = None,
    ):
        """:meth:`Predictor.infer`, with the shift of the model's own query cells (cached).

        With ``attention``, the first pass over the model's own query cells also sums their
        attention, for :meth:`Predictor.attention`. ``own_cells``: the model's own cells when
        the caller has just read them (not read twice).
        """
        self._check_if_trained(warn=False)
        own = None
        if with_p and self.reference_ is None:
            warnings.warn(
                "This model was saved without its reference cells (reference_cells='none'): "
                "p_theta cannot place cells among them, so these labels come from q_phi and "
                "novelty is not measured.",
                UserWarning,
                stacklevel=3,
            )
        elif with_p and remove_shift and self.adata is not None:
            if self._own_query_cache is _UNSET:
                own_cells = self._cells(None) if own_cells is None else own_cells
                self._own_query_cache = self._predictor().own_query(own_cells, attention)
            own = self._own_query_cache
        return self._predictor().infer(cells, with_p, remove_shift, batch_size, own)

    def _clear_caches(self) -> None:
        self._predictor_cache = None
        self._own_query_cache = _UNSET


_UNSET = object()

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
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
from scvi.model.base import ArchesMixin, BaseModelClass
from sklearn.model_selection import train_test_split

from scbignn_tools.module import SCBiGNNModule

from ._calibration import calibrate
from ._data import GeneSets
from ._graph import (
    expression_basis,
    extend_graph,
    knn_graph,
    novelty,
    project,
    query_shift,
    row_normalized_adjacency,
)
from ._importance import AttentionAccumulator
from ._preprocessing import (
    DataFormat,
    align_genes,
    check_expression,
    log_normalize,
    model_input,
    select_genes,
)
from ._training import EMConfig, EMData, EMTrainer, PseudoLabels, p_inference, q_inference, softmax
from ._utils import resolve_device

logger = logging.getLogger(__name__)


MIN_SHIFT_CELLS = 50  # fewer query cells than this: no shift correction


class SCBiGNN(BaseModelClass):
    """scBiGNN: bilevel gene- and cell-level GNNs for cell type annotation (Yang et al., 2023).

    q_phi, a gene-level GNN, learns each cell's representation ``h`` by self-attention among the
    cell's non-zero genes; p_theta, a cell-level GNN, classifies cells from ``h`` and their
    expression on a kNN graph of the cells (of the expression by default, of ``h`` in the
    paper; see ``cell_graph``). They are trained alternately by EM on the labelled cells and on
    each other's pseudo-labels for the unlabelled ones (:meth:`train`).

    Parameters
    ----------
    adata
        AnnData (or MuData) registered with :meth:`setup_anndata` (or :meth:`setup_mudata`).
    n_top_genes
        Number ``T`` of variable genes the model uses (ranked by ``gene_selection``).
    gene_selection
        How the ``n_top_genes`` are ranked: ``"variance"`` of the log-normalised data (the
        paper, with 1,000 genes), scanpy's ``"seurat_v3"`` on the counts or ``"cell_ranger"`` on
        the log-normalised data; ``"auto"`` is ``"seurat_v3"`` for counts and ``"cell_ranger"``
        for ``log1p`` input. A logistic regression on the genes chosen from the training cells
        scored (accuracy) 0.989 / 0.987 / 0.968 on BaronMouse and 0.925 / 0.896 / 0.882 from
        Kang CTRL to STIM with 2,000 ``seurat_v3``, 2,000 ``cell_ranger`` and 1,000 variance
        genes (``docs/method.md``).
    genes
        Use these genes instead of selecting ``n_top_genes``. A saved model stores the genes it
        chose here, so that query data are mapped to the same genes.
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
        of ``h``, p_theta learned nothing q_phi did not know and repeated its predictions on
        every fold of BaronMouse and PBMC3k; on the expression graph it corrects q_phi
        (PBMC3k, 20% of labels hidden, p_theta on the labelled cells: 0.917 on ``h``, 0.938 on
        the expression, q_phi 0.915; ``docs/method.md``).
    dropout_q
        Dropout in q_phi's attention layers and on the input of its linear path. Without it
        q_phi fits its training labels exactly: on PBMC3k (20% of labels hidden) 0.5 raised
        q_phi from 0.875 to 0.930, above logistic regression's 0.924.
    dropout_p
        Dropout in p_theta (on PBMC3k, 20% hidden: 0.900 with 0.1, 0.938 with 0.5).
    linear_path
        Give q_phi a linear path from the standardised expression, which the paper does not
        have (see :class:`~scbignn_tools.module.GeneLevelGNN`); ``False`` is the paper's q_phi.
    seed
        Seed of the parameter initialisation and of all randomness in :meth:`train`.

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
        adata: AnnData | MuData,
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
    ):
        super().__init__(adata)
        X, var_names = self._expression(None)
        if genes is None:
            if gene_selection == "auto":
                gene_selection = "seurat_v3" if self._data_format == "counts" else "cell_ranger"
            counts = X if self._data_format == "counts" else None
            genes = select_genes(
                log_normalize(X, self._data_format), var_names, n_top_genes, gene_selection, counts
            )
        genes = [str(g) for g in genes]
        if cell_graph not in ("expression", "q"):
            raise ValueError(f"cell_graph must be 'expression' or 'q', not {cell_graph!r}.")
        self.n_neighbors = n_neighbors
        self.cell_graph = cell_graph
        self.seed = seed
        mapping = self._label_mapping()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.module = self._module_cls(
                n_genes=len(genes),
                n_labels=len(mapping),
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
        x = model_input(X, var_names, genes, self._data_format)
        mean = np.asarray(x.mean(axis=0)).ravel()
        std = np.sqrt(np.maximum(np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2, 0))
        self.module.gene_mean.copy_(torch.as_tensor(mean))
        self.module.gene_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))
        self._model_summary_string = (
            f"SCBiGNN model with {len(genes)} genes, {len(mapping)} cell types; q_phi: "
            f"{gene_layers} attention layer(s) x {gene_heads} head(s), {readout} read-out; "
            f"p_theta: {cell_layers} graph layers on a {n_neighbors}-NN graph of "
            f"{'the expression' if cell_graph == 'expression' else 'h'}."
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
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
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        _check_setup(adata, labels_key, unlabeled_category, layer, data_format, kwargs)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
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
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        rna = (modalities or {}).get("rna_layer", "rna")
        if rna not in mdata.mod:
            raise KeyError(
                f"MuData has no modality {rna!r}; its modalities are {list(mdata.mod)}. "
                "Name the RNA one with modalities={'rna_layer': ...}."
            )
        _check_setup(mdata[rna], labels_key, unlabeled_category, layer, data_format, kwargs)
        fields = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY, layer, mod_key=rna, is_count_data=False, mod_required=True
            ),
            MuDataLabelsWithUnlabeledObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category, mod_key=rna
            ),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ query data
    @classmethod
    def prepare_query_anndata(
        cls, adata: AnnData, reference: str | os.PathLike | SCBiGNN
    ) -> AnnData:
        """Return ``adata`` with the reference's genes, in its order (missing genes as zeros).

        Checks first how many of the model's own genes the query has: a warning names the
        missing share, and too low an overlap is an error that says why (Ensembl IDs against
        symbols, another species' casing). Then pads and reorders with scvi-tools'
        :meth:`~scvi.model.base.ArchesMixin.prepare_query_anndata`.

        Parameters
        ----------
        adata
            Query data with genes in ``var_names``.
        reference
            A trained model or the folder it was saved to.

        Returns
        -------
        A new AnnData, ready for :meth:`load_query_data` or :meth:`load`.
        """
        if adata.n_obs == 0:
            raise ValueError("The query AnnData has no cells; there is nothing to annotate.")
        genes = reference.genes if isinstance(reference, SCBiGNN) else _saved_genes(reference)
        align_genes(adata.var_names, genes)
        model = reference if isinstance(reference, SCBiGNN) else str(reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scvi's own padding notice; ours is above
            return ArchesMixin.prepare_query_anndata(adata, model, inplace=False)

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference: str | os.PathLike | SCBiGNN,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SCBiGNN:
        """A model for query cells, from a trained reference model, with no reference AnnData.

        The result annotates the query at once by linking each query cell to its nearest
        reference cells (inductive mode: :meth:`predict`, :meth:`annotate`). Calling its
        :meth:`train` instead runs EM further with the query cells as unlabelled cells beside
        the reference cells kept in the model (the paper's transductive setting): slower,
        and usually more accurate under a shift between reference and query.

        Parameters
        ----------
        adata
            Query data of the same kind of values as the reference (counts or ``log1p``).
            Genes are matched by name. Cells with a label in the reference's ``labels_key``
            count as labelled; cells without the column are unlabelled.
        reference
            A trained model or the folder it was saved to.
        accelerator
            As in scvi-tools.
        device
            As in scvi-tools.

        Returns
        -------
        A trained :class:`SCBiGNN` whose AnnData is the (gene-aligned) query.
        """
        query = cls.prepare_query_anndata(adata, reference)
        if isinstance(reference, SCBiGNN):
            with tempfile.TemporaryDirectory() as tmp:
                reference.save(tmp, overwrite=True)
                return cls.load(tmp, adata=query, accelerator=accelerator, device=device)
        return cls.load(str(reference), adata=query, accelerator=accelerator, device=device)

    # ------------------------------------------------------------------ training
    def train(
        self,
        n_em_iterations: int = 3,
        pretrain_epochs: int | None = None,
        q_epochs: int = 10,
        p_epochs: int = 200,
        lr_q: float = 3e-3,
        lr_p: float = 1e-2,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_genes: int | None = 256,
        beta: float = 1.0,
        pseudo_labels: PseudoLabels = "argmax",
        pseudo_label_threshold: float = 0.95,
        class_balance: float = 0.5,
        validation_size: float = 0.1,
        knn_method: Literal["auto", "exact", "pynndescent"] = "auto",
        accelerator: str = "auto",
        devices: int | str = "auto",
        progress_bar: bool = True,
    ) -> None:
        """Pre-train q_phi on the labelled cells, then run EM (paper section 3.5).

        Each EM iteration has an M-step (p_theta learns from true labels and from the
        pseudo-labels of q_phi that reach ``pseudo_label_threshold``, Eq. 9; with
        ``cell_graph="q"`` its kNN graph is first rebuilt from q_phi's ``h``) and an E-step (q_phi
        learns from true labels and pseudo-labels drawn from p_theta, Eqs. 6 and 7). The losses
        and held-out validation accuracy of every epoch go to :attr:`history_`.

        Parameters
        ----------
        n_em_iterations
            Number of EM iterations (the paper: 3).
        pretrain_epochs
            Epochs of q_phi on the labelled cells before EM; ``None`` is 30 for a new model and
            0 for a query model from :meth:`load_query_data`, whose q_phi is already trained.
        q_epochs
            Epochs of q_phi in each E-step.
        p_epochs
            Full-graph steps of p_theta in each M-step.
        lr_q
            Peak learning rate of q_phi (AdamW; one warm-up and cosine decay over pre-training
            and all E-steps).
        lr_p
            Peak learning rate of p_theta (warm-up and cosine decay in each M-step).
        weight_decay
            AdamW weight decay of both GNNs.
        batch_size
            Cells per q_phi minibatch.
        max_genes
            In training, cells with more non-zero model genes attend among a random subset of
            this many (drawn anew each batch), which bounds the quadratic cost of attention;
            prediction always uses every gene. ``None`` uses every gene in training too.
        beta
            Weight of the labelled cells' loss against the pseudo-labelled ones (Eq. 7).
        pseudo_labels
            ``"argmax"``, ``"sample"`` (the paper: a new draw every epoch) or ``"soft"``
            pseudo-labels. On BaronMouse, sampling lowered q_phi's validation accuracy in the
            E-steps (0.974 after pre-training, 0.947 after the first E-step); argmax kept it.
        pseudo_label_threshold
            In the M-step, unlabelled cells count only where q_phi gives their pseudo-label at
            least this probability (the paper: 0, every cell). With every cell, p_theta (which
            sees q_phi's ``h``) learned to repeat q_phi and never corrected it; even a weight of
            0.05 on all pseudo-labels did that on PBMC3k. With 0.9 to 0.99 it corrects q_phi
            (0.936 to 0.939 against q_phi's 0.915).
        class_balance
            Exponent of the class weights ``(n / (C n_c)) ** class_balance`` on every loss term
            (:func:`~scbignn_tools.model.class_weights`): 0 weighs every cell alike, 1 makes
            each cell type count as much as any other (sklearn's ``"balanced"``). In the 5-fold
            cross-validation 0.5 raised BaronMouse from 0.983 to 0.985, PBMC3k from 0.924 to
            0.925 and Kang 2018 from 0.954 to 0.957, but for inductive annotation of a strongly
            shifted query (Kang CTRL to STIM) 0 did better, 0.921 against 0.902
            (``docs/method.md``).
        validation_size
            Share of the labelled cells held out (their labels hidden) to measure accuracy.
        knn_method
            ``"exact"`` (sklearn), ``"pynndescent"`` or ``"auto"`` (exact up to 50,000 cells).
        accelerator
            ``"auto"``, ``"cpu"``, ``"gpu"``..., as in scvi-tools.
        devices
            Device(s) to use, as in scvi-tools; training uses one.
        progress_bar
            Show a progress bar.
        """
        device = resolve_device(accelerator, devices)
        self.module.to(device)
        query = self._is_query()
        if pretrain_epochs is None:
            pretrain_epochs = 0 if query else 30
        x_in, labels, obs_names = self._graph_cells(query)
        labelled = np.flatnonzero(labels >= 0)
        validation = _validation_split(labels, labelled, validation_size, self.seed)
        validation_labels = labels[validation]
        train_labels = labels.copy()
        train_labels[validation] = -1
        x = self._standardize(x_in)
        basis = None
        if self.cell_graph == "expression":
            basis = (
                self.reference_["basis"]
                if query
                else expression_basis(x.cpu().numpy(), seed=self.seed)
            )
        coords = None if basis is None else _graph_coords(x, None, basis)
        data = EMData(GeneSets(x_in), x, train_labels, validation, validation_labels, coords)
        config = EMConfig(
            n_em_iterations=n_em_iterations,
            pretrain_epochs=pretrain_epochs,
            q_epochs=q_epochs,
            p_epochs=p_epochs,
            lr_q=lr_q,
            lr_p=lr_p,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_genes=max_genes,
            beta=beta,
            pseudo_labels=pseudo_labels,
            pseudo_label_threshold=pseudo_label_threshold,
            n_neighbors=self.n_neighbors,
            knn_method=knn_method,
            class_balance=class_balance,
        )
        torch.manual_seed(self.seed)
        trainer = EMTrainer(self.module, data, config, device, self.seed, progress_bar)
        self.history_ = trainer.fit()
        self.knn_method_ = knn_method
        self.is_trained_ = True
        self.module.eval()
        # the final graph of p_theta, kept for prediction and for query cells (inductive mode)
        logits_q, h = q_inference(self.module, data.sets, x, device=device)
        coords = _graph_coords(x, h, basis)
        adj = trainer.graph  # the expression graph does not change with q_phi's h
        if basis is None or adj is None:
            adj = knn_graph(coords, self.n_neighbors, knn_method, self.seed)
        logits_p, _ = p_inference(self.module, x, h, row_normalized_adjacency(adj, device))
        self.reference_ = {
            "x": x_in,
            "h": h,
            "coords": coords,  # the cells' coordinates in the space of the graph
            "basis": basis,  # the expression axes of the graph, None for a graph of h
            "adj": adj,
            "labels": labels,
            "obs_names": obs_names,
        }
        self._own_query_shift = None
        self.calibration_ = calibrate(logits_q[validation], logits_p[validation], validation_labels)

    # ------------------------------------------------------------------ outputs
    def predict(
        self,
        adata: AnnData | None = None,
        soft: bool = False,
        model: Literal["p", "q"] = "p",
        batch_size: int = 256,
        remove_query_shift: bool = True,
    ) -> np.ndarray | pd.DataFrame:
        """Cell types predicted by p_theta (default) or q_phi.

        Parameters
        ----------
        adata
            Data to annotate, with the same kind of values as the training data; ``None``
            uses the AnnData of the model. Genes are matched by name. p_theta builds its graph
            over the cells given.
        soft
            Return the class probabilities instead of the labels.
        model
            ``"p"`` for p_theta (cell-level GNN), ``"q"`` for q_phi (gene-level GNN).
        batch_size
            Cells per q_phi batch.
        remove_query_shift
            As in :meth:`annotate`; p_theta only.

        Returns
        -------
        Labels (``soft=False``) or a cells x cell types DataFrame of probabilities.
        """
        out = self._infer(adata, batch_size, with_p=model == "p", remove_shift=remove_query_shift)
        probs = out["probs_p"] if model == "p" else out["probs_q"]
        if soft:
            return pd.DataFrame(probs, index=out["obs_names"], columns=self.classes)
        return np.asarray(self.classes)[probs.argmax(1)]

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
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
        Array of cells x features.
        """
        out = self._infer(adata, batch_size, with_p=representation == "h_prime")
        return out["h"] if representation == "h" else out["h_prime"]

    def get_gene_importance(
        self,
        adata: AnnData | None = None,
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
        A Series over the model's genes, or a genes x groups DataFrame.
        """
        self._check_if_trained(warn=False)
        target = self._target(adata)
        if groupby is None:
            groups = np.zeros(target.n_obs, int)
        elif isinstance(groupby, str) and groupby == "prediction":
            groups = self.predict(adata)
        elif isinstance(groupby, str):
            groups = np.asarray(self._rna(target).obs[groupby])
        else:
            groups = np.asarray(groupby)
        per_group = self._attention(target, groups, batch_size)
        table = pd.DataFrame(
            {k: acc.importance() for k, acc in per_group.items()},
            index=pd.Index(self.genes, name="gene"),
        )
        return table.iloc[:, 0].rename("importance") if groupby is None else table

    def _attention(
        self, target, groups: np.ndarray, batch_size: int, inputs=None
    ) -> dict[str, AttentionAccumulator]:
        """An :class:`AttentionAccumulator` per group of cells (``inputs`` from :meth:`_inputs`)."""
        sets, x = inputs if inputs is not None else self._inputs(target)
        out = {}
        for name, rows in pd.Series(groups).groupby(groups, observed=True).indices.items():
            acc = AttentionAccumulator(len(self.genes), self.device)
            q_inference(self.module, sets, x, rows, batch_size, self.device, attention_hook=acc)
            out[name] = acc
        return out

    def annotate(
        self,
        adata: AnnData | None = None,
        *,
        key_added: str = "scbignn",
        unknown_threshold: float | None = 0.5,
        novelty_threshold: float | None = 0.999,
        unknown_label: str = "Unknown",
        gene_importance: bool = True,
        remove_query_shift: bool = True,
        copy: bool = False,
        batch_size: int = 256,
    ) -> AnnData | None:
        """Write predictions, confidences, embeddings and gene importances into an AnnData.

        Parameters
        ----------
        adata
            Data to annotate; ``None`` annotates the AnnData of the model.
        key_added
            Prefix of every key written.
        unknown_threshold
            Cells whose p_theta confidence (calibrated, see :attr:`calibration_`) is below this
            get ``unknown_label`` instead of a cell type; ``None`` labels every cell.
        novelty_threshold
            Cells whose novelty (:func:`~scbignn_tools.model.novelty`: their distance to the
            labelled reference cells in ``h``, as a share of the reference cells' own
            distances) is above this also get ``unknown_label``; ``None`` turns this test off.
            Cell types the reference lacks are caught far better by novelty than by confidence
            (``docs/benchmarks.md``).
        unknown_label
            Label of rejected cells.
        gene_importance
            Also compute the attention-derived gene importances (one more pass over the cells).
        remove_query_shift
            Before linking cells that are not in the trained graph to it (inductive mode),
            remove the expression shift they share against the reference
            (:func:`~scbignn_tools.model.query_shift`). Turn off only to see its effect.
        copy
            Annotate and return a copy instead of writing in place.
        batch_size
            Cells per q_phi batch.

        Returns
        -------
        ``None``, or the annotated copy if ``copy=True``. Writes (for MuData, into the RNA
        modality):

        ``obs[key_added]``
            p_theta's cell type (categorical), or ``unknown_label`` below ``unknown_threshold``.
        ``obs[f"{key_added}_confidence"]``
            p_theta's probability of that type.
        ``obs[f"{key_added}_novelty"]``
            The cell's novelty against the labelled reference cells, in [0, 1].
        ``obs[f"{key_added}_q"]``
            q_phi's cell type.
        ``obsm[f"X_{key_added}"]``
            q_phi's cell representation ``h``.
        ``obsm[f"{key_added}_probabilities"]``
            p_theta's class probabilities, a column per type in the order of
            ``uns[key_added]["classes"]``.
        ``var[f"{key_added}_importance"]``
            Gene importance (section 4.5); NaN for genes the model does not use.
        ``varm[f"{key_added}_importance"]``
            Gene importance per predicted cell type, columns as in ``uns[key_added]["classes"]``
            (NaN for a type no cell was predicted as). Arrays rather than DataFrames, because
            cell type names may contain ``/``, which h5ad files do not allow in column names.
        ``uns[key_added]``
            The classes, the settings of this call (a threshold that is off is NaN) and
            ``query_shift``: the root mean square of the expression shift removed from
            inductive cells (:func:`query_shift`), in reference standard deviations per gene; 0
            for cells of the trained graph or with ``remove_query_shift=False``.
        """
        target = self._target(adata)
        if copy:
            target = target.copy()
        out = self._infer(target, batch_size, with_p=True, remove_shift=remove_query_shift)
        rna = self._rna(target)
        classes = pd.Index(self.classes)
        pred = out["probs_p"].argmax(1)
        confidence = out["probs_p"].max(1)
        ref = self.reference_
        novel = novelty(
            ref["h"][ref["labels"] >= 0], out["h"], self.n_neighbors, self.knn_method_, self.seed
        )
        labels = pd.Categorical.from_codes(pred, categories=classes)
        unknown = np.zeros(len(pred), bool)
        if unknown_threshold is not None:
            unknown |= confidence < unknown_threshold
        if novelty_threshold is not None:
            unknown |= novel > novelty_threshold
        if unknown_threshold is not None or novelty_threshold is not None:
            labels = labels.add_categories([unknown_label])
            labels[unknown] = unknown_label
        rna.obs[key_added] = labels
        rna.obs[f"{key_added}_confidence"] = confidence
        rna.obs[f"{key_added}_novelty"] = novel
        rna.obs[f"{key_added}_q"] = pd.Categorical.from_codes(
            out["probs_q"].argmax(1), categories=classes
        )
        rna.obsm[f"X_{key_added}"] = out["h"]
        # arrays, not DataFrames: cell type names such as "CD4+/CD25 T Reg" cannot be column
        # names in an h5ad file (anndata 0.12 warns that forward slashes will be refused)
        rna.obsm[f"{key_added}_probabilities"] = out["probs_p"]
        if gene_importance:
            per_type = self._attention(target, classes[pred].to_numpy(), 32, out["inputs"])
            genes = pd.Index(self.genes)
            table = pd.DataFrame({k: a.importance() for k, a in per_type.items()}, index=genes)
            overall = functools.reduce(lambda a, b: a.merge(b), per_type.values()).importance()
            rna.var[f"{key_added}_importance"] = (
                pd.Series(overall, index=genes).reindex(rna.var_names).to_numpy()
            )
            rna.varm[f"{key_added}_importance"] = table.reindex(
                index=rna.var_names, columns=classes
            ).to_numpy()
        rna.uns[key_added] = {
            "classes": list(classes),
            "model": "p_theta",
            "n_neighbors": self.n_neighbors,
            # NaN for "off": h5ad cannot store None, and any number could be a real threshold
            "unknown_threshold": np.nan if unknown_threshold is None else unknown_threshold,
            "novelty_threshold": np.nan if novelty_threshold is None else novelty_threshold,
            "remove_query_shift": remove_query_shift,
            "query_shift": out.get("query_shift", 0.0),
        }
        if isinstance(target, MuData):
            target.update()
        return target if copy else None

    # ------------------------------------------------------------------ helpers
    @property
    def genes(self) -> list[str]:
        """The model's genes, in the order of its gene embeddings."""
        return (
            list(self.init_params_["non_kwargs"]["genes"]) if hasattr(self, "init_params_") else []
        )

    @property
    def classes(self) -> list[str]:
        """Cell types the model predicts, in the order of its outputs."""
        return [str(c) for c in self._label_mapping()]

    @property
    def _data_format(self) -> DataFormat:
        return self.adata_manager.registry["setup_args"].get("data_format", "counts")

    def _label_mapping(self) -> np.ndarray:
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        return np.asarray(state.categorical_mapping)[:-1]  # the unlabelled category is last

    def _train_labels(self) -> np.ndarray:
        """Label codes of the model's cells, -1 for unlabelled; raises if training is impossible."""
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        n_classes = len(self._label_mapping())
        codes = np.where(codes >= n_classes, -1, codes).astype(np.int64)
        key = self.adata_manager.registry["setup_args"]["labels_key"]
        present = np.unique(codes[codes >= 0])
        if len(present) == 0:
            raise ValueError(
                f"No labelled cells: every cell of obs[{key!r}] is the unlabeled_category. "
                "SCBiGNN needs a labelled reference."
            )
        if len(present) < 2:
            raise ValueError(
                f"Only one cell type ({self._label_mapping()[present[0]]!r}) is labelled in "
                f"obs[{key!r}]; a classifier needs at least two."
            )
        return codes

    def _target(self, adata: AnnData | MuData | None) -> AnnData | MuData:
        return self.adata if adata is None else adata

    def _expression(self, adata: AnnData | MuData | None):
        """Expression matrix and gene names of ``adata`` as registered (``None``: the model's)."""
        if adata is None or adata is self.adata:
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            return X, self._rna(self.adata).var_names
        layer = self.adata_manager.registry["setup_args"].get("layer")
        rna = self._rna(adata)
        if layer is not None and layer not in rna.layers:
            raise KeyError(f"The model reads layer {layer!r}, which this data lacks.")
        X = rna.layers[layer] if layer is not None else rna.X
        check_expression(X, self._data_format, f"layers[{layer!r}]" if layer else "X")
        return X, rna.var_names

    def _rna(self, adata: AnnData | MuData) -> AnnData:
        """The AnnData holding the expression: ``adata`` itself or its RNA modality."""
        return _rna(adata, self._rna_mod)

    @property
    def _rna_mod(self) -> str | None:
        mods = self.adata_manager.registry["setup_args"].get("modalities")
        return None if mods is None else mods.get("rna_layer", "rna")

    def _inputs(self, adata: AnnData | MuData | None, standardize: bool = True):
        """q_phi's gene sets and the standardised expression (on the model's device)."""
        X, var_names = self._expression(None if adata is self.adata else adata)
        x_in = model_input(X, var_names, self.genes, self._data_format)
        n_empty = int(np.sum(np.diff(x_in.indptr) == 0))
        if n_empty:
            raise ValueError(
                f"{n_empty} cells express none of the model's {len(self.genes)} genes, so "
                "nothing can be said about them. Remove them, e.g. "
                "adata = adata[np.asarray(adata[:, model.genes].X.sum(1)).ravel() > 0], or "
                "check that the genes are named as in the reference."
            )
        if not standardize:
            return x_in
        return GeneSets(x_in), self._standardize(x_in)

    def _infer(self, adata, batch_size: int, with_p: bool, remove_shift: bool = True) -> dict:
        """q_phi over the cells of ``adata`` and, with ``with_p``, p_theta on its graph.

        Cells of the trained graph are predicted on it; other cells are linked to their
        nearest graph cells (inductive mode, see :func:`~scbignn_tools.model.extend_graph`),
        after their expression is moved by the shift they share against the reference cells
        (:func:`~scbignn_tools.model.query_shift`), which p_theta never saw in training.
        """
        self._check_if_trained(warn=False)
        target = self._target(adata)
        sets, x = self._inputs(target)
        logits_q, h = q_inference(self.module, sets, x, None, batch_size, self.device)
        inputs = (sets, x)
        temp = getattr(self, "calibration_", {})
        out = {
            "h": h,
            "probs_q": softmax(logits_q / temp.get("temperature_q", 1.0)),
            "obs_names": self._rna(target).obs_names,
            "inputs": inputs,
        }
        if with_p:
            ref = self.reference_
            n_graph, n = len(ref["obs_names"]), len(out["obs_names"])
            x_graph = self._standardize(ref["x"])
            if (
                n <= n_graph
                and np.array_equal(ref["obs_names"][n_graph - n :], out["obs_names"])
                and target is self.adata
            ):
                x_all, h_all, adj = x_graph, ref["h"], ref["adj"]
            else:
                shift = (
                    self._query_shift(target, x, h, x_graph, batch_size)
                    if remove_shift
                    else torch.zeros_like(x[0])
                )
                x = x - shift
                out["shift"] = shift
                out["query_shift"] = float(shift.square().mean().sqrt())
                x_all, h_all = torch.cat([x_graph, x]), np.vstack([ref["h"], h])
                coords = _graph_coords(x, h, ref["basis"])
                adj = extend_graph(
                    ref["adj"], ref["coords"], coords, self.n_neighbors, self.knn_method_, self.seed
                )
            logits_p, h_prime = p_inference(
                self.module, x_all, h_all, row_normalized_adjacency(adj, self.device)
            )
            out["probs_p"] = softmax(logits_p[-n:] / temp.get("temperature_p", 1.0))
            out["h_prime"] = h_prime[-n:]
        return out

    def _query_shift(
        self, target, x: torch.Tensor, h: np.ndarray, x_graph: torch.Tensor, batch_size: int
    ):
        """The expression shift of inductive cells against the reference (:func:`query_shift`).

        A query model (:meth:`load_query_data`) measures it once on its whole query and uses it
        for cells of that query (same name and same expression), so that a cell's annotation
        does not depend on the other cells passed with it. Other cells, and the cells given to
        other models, are measured on their own. Under ``MIN_SHIFT_CELLS`` cells it is not
        measured (zero).
        """
        if self._is_query() and target is not self.adata:
            if getattr(self, "_own_query_shift", None) is None:
                sets, x_own = self._inputs(None)
                _, h_own = q_inference(self.module, sets, x_own, None, batch_size, self.device)
                self._own_query_cells = pd.DataFrame(
                    _fingerprint(x_own), index=self._rna(self.adata).obs_names
                )
                self._own_query_shift = self._query_shift(
                    self.adata, x_own, h_own, x_graph, batch_size
                )
            own = self._own_query_cells
            names = self._rna(target).obs_names
            if names.isin(own.index).all() and np.allclose(
                own.loc[names].to_numpy(), _fingerprint(x), rtol=1e-4, atol=1e-3
            ):
                return self._own_query_shift
        if len(x) < MIN_SHIFT_CELLS:
            return torch.zeros_like(x[0])
        ref = self.reference_
        return query_shift(x, h, x_graph, ref["h"], self.n_neighbors, self.knn_method_, self.seed)

    def _standardize(self, x_in) -> torch.Tensor:
        return self.module.standardize(torch.as_tensor(x_in.toarray(), device=self.device))

    def _is_query(self) -> bool:
        """Whether this model was trained on other cells than its AnnData's (``load_query_data``)."""
        ref = getattr(self, "reference_", None)
        if not self.is_trained_ or ref is None:
            return False
        names = self._rna(self.adata).obs_names
        return not (
            len(names) <= len(ref["obs_names"])
            and np.array_equal(ref["obs_names"][-len(names) :], names)
        )

    def _graph_cells(self, query: bool):
        """Normalised expression, label codes and names of the cells to train on."""
        own_x = self._inputs(None, standardize=False)
        if not query:
            return own_x, self._train_labels(), np.asarray(self._rna(self.adata).obs_names)
        ref = self.reference_
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        own_labels = np.where(codes >= len(self._label_mapping()), -1, codes).astype(np.int64)
        labels = np.concatenate([ref["labels"], own_labels])
        names = np.concatenate([ref["obs_names"], np.asarray(self._rna(self.adata).obs_names)])
        return sparse.vstack([ref["x"], own_x]).tocsr(), labels, names


def _fingerprint(x: torch.Tensor) -> np.ndarray:
    """Sum and sum of squares of each cell's standardised expression, ``(N, 2)``."""
    return torch.stack([x.sum(1), x.square().sum(1)], dim=1).cpu().numpy()


def _graph_coords(x: torch.Tensor, h: np.ndarray | None, basis) -> np.ndarray:
    """Cells' coordinates in the space of p_theta's graph: expression PCs, or ``h`` without a basis."""
    return h if basis is None else project(x.cpu().numpy(), basis)


def _saved_genes(path: str | os.PathLike) -> list[str]:
    """The genes of a model saved to ``path``, read without building the model."""
    saved = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=False)
    return list(saved["attr_dict"]["init_params_"]["non_kwargs"]["genes"])


def _rna(adata: AnnData | MuData, mod: str | None = None) -> AnnData:
    if isinstance(adata, MuData):
        return adata[mod or "rna"]
    return adata


def _check_setup(adata, labels_key, unlabeled_category, layer, data_format, kwargs) -> None:
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
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer {layer!r} is not in adata.layers ({list(adata.layers)}).")
    X = adata.layers[layer] if layer is not None else adata.X
    check_expression(X, data_format, f"layers[{layer!r}]" if layer else "adata.X")


def _validation_split(
    labels: np.ndarray, labelled: np.ndarray, size: float, seed: int
) -> np.ndarray:
    """Stratified held-out share of the labelled cells (types with one cell stay in training)."""
    if size <= 0:
        return np.array([], dtype=np.int64)
    y = labels[labelled]
    counts = pd.Series(y).value_counts()
    can_split = np.isin(y, counts.index[counts >= 2])
    pool, strat = labelled[can_split], y[can_split]
    n_val = max(int(round(size * len(labelled))), len(np.unique(strat)))
    if n_val >= len(pool):
        return np.array([], dtype=np.int64)
    _, val = train_test_split(pool, test_size=n_val, stratify=strat, random_state=seed)
    return np.sort(val)

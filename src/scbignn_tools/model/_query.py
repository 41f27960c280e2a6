"""Query data: a reference model (in memory or saved) annotating cells it was not trained on."""

from __future__ import annotations

import copy
import os
import warnings
from typing import TYPE_CHECKING

from scbignn_tools.data import align_genes

from ._anndata import Setup, read_cells
from ._format import SavedModel, read_folder
from ._utils import pad_and_sort

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from ._model import SCBiGNN


class QueryMixin:
    """Query handling, as scvi-tools' :class:`~scvi.model.base.ArchesMixin`.

    ``reference`` is a trained model or the folder it was saved to. The caller's AnnData is
    never changed: padding happens on a copy, and a query model annotates the caller's own
    object, unregistered.
    """

    @classmethod
    def prepare_query_anndata(
        cls, adata: AnnData, reference: str | os.PathLike | SCBiGNN
    ) -> AnnData:
        """A copy of ``adata`` with the reference AnnData's genes, in its order (zeros if missing).

        Not needed by :meth:`load_query_data`, which matches genes by name; use it to give
        :meth:`load` an AnnData laid out like the reference (scvi-tools' convention). Checks
        first how many of the model's own genes the query has: a warning names the missing
        share, and too low an overlap is an error that says why (Ensembl IDs against symbols,
        another species' casing).

        Parameters
        ----------
        adata
            Query data with genes in ``var_names``; left unchanged.
        reference
            A trained model or the folder it was saved to.

        Returns
        -------
        anndata.AnnData
            A new AnnData; ``adata`` itself is left as it was.

        Examples
        --------
        >>> padded = scbignn.model.SCBiGNN.prepare_query_anndata(query, "my_reference")
        """
        if adata.n_obs == 0:
            raise ValueError("The query AnnData has no cells; there is nothing to annotate.")
        saved = _saved(reference)
        align_genes(adata.var_names, saved.genes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scvi's own padding notice; ours is above
            return pad_and_sort(adata.copy(), saved.var_names)

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData | MuData,
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

        ``adata`` is neither copied nor changed: the model reads it by gene name, and
        ``annotate()`` writes into it.

        Parameters
        ----------
        adata
            Query data of the same kind of values as the reference (counts or ``log1p``).
            Genes are matched by name; missing genes count as zero. Cells with a label of the
            reference's cell types in its ``labels_key`` count as labelled; cells without the
            column are unlabelled.
        reference
            A trained model or the folder it was saved to.
        accelerator
            As in scvi-tools.
        device
            As in scvi-tools.

        Returns
        -------
        A trained :class:`SCBiGNN` whose AnnData is ``adata``.

        Examples
        --------
        >>> qmodel = scbignn.model.SCBiGNN.load_query_data(query, "my_reference")
        >>> qmodel.annotate()  # inductive: writes into query
        >>> qmodel.train()  # or transductive: EM on reference and query cells
        >>> qmodel.annotate()
        """
        saved = _saved(reference)
        setup = Setup.from_registry(saved.attributes["registry_"])
        align_genes(setup.rna(adata).var_names, saved.genes)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "(?s).*missing from the data", UserWarning)
            read_cells(adata, setup, saved.genes)  # refuses bad data before any work
        model = cls._from_saved(saved, None, accelerator, device)
        model._adata = adata  # not registered: the caller's object stays as it is
        return model


def _saved(reference) -> SavedModel:
    """What a model holds, from the model itself (copied) or its folder."""
    from ._model import SCBiGNN

    if isinstance(reference, SCBiGNN):
        reference._check_if_trained(warn=False)
        saved = reference._to_saved()
        for key in ("registry_", "init_params_", "history_"):  # the graph's arrays are read-only
            saved.attributes[key] = copy.deepcopy(saved.attributes[key])
        return saved
    return read_folder(reference)

"""Annotation of cells by a trained model: one result, one writer (:class:`AnnotationResult`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._result import AnnotationResult

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData


class AnnotateMixin:
    """``get_annotation`` and ``annotate`` of :class:`~scbignn_tools.model.SCBiGNN`."""

    def get_annotation(
        self,
        adata: AnnData | MuData | None = None,
        *,
        unknown_threshold: float | None = 0.5,
        novelty_threshold: float | None = 0.999,
        unknown_label: str = "Unknown",
        gene_importance: bool = True,
        remove_query_shift: bool = True,
        batch_size: int = 256,
    ) -> AnnotationResult:
        """Predictions, confidences, novelty, embeddings and gene importances, as one result.

        :meth:`annotate` writes this result into an AnnData; the CLI also writes its table.

        Parameters
        ----------
        adata
            Data to annotate; ``None`` annotates the AnnData of the model.
        unknown_threshold
            Cells whose p_theta confidence (calibrated, see :attr:`calibration_`) is below this
            get ``unknown_label`` instead of a cell type; ``None`` turns this test off.
        novelty_threshold
            Cells whose novelty (:func:`~scbignn_tools.graph.novelty`: their distance to the
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
            (:func:`~scbignn_tools.graph.query_shift`). Turn off only to see its effect.
        batch_size
            Cells per q_phi batch.

        Returns
        -------
        An :class:`~scbignn_tools.model.AnnotationResult`; its ``settings`` hold the call's
        thresholds (NaN when off) and ``query_shift``, the root mean square of the expression
        shift removed from inductive cells, in reference standard deviations per gene (0 for
        cells of the trained graph or with ``remove_query_shift=False``).

        Examples
        --------
        >>> result = model.get_annotation(query)
        >>> result.to_df().head()  # label, confidence, novelty, q_phi's label, probabilities
        >>> result.to_adata(query)
        """
        cells = self._cells(adata)
        own = cells if self._target(adata) is self.adata else None
        out = self._infer(cells, True, remove_query_shift, batch_size, gene_importance, own)
        pred = np.asarray(self.classes)[out.probs_p.argmax(1)]
        novelty = np.full(len(cells), np.nan)
        if self.reference_ is not None:
            novelty = self.reference_.novelty(out.h)
        return AnnotationResult.build(
            cells.names,
            self.classes,
            out.probs_p,
            out.probs_q,
            out.h,
            novelty,
            self._predictor().attention(out, pred, batch_size, self.classes)
            if gene_importance
            else None,
            self.genes,
            unknown_threshold=unknown_threshold,
            novelty_threshold=novelty_threshold,
            unknown_label=unknown_label,
            settings={
                "model": out.model,
                "n_neighbors": self.n_neighbors,
                "remove_query_shift": remove_query_shift,
                "query_shift": out.query_shift,
            },
        )

    def annotate(
        self,
        adata: AnnData | MuData | None = None,
        *,
        key_added: str = "scbignn",
        unknown_threshold: float | None = 0.5,
        novelty_threshold: float | None = 0.999,
        unknown_label: str = "Unknown",
        gene_importance: bool = True,
        remove_query_shift: bool = True,
        copy: bool = False,
        batch_size: int = 256,
    ) -> AnnData | MuData | None:
        """Write predictions, confidences, embeddings and gene importances into an AnnData.

        Computes :meth:`get_annotation` and writes it with
        :meth:`AnnotationResult.to_adata <scbignn_tools.model.AnnotationResult.to_adata>`,
        which lists every key written (for MuData, into the RNA modality).

        Parameters
        ----------
        adata
            Data to annotate; ``None`` annotates the AnnData of the model (for a query model
            from :meth:`load_query_data`, the query passed to it).
        key_added
            Prefix of every key written.
        unknown_threshold
            As in :meth:`get_annotation`.
        novelty_threshold
            As in :meth:`get_annotation`.
        unknown_label
            As in :meth:`get_annotation`.
        gene_importance
            As in :meth:`get_annotation`.
        remove_query_shift
            As in :meth:`get_annotation`.
        copy
            Annotate and return a copy instead of writing in place.
        batch_size
            Cells per q_phi batch.

        Returns
        -------
        ``None``, or the annotated copy if ``copy=True``.

        Examples
        --------
        >>> model.annotate(query, unknown_threshold=0.7)
        >>> query.obs[["scbignn", "scbignn_confidence", "scbignn_novelty"]].head()
        >>> sc.pl.umap(query, color="scbignn")  # "Unknown" in grey
        """
        target = self._target(adata)
        result = self.get_annotation(
            target,
            unknown_threshold=unknown_threshold,
            novelty_threshold=novelty_threshold,
            unknown_label=unknown_label,
            gene_importance=gene_importance,
            remove_query_shift=remove_query_shift,
            batch_size=batch_size,
        )
        mod = self._setup.rna_mod or "rna"
        return result.to_adata(target, key_added=key_added, copy=copy, mod=mod)

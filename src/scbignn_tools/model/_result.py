"""The result of :meth:`SCBiGNN.annotate`, and its one writer into AnnData."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from scbignn_tools.module import AttentionAccumulator, importance_table


@dataclass
class AnnotationResult:
    """Everything :meth:`~scbignn_tools.model.SCBiGNN.annotate` computes for a set of cells.

    One row per cell, in the order of ``obs_names``; written into an AnnData by
    :meth:`to_adata` only (aligned by cell and gene names), or turned into a table by
    :meth:`to_df`.

    Parameters
    ----------
    obs_names
        The cells' names.
    classes
        Cell types, in the order of the probability columns.
    probabilities
        p_theta's calibrated class probabilities, ``(N, C)``.
    labels
        p_theta's cell type, or ``unknown_label`` for rejected cells.
    novelty
        Distance to the labelled reference cells, in [0, 1].
    labels_q
        q_phi's cell type.
    h
        q_phi's cell representation, ``(N, d)``.
    importance
        Gene importance over all cells, indexed by the model's genes; ``None`` if not computed.
    importance_per_type
        Genes x predicted types (columns: ``classes``, NaN for a type no cell was predicted
        as); ``None`` if not computed.
    settings
        The thresholds and query-shift settings of the call (written to ``uns``).
    """

    obs_names: pd.Index
    classes: list[str]
    probabilities: np.ndarray
    labels: pd.Categorical
    novelty: np.ndarray
    labels_q: pd.Categorical
    h: np.ndarray
    importance: pd.Series | None
    importance_per_type: pd.DataFrame | None
    settings: dict

    @classmethod
    def build(
        cls,
        obs_names: np.ndarray,
        classes: list[str],
        probabilities: np.ndarray,
        probabilities_q: np.ndarray,
        h: np.ndarray,
        novelty: np.ndarray,
        attention: AttentionAccumulator | None,
        genes: list[str],
        *,
        unknown_threshold: float | None,
        novelty_threshold: float | None,
        unknown_label: str,
        settings: dict,
    ) -> AnnotationResult:
        """Labels with rejection, and importance tables, from the outputs of both GNNs.

        ``attention`` is an accumulator with a group per predicted type (``None``: no
        importance).
        Rejected cells (confidence below ``unknown_threshold`` or novelty above
        ``novelty_threshold``; ``None`` turns a test off) get ``unknown_label``.
        """
        pred = probabilities.argmax(1)
        labels = pd.Categorical.from_codes(pred, categories=classes)
        unknown = np.zeros(len(pred), bool)
        if unknown_threshold is not None:
            unknown |= probabilities.max(1) < unknown_threshold
        if novelty_threshold is not None:
            unknown |= novelty > novelty_threshold
        if unknown_threshold is not None or novelty_threshold is not None:
            labels = labels.add_categories([unknown_label])
            labels[unknown] = unknown_label
        importance = per_type = None
        if attention is not None:
            per_type = importance_table(attention, genes)
            importance = pd.Series(attention.importance(None), index=pd.Index(genes))
        settings = {  # NaN for "off": h5ad cannot store None, and any number is a threshold
            **settings,
            "unknown_threshold": np.nan if unknown_threshold is None else unknown_threshold,
            "novelty_threshold": np.nan if novelty_threshold is None else novelty_threshold,
        }
        return cls(
            obs_names=pd.Index(obs_names),
            classes=list(classes),
            probabilities=probabilities,
            labels=labels,
            novelty=novelty,
            labels_q=pd.Categorical.from_codes(probabilities_q.argmax(1), categories=classes),
            h=h,
            importance=importance,
            importance_per_type=per_type,
            settings=settings,
        )

    @property
    def confidence(self) -> np.ndarray:
        """p_theta's probability of its most likely type."""
        return self.probabilities.max(axis=1)

    def to_df(self) -> pd.DataFrame:
        """A table with a row per cell: label, confidence, novelty, q_phi's label, probabilities.

        The probability columns are named ``p_<cell type>``.

        Examples
        --------
        >>> model.get_annotation(query).to_df().to_csv("labels.csv")
        """
        table = pd.DataFrame(
            {
                "label": np.asarray(self.labels, dtype=str),
                "confidence": self.confidence,
                "novelty": self.novelty,
                "label_q": np.asarray(self.labels_q, dtype=str),
            },
            index=self.obs_names,
        )
        probs = pd.DataFrame(
            self.probabilities, index=self.obs_names, columns=[f"p_{c}" for c in self.classes]
        )
        return pd.concat([table, probs], axis=1)

    def to_adata(
        self,
        adata: AnnData | MuData,
        *,
        key_added: str = "scbignn",
        copy: bool = False,
        mod: str = "rna",
    ) -> AnnData | MuData | None:
        """Write the result into ``adata`` (for MuData, into its modality ``mod``).

        Cells are matched by name, so ``adata`` may hold them in another order; genes are
        matched by name, and genes the model does not use get NaN importance.

        Parameters
        ----------
        adata
            Holds the annotated cells (the same set of ``obs_names``, unique).
        key_added
            Prefix of every key written.
        copy
            Write into a copy and return it.
        mod
            The RNA modality of a MuData.

        Returns
        -------
        ``None``, or the annotated copy if ``copy=True``. Writes:

        ``obs[key_added]``
            p_theta's cell type (categorical), or the unknown label for rejected cells.
        ``obs[f"{key_added}_confidence"]``
            p_theta's probability of its most likely type.
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
            Gene importance (paper section 4.5); NaN for genes the model does not use.
        ``varm[f"{key_added}_importance"]``
            Gene importance per predicted type, columns as in ``uns[key_added]["classes"]``.
            Arrays rather than DataFrames, because cell type names may contain ``/``, which
            h5ad files do not allow in column names.
        ``uns[f"{key_added}_colors"]``
            A colour per category of ``obs[key_added]``, as scanpy's plots read them; rejected
            cells are light grey.
        ``uns[key_added]``
            The classes and the settings of the call (a threshold that is off is NaN).

        Examples
        --------
        >>> result = model.get_annotation(query)
        >>> result.to_adata(query, key_added="scbignn")
        """
        target = adata.copy() if copy else adata
        rna = target[mod] if isinstance(target, MuData) else target
        order = self._rows_of(rna.obs_names)
        rna.obs[key_added] = self.labels[order]
        rna.obs[f"{key_added}_confidence"] = self.confidence[order]
        rna.obs[f"{key_added}_novelty"] = self.novelty[order]
        rna.obs[f"{key_added}_q"] = self.labels_q[order]
        rna.obsm[f"X_{key_added}"] = self.h[order]
        rna.obsm[f"{key_added}_probabilities"] = self.probabilities[order]
        if self.importance is not None:
            rna.var[f"{key_added}_importance"] = self.importance.reindex(rna.var_names).to_numpy()
            rna.varm[f"{key_added}_importance"] = self.importance_per_type.reindex(
                index=rna.var_names, columns=self.classes
            ).to_numpy()
        rna.uns[f"{key_added}_colors"] = _colors(list(self.labels.categories), self.classes)
        rna.uns[key_added] = {"classes": list(self.classes), **self.settings}
        if isinstance(target, MuData):
            target.update()
        return target if copy else None

    def _rows_of(self, obs_names: pd.Index) -> np.ndarray:
        """Row of the result for each cell of ``obs_names``; raises if the cells differ."""
        if obs_names.equals(self.obs_names):
            return np.arange(len(obs_names))
        if not obs_names.is_unique or not self.obs_names.is_unique:
            raise ValueError(
                "The AnnData holds the annotated cells in another order and its obs_names are "
                "not unique, so the cells cannot be matched; call adata.obs_names_make_unique()."
            )
        rows = self.obs_names.get_indexer(obs_names)
        if len(obs_names) != len(self.obs_names) or np.any(rows < 0):
            raise ValueError(
                f"The AnnData's {len(obs_names)} cells are not the {len(self.obs_names)} "
                "annotated cells; write the result into the AnnData that was annotated."
            )
        return rows


UNKNOWN_COLOR = "#d3d3d3"  # light grey


def _colors(categories: list[str], classes: list[str]) -> list[str]:
    """The default colours of scanpy for the cell types, light grey for rejected cells."""
    from matplotlib import rcParams
    from matplotlib.colors import to_hex
    from scanpy.plotting import palettes

    n = len(classes)
    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    if len(cycle) >= n:
        palette = cycle
    elif n <= 20:
        palette = palettes.default_20
    elif n <= 28:
        palette = palettes.default_28
    else:
        palette = [*palettes.default_102, *["#808080"] * n]
    of_type = dict(zip(classes, (to_hex(c) for c in palette[:n]), strict=True))
    return [of_type.get(c, UNKNOWN_COLOR) for c in categories]

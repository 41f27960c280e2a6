"""Plots of a trained model and of what :meth:`SCBiGNN.annotate` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from scbignn_tools.train import binned_calibration_error, reliability_bins

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

    from scbignn_tools.model import SCBiGNN


def _axes(ax: Axes | None, ncols: int = 1, width: float = 4.0):
    import matplotlib.pyplot as plt

    if ax is not None:
        return np.atleast_1d(ax)
    _, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.2), squeeze=False)
    return axes[0]


def _show(axes, show: bool | None, save: bool | str | None, writekey: str):
    """Save (as scanpy does: into ``sc.settings.figdir``) and show the figure of ``axes``."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    save = sc.settings.autosave if save is None else save
    if save:
        suffix, ext = (save, None) if isinstance(save, str) else ("", None)
        for candidate in (".png", ".pdf", ".svg"):
            if suffix.endswith(candidate):
                suffix, ext = suffix[: -len(candidate)], candidate[1:]
        path = (
            Path(sc.settings.figdir) / f"{writekey}{suffix}.{ext or sc.settings.file_format_figs}"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        np.atleast_1d(axes)[0].figure.savefig(path, bbox_inches="tight")  # dpi: savefig.dpi
    if sc.settings.autoshow if show is None else show:
        plt.show()
        return None
    if save:
        plt.close(np.atleast_1d(axes)[0].figure)
    return axes


def _annotation(adata: AnnData, key: str) -> dict:
    if key not in adata.uns or f"{key}_probabilities" not in adata.obsm:
        raise KeyError(
            f"adata holds no annotation under key {key!r}; run model.annotate(adata, "
            f"key_added={key!r}) first."
        )
    return adata.uns[key]


def em_history(
    model: SCBiGNN,
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Training loss and held-out accuracy of q_phi and p_theta over the EM iterations.

    The paper's Figure 1: q_phi's curve runs over its epochs (pre-training, then the
    E-steps); p_theta's points sit at the end of each M-step. Held-out accuracy needs
    ``train(validation_size > 0)``; without it only the loss is drawn.

    Parameters
    ----------
    model
        A trained model.
    ax
        One axes (for the accuracy, or the loss without validation), or two (loss, accuracy);
        new ones if ``None``.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        As in scanpy: ``True`` or a file-name suffix (its extension chooses the format) saves
        the figure into ``scanpy.settings.figdir``.

    Returns
    -------
    list of matplotlib.axes.Axes or None
        The axes (loss, then accuracy if any) if ``show`` is false, else ``None``.

    Examples
    --------
    >>> scbignn.pl.em_history(model, save="history.png")
    """
    if not model.is_trained_:
        raise RuntimeError("The model is not trained yet; run model.train() first.")
    hist = model.history_
    q = hist[hist.model == "q"].reset_index(drop=True)
    has_val = q.validation_accuracy.notna().any()
    q_end = q.groupby(["stage", "em_iteration"], sort=False).tail(1)  # before each M-step
    p = hist[hist.model == "p"].groupby("em_iteration").tail(1)
    panels = [("train_loss", "training loss")] + (
        [("validation_accuracy", "held-out accuracy")] if has_val else []
    )
    axes = _axes(ax, len(panels))
    panels = panels[-len(axes) :]  # one axes given: the last panel
    for a, (column, label) in zip(axes, panels, strict=True):
        a.plot(q.index, q[column], color="tab:blue", label="q_phi (per epoch)")
        a.plot(
            q_end.index[: len(p)] + 0.5,
            p[column].to_numpy(),
            "o",
            color="tab:red",
            label="p_theta (end of M-step)",
        )
        for i in q_end.index[:-1]:
            a.axvline(i + 0.5, color="grey", lw=0.5, ls=":")
        a.set_xlabel("q_phi epoch (pre-training, then E-steps)")
        a.set_ylabel(label)
    axes[-1].legend(loc="best", fontsize=8)
    return _show(axes, show, save, "em_history")


def reliability(
    adata: AnnData,
    labels_key: str,
    *,
    key: str = "scbignn",
    n_bins: int = 10,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Reliability diagram: does a confidence of 0.9 mean 90% of such cells are right?

    Compares p_theta's confidence with its accuracy against known labels, in equal-width
    confidence bins, for the cells whose label is one of the model's cell types.

    Parameters
    ----------
    adata
        Data annotated by :meth:`~scbignn_tools.model.SCBiGNN.annotate`.
    labels_key
        Column of ``adata.obs`` with the true cell types.
    key
        ``key_added`` of the annotation.
    n_bins
        Number of confidence bins.
    ax
        Axes to draw on; a new one if ``None``.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        As in scanpy: ``True`` or a file-name suffix (its extension chooses the format) saves
        the figure into ``scanpy.settings.figdir``.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes if ``show`` is false, else ``None``. Each point is labelled with its number
        of cells; the title gives the expected calibration error and the number of cells.

    Examples
    --------
    >>> model.annotate(adata)
    >>> scbignn.pl.reliability(adata[hidden], "cell_type")
    """
    classes = pd.Index(_annotation(adata, key)["classes"])
    if labels_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {labels_key!r} with the true cell types.")
    codes = classes.get_indexer(adata.obs[labels_key].astype(str))
    known = codes >= 0
    if not known.any():
        raise ValueError(
            f"No cell of adata.obs[{labels_key!r}] has one of the model's cell types "
            f"({', '.join(classes[:5])}, ...), so calibration cannot be measured."
        )
    probs = np.asarray(adata.obsm[f"{key}_probabilities"])[known]
    conf, accuracy, count = reliability_bins(probs, codes[known], n_bins)
    ece = binned_calibration_error(conf, accuracy, count)
    (a,) = _axes(ax)
    a.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    a.plot(conf, accuracy, "o-", color="tab:red", label="p_theta")
    for x, y, n in zip(conf, accuracy, count, strict=True):  # cells per bin
        a.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    a.set_xlim(0, 1)
    a.set_ylim(0, 1.02)
    a.set_xlabel("confidence")
    a.set_ylabel("accuracy")
    a.set_title(f"ECE {ece:.3f} on {int(count.sum())} cells")
    a.legend(loc="upper left", fontsize=8)
    return _show(a, show, save, "reliability")


def top_genes(adata: AnnData, *, key: str = "scbignn", n_genes: int = 5) -> dict[str, list[str]]:
    """The genes with the highest attention-derived importance for each predicted cell type.

    Parameters
    ----------
    adata
        Data annotated by :meth:`~scbignn_tools.model.SCBiGNN.annotate` with
        ``gene_importance=True``.
    key
        ``key_added`` of the annotation.
    n_genes
        Genes per cell type.

    Returns
    -------
    dict
        Cell type to its genes, most important first, for the types some cell was predicted
        as.

    Examples
    --------
    >>> model.annotate(adata)
    >>> scbignn.pl.top_genes(adata, n_genes=5)["B"]
    """
    classes = _annotation(adata, key)["classes"]
    if f"{key}_importance" not in adata.varm:
        raise KeyError(f"adata.varm has no {key}_importance; annotate with gene_importance=True.")
    table = pd.DataFrame(adata.varm[f"{key}_importance"], index=adata.var_names, columns=classes)
    return {c: table[c].nlargest(n_genes).index.tolist() for c in classes if table[c].notna().any()}


def gene_importance(
    adata: AnnData,
    *,
    key: str = "scbignn",
    n_genes: int = 5,
    layer: str | None = None,
    standard_scale: Literal["var", "group"] | None = "var",
    show: bool | None = None,
    save: bool | str | None = None,
    **kwargs,
):
    """Dot plot of the top attention genes of each predicted type, across the predicted types.

    Parameters
    ----------
    adata
        Data annotated by :meth:`~scbignn_tools.model.SCBiGNN.annotate` with
        ``gene_importance=True``.
    key
        ``key_added`` of the annotation; cells are grouped by ``adata.obs[key]``.
    n_genes
        Genes per cell type (:func:`top_genes`).
    layer
        Layer of ``adata`` whose expression is shown; ``None`` is ``adata.X``.
    standard_scale
        As in :func:`scanpy.pl.dotplot`: ``"var"`` scales each gene to [0, 1] across the types,
        so that counts and log-normalised data read alike.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        As in scanpy: ``True`` or a file-name suffix (its extension chooses the format) saves
        the figure into ``scanpy.settings.figdir``.
    **kwargs
        Passed on to :func:`scanpy.pl.dotplot`.

    Returns
    -------
    What :func:`scanpy.pl.dotplot` returns for ``show``.

    Examples
    --------
    >>> model.annotate(adata)
    >>> scbignn.pl.gene_importance(adata, n_genes=3)
    """
    import anndata as ad
    import scanpy as sc

    genes = top_genes(adata, key=key, n_genes=n_genes)
    names = pd.Index(pd.unique(np.concatenate(list(genes.values()))))
    columns = adata.var_names.get_indexer(names)
    # only the plotted genes, and no empty groups (scanpy's dot plot fails on unused categories)
    small = ad.AnnData(
        X=(adata.X if layer is None else adata.layers[layer])[:, columns],
        obs=pd.DataFrame({key: adata.obs[key].cat.remove_unused_categories()}),
        var=pd.DataFrame(index=names),
    )
    return sc.pl.dotplot(
        small, genes, groupby=key, standard_scale=standard_scale, show=show, save=save, **kwargs
    )

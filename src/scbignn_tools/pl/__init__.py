"""Plots: EM convergence, calibration and the genes behind each label."""

from ._plots import em_history, gene_importance, reliability, top_genes

__all__ = ["em_history", "gene_importance", "reliability", "top_genes"]

"""Paper section 2: input checks, log-normalisation, gene selection and gene alignment."""

from ._expression import StandardizedExpression
from ._gene_sets import GeneSets
from ._genes import align_genes, gene_columns, model_input
from ._preprocessing import (
    SEURAT_V3_SPANS,
    DataFormat,
    GeneSelection,
    check_expression,
    log_normalize,
    select_genes,
)

__all__ = [
    "SEURAT_V3_SPANS",
    "DataFormat",
    "StandardizedExpression",
    "GeneSelection",
    "GeneSets",
    "align_genes",
    "gene_columns",
    "check_expression",
    "log_normalize",
    "model_input",
    "select_genes",
]

from __future__ import annotations

import torch
from torch import nn

from scbignn_tools.nn import Dropout, GeneSelfAttention, mlp


class GeneLevelGNN(nn.Module):
    r"""q_phi: the gene-level GNN (scBiGNN Eqs. 1, 4 and 5).

    Each cell is a graph of its non-zero genes. Gene :math:`j` in cell :math:`i` enters as
    :math:`\mathbf{e}_{ij} = \mathbf{e}^{gene}_j + \mathrm{MLP}(\tilde X_{ij})`, passes ``n_layers``
    :class:`~scbignn_tools.nn.GeneSelfAttention` layers (Eq. 4) and is read out into the cell
    representation :math:`\mathbf{h}_i` (Eq. 5), which an MLP classifies (Eq. 1).

    Shapes: ``genes`` (gene indices, long) and ``values`` are ``(B, L)``, ``mask`` is ``(B, L)``
    with ``True`` for real genes; ``h`` is ``(B, n_features)``; logits ``(B, n_labels)``.

    Parameters
    ----------
    n_genes
        Number of model genes ``T``.
    n_labels
        Number of cell types ``C``.
    n_features
        Feature size ``d_g`` of gene embeddings and of every layer.
    n_hidden
        Hidden size of every MLP.
    n_layers
        Number of attention layers ``L``.
    heads
        Attention heads per layer.
    readout
        ``"mean"`` (:math:`\alpha_j = 1/T_i`) or ``"learnable"`` (a weight :math:`\alpha_j` per
        gene, initialised so that it starts as the mean).
    residual
        Residual connection and LayerNorm in each attention layer.
    dropout
        Dropout in the attention layers and on the linear path's input.
    linear_path
        Add a linear map of the cell's standardised expression to the read-out,
        :math:`\mathbf{h}_i = \mathrm{LayerNorm}(\mathrm{ReadOut}_i + \mathbf{W}_x \mathbf{x}_i)`.
        Not in the paper: without it q_phi trained slowly and stayed below linear models on
        BaronMouse (0.91 against 0.97, see ``docs/benchmarks``); the attention path still
        carries the gene-gene interactions and the importances.
    """

    def __init__(
        self,
        n_genes: int,
        n_labels: int,
        n_features: int = 32,
        n_hidden: int = 32,
        n_layers: int = 2,
        heads: int = 1,
        readout: str = "learnable",
        residual: bool = True,
        dropout: float = 0.0,
        linear_path: bool = True,
    ):
        super().__init__()
        if readout not in ("mean", "learnable"):
            raise ValueError(f"readout must be 'mean' or 'learnable', not {readout!r}.")
        self.readout = readout
        self.gene_embedding = nn.Embedding(n_genes, n_features)
        self.count_embedding = mlp(1, n_hidden, n_features)
        self.layers = nn.ModuleList(
            GeneSelfAttention(n_features, heads, n_hidden, residual=residual, dropout=dropout)
            for _ in range(n_layers)
        )
        self.alpha = nn.Parameter(torch.ones(n_genes)) if readout == "learnable" else None
        self.linear = (
            nn.Sequential(Dropout(dropout), nn.Linear(n_genes, n_features)) if linear_path else None
        )
        self.norm = nn.LayerNorm(n_features)
        self.classifier = mlp(n_features, n_hidden, n_labels)
        # Small embeddings: with torch's std-1 default q stayed near the majority class.
        nn.init.normal_(self.gene_embedding.weight, std=0.02)

    def embed(
        self,
        genes: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        x: torch.Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Cell representations ``h`` (Eqs. 4 and 5) and, optionally, each layer's attention.

        ``x`` is the ``(B, n_genes)`` standardised expression, needed with ``linear_path``.
        """
        # A cell without any model gene would attend to nothing (NaN): let it see one zero slot.
        empty = ~mask.any(dim=1)
        attn_mask = mask.clone()
        attn_mask[empty, 0] = True
        f = self.gene_embedding(genes) + self.count_embedding(values.unsqueeze(-1))
        f = f * attn_mask[..., None]
        attentions = []
        for layer in self.layers:
            if return_attention_weights:
                f, a = layer(f, attn_mask, return_attention_weights=True)
                attentions.append(a)
            else:
                f = layer(f, attn_mask)
        weights = mask.to(f.dtype)
        if self.alpha is not None:
            weights = weights * self.alpha[genes]
        n_genes = mask.sum(dim=1, keepdim=True).clamp(min=1)
        h = (weights[..., None] * f).sum(dim=1) / n_genes  # Eq. 5
        if self.linear is not None:
            if x is None:
                raise ValueError("q_phi has a linear path: pass the standardised expression `x`.")
            h = h + self.linear(x)
        return self.norm(h), attentions

    def forward(
        self,
        genes: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        x: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of q_phi(y | x) (Eq. 1) and the cell representations ``h``."""
        h, _ = self.embed(genes, values, mask, x)
        return self.classifier(h), h

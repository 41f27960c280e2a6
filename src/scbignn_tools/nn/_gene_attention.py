from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._dropout import Dropout


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """One-hidden-layer perceptron with ReLU, the MLP used throughout the paper (section 4.2)."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def reset_linear_layers(module: nn.Module) -> None:
    """Re-initialise every :class:`torch.nn.Linear` inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()


class GeneSelfAttention(nn.Module):
    r"""Gene-gene self-attention layer of the gene-level GNN (scBiGNN Eq. 4).

    For the non-zero genes of one cell with features :math:`\mathbf{F}`,

    .. math::
        \mathbf{R} = \mathrm{softmax}\big(s\,(\mathbf{F}\mathbf{W})(\mathbf{F}\mathbf{W})^\top\big),
        \qquad
        \mathbf{F}' = \mathrm{MLP}(\mathbf{R}\,\mathbf{F}\mathbf{W}),

    computed per head on a ``n_features // heads`` slice of :math:`\mathbf{F}\mathbf{W}` and
    concatenated (multi-head attention). Query, key and value share :math:`\mathbf{W}` as in the
    paper, so :math:`\mathbf{R}` is the learned gene-gene graph. Padded genes are masked: they
    neither give nor receive attention. With ``residual=True`` the output is
    :math:`\mathrm{LayerNorm}(\mathbf{F} + \mathbf{F}')`, which the paper does not have; without
    it training plateaued at 0.88-0.91 accuracy on BaronMouse (``shared/notes``).

    Shapes: input ``(B, L, n_features)`` and mask ``(B, L)`` (``True`` = real gene); output
    ``(B, L, n_features)`` and, optionally, attention ``(B, heads, L, L)``.

    Parameters
    ----------
    n_features
        Size of the gene features (input and output).
    heads
        Number of attention heads; must divide ``n_features``.
    n_hidden
        Hidden size of :math:`\mathrm{MLP}_g`.
    scale
        Factor :math:`s` on the logits; ``None`` uses :math:`1/\sqrt{d_{head}}` (the paper's
        Eq. 4 has :math:`s = 1`).
    residual
        Add the residual connection and LayerNorm.
    dropout
        Dropout on :math:`\mathbf{F}'` during training.
    """

    def __init__(
        self,
        n_features: int,
        heads: int = 1,
        n_hidden: int = 32,
        scale: float | None = None,
        residual: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if n_features % heads:
            raise ValueError(f"heads={heads} must divide n_features={n_features}.")
        self.n_features = n_features
        self.heads = heads
        self.scale = scale
        self.residual = residual
        self.lin = nn.Linear(n_features, n_features, bias=False)
        self.mlp = mlp(n_features, n_hidden, n_features)
        self.norm = nn.LayerNorm(n_features) if residual else nn.Identity()
        self.dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all learnable parameters."""
        reset_linear_layers(self)
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.reset_parameters()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        return_attention_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply Eq. 4 to a padded batch of cells."""
        b, n, _ = x.shape
        fw = self.lin(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, H, L, d_head)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L): who may be attended to
        attn = None
        if return_attention_weights:
            attn = self._attention(fw, mask)
            out = attn @ fw
        else:
            out = F.scaled_dot_product_attention(fw, fw, fw, attn_mask=key_mask, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, self.n_features)
        out = self.dropout(self.mlp(out))
        if self.residual:
            out = self.norm(x + out)
        out = out * mask[..., None]  # padded genes carry zeros
        if return_attention_weights:
            return out, attn
        return out

    def _attention(self, fw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The attention ``R`` of Eq. 4, ``(B, heads, L, L)``, written out.

        Without autograd the softmax and the masking run in place on the logits (one
        ``B x heads x L x L`` buffer instead of four: about SDPA's time rather than five times
        it on the CPU, ``docs/benchmarks.md``).
        """
        b, heads, n, _ = fw.shape
        scale = self.scale if self.scale is not None else fw.shape[-1] ** -0.5
        bias = torch.zeros(mask.shape, dtype=fw.dtype, device=fw.device)
        bias.masked_fill_(~mask, float("-inf"))  # padded keys receive nothing
        bias = bias[:, None, None, :].expand(b, heads, 1, n).reshape(b * heads, 1, n)
        flat = fw.reshape(b * heads, n, -1)
        logits = torch.baddbmm(bias, flat, flat.transpose(1, 2), alpha=scale)
        rows = mask[:, None, :, None]  # padded rows give nothing
        if torch.is_grad_enabled():
            return logits.softmax(dim=-1).view(b, heads, n, n) * rows
        torch.softmax(logits, dim=-1, out=logits)
        return logits.view(b, heads, n, n).mul_(rows)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.n_features}, heads={self.heads}, "
            f"residual={self.residual})"
        )

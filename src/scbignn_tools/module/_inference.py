"""Batched inference of q_phi and p_theta over arrays (no AnnData)."""

from __future__ import annotations

import numpy as np
import torch

from scbignn_tools.data import GeneSets, StandardizedExpression

from ._module import SCBiGNNModule

# With attention returned, a batch holds at most this many attention values per layer (B x L x L
# float32, 8 MB): cache-sized, 1.5 to 2 times faster than 256 cells of any length at Kang's
# 2,000 genes (docs/benchmarks.md, "Where the time went").
ATTENTION_BATCH_VALUES = 2**21


@torch.no_grad()
def q_inference(
    module: SCBiGNNModule,
    sets: GeneSets,
    x: torch.Tensor,
    rows: np.ndarray | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    attention_hook=None,
) -> tuple[np.ndarray, np.ndarray]:
    """q_phi's logits and cell representations ``h`` for ``rows`` (all cells by default).

    ``x`` is the standardised expression of all cells of ``sets``, ``(N, T)``
    (:class:`~scbignn_tools.data.StandardizedExpression` or a tensor on the device).

    ``attention_hook(rows, genes, mask, attentions, logits)`` is called per batch when given,
    with the batch's attention of every layer and its q_phi logits; batches then also hold at
    most ``ATTENTION_BATCH_VALUES`` (2^21) attention values (``B x L x L``).
    """
    module.eval()
    rows = np.arange(len(sets)) if rows is None else np.asarray(rows)
    logits = np.zeros((len(rows), module.n_labels), np.float32)
    h = np.zeros((len(rows), module.n_h), np.float32)
    budget = ATTENTION_BATCH_VALUES if attention_hook is not None else None
    for part in sets.sorted_batches(rows, batch_size, budget):  # similar lengths, little padding
        genes, values, mask = sets.batch(rows[part], device)
        xb = expression_rows(x, rows[part])
        hb, attn = module.q.embed(
            genes, values, mask, xb, return_attention_weights=attention_hook is not None
        )
        logits_b = module.q.classifier(hb)
        if attention_hook is not None:
            attention_hook(rows[part], genes, mask, attn, logits_b)
        logits[part] = logits_b.cpu().numpy()
        h[part] = hb.cpu().numpy()
    return logits, h


@torch.no_grad()
def p_inference(
    module: SCBiGNNModule, x: torch.Tensor, h: np.ndarray, adj: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """p_theta's logits and representations ``h_prime`` for every cell of the graph."""
    module.eval()
    logits, h_prime = module.p(x, torch.as_tensor(h, device=x.device), adj)
    return logits.cpu().numpy(), h_prime.cpu().numpy()


def expression_rows(x, rows: np.ndarray) -> torch.Tensor:
    """Rows of standardised expression, dense: of a StandardizedExpression or a tensor."""
    if isinstance(x, StandardizedExpression):
        return x.rows(rows)
    return x[torch.as_tensor(rows, device=x.device)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in numpy."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.data import GeneSets
from scbignn_tools.module import SCBiGNNModule, _inference, q_inference


def test_attention_pass_gives_the_outputs_of_the_plain_pass(monkeypatch):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x = sparse.random(90, 30, density=0.3, random_state=2, format="csr", dtype=np.float32)
    x.data = np.log1p(rng.poisson(3, x.nnz) + 1).astype(np.float32)
    module = SCBiGNNModule(n_genes=30, n_labels=3, n_features=8, n_hidden=8)
    sets, expression = GeneSets(x), module.expression(x)
    monkeypatch.setattr(_inference, "ATTENTION_BATCH_VALUES", 300)  # many small batches
    widths = []

    def hook(rows, genes, mask, attentions, logits):
        widths.append(genes.shape)

    plain = q_inference(module, sets, expression, batch_size=32)
    seen = q_inference(module, sets, expression, batch_size=32, attention_hook=hook)
    assert len(widths) > 3 and all(b == 1 or b * n * n <= 300 for b, n in widths)
    for a, b in zip(plain, seen, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

"""StandardizedExpression: the sparse form gives what the dense standardised matrix gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from scbignn_tools.data import StandardizedExpression


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    x = sparse.random(60, 30, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.log1p(x.data * 50)
    x[3, 5] = 40.0  # clipped above
    return x


def dense_standardized(x, mean, std, clip=10.0):
    return np.clip((x.toarray() - mean) / std, -clip, clip)


def test_every_linear_use_matches_the_dense_matrix(counts):
    mean = torch.as_tensor(counts.toarray().mean(0)) + 0.05
    std = torch.as_tensor(counts.toarray().std(0)) + 0.01
    std[7] = 0.001  # a gene whose zero counts fall below -clip
    expr = StandardizedExpression.from_normalized(counts, mean, std)
    dense = torch.as_tensor(dense_standardized(counts, mean.numpy(), std.numpy()))
    torch.testing.assert_close(expr.dense(), dense)
    rows = np.array([5, 0, 3, 3])
    torch.testing.assert_close(expr.rows(rows), dense[rows])
    torch.testing.assert_close(expr[rows].dense(), dense[rows])
    torch.testing.assert_close(expr.mean(0), dense.mean(0))
    w = torch.rand(60)
    torch.testing.assert_close(w @ expr, w @ dense)
    shift = torch.randn(30)
    torch.testing.assert_close((expr - shift).dense(), dense - shift)
    both = StandardizedExpression.concat([expr[:10], expr[10:] - shift])
    torch.testing.assert_close(both.dense(), torch.cat([dense[:10], dense[10:] - shift]))
    torch.testing.assert_close(w @ both, w @ torch.cat([dense[:10], dense[10:] - shift]))

    layer = torch.nn.Linear(30, 4)
    out = both.linear(layer)
    ref_layer = torch.nn.Linear(30, 4)
    ref_layer.load_state_dict(layer.state_dict())
    ref = ref_layer(torch.cat([dense[:10], dense[10:] - shift]))
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    # float32 sums in another order
    torch.testing.assert_close(layer.weight.grad, ref_layer.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, ref_layer.bias.grad, rtol=1e-4, atol=1e-4)


def test_dropout_drops_measured_values_only_and_keeps_the_expectation(counts):
    mean = torch.as_tensor(counts.toarray().mean(0))
    std = torch.as_tensor(counts.toarray().std(0)) + 0.01
    expr = StandardizedExpression.from_normalized(counts, mean, std)
    assert expr.dropout(0.5, training=False) is expr
    weight = torch.eye(30)
    torch.manual_seed(0)
    draws = torch.stack([expr.dropout(0.5, training=True) @ weight for _ in range(400)])
    zero = counts.toarray() == 0
    offsets = expr.offsets[0].expand(60, 30)
    # zero counts keep their standardised value in every draw
    assert torch.equal(draws[:, zero], offsets[zero].expand(400, -1))
    some = draws[:, ~zero]  # measured values: dropped (to the offset) or scaled by 2
    base = offsets[~zero]
    dropped = torch.isclose(some, base.expand_as(some))
    assert 0.45 < dropped.float().mean() < 0.55
    torch.testing.assert_close(some.mean(0), expr.dense()[~zero], atol=0.35, rtol=0.1)

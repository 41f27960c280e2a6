from __future__ import annotations

import pytest
import torch

from scbignn_tools.nn import Dropout, keep_mask, quantized_p


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_rate(p):
    torch.manual_seed(0)
    mask = keep_mask((400, 1000), p, "cpu")
    assert mask.dtype == torch.bool and mask.shape == (400, 1000)
    # 400,000 draws: the standard error of the rate is below 0.001
    assert abs(mask.float().mean().item() - (1 - quantized_p(p, "cpu"))) < 0.004


def test_keep_mask_odd_size_and_seed():
    torch.manual_seed(3)
    a = keep_mask((7, 3), 0.5, "cpu")
    torch.manual_seed(3)
    b = keep_mask((7, 3), 0.5, "cpu")
    assert a.shape == (7, 3) and torch.equal(a, b)
    c = keep_mask((7, 3), 0.5, "cpu")  # the generator moved on (equal with chance 2**-21)
    assert not torch.equal(a, c)


def test_keep_mask_entries_independent():
    """The four 16-bit lanes of a random word are not correlated."""
    torch.manual_seed(1)
    m = keep_mask((100_000, 4), 0.5, "cpu").float()
    corr = torch.corrcoef(m.T)
    off = corr[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().max() < 0.02


def test_dropout_matches_torch_in_expectation_and_eval():
    layer = Dropout(0.3)
    x = torch.ones(2000, 50, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - quantized_p(0.3, "cpu"))))
    assert abs(y.mean().item() - 1.0) < 0.02
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # gradient flows through the kept entries only
    layer.eval()
    assert layer(x) is x
    assert quantized_p(0.3, "cpu") == round(0.3 * 2**16) / 2**16
    assert repr(layer) == "Dropout(p=0.3, inplace=False)"

from __future__ import annotations

import torch

from scbignn_tools.nn import GeneSelfAttention


def _batch(b=3, n=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 2:] = False
    return x, mask


def test_shapes_and_attention_rows():
    layer = GeneSelfAttention(8, heads=2, n_hidden=16)
    x, mask = _batch()
    out, attn = layer(x, mask, return_attention_weights=True)
    assert out.shape == (3, 7, 8)
    assert attn.shape == (3, 2, 7, 7)
    # every real gene's attention sums to one over real genes only
    sums = attn.sum(-1)
    torch.testing.assert_close(
        sums[mask[:, None, :].expand_as(sums)], torch.ones(int(mask.sum()) * 2)
    )
    # and equals Eq. 4 by hand: cell 0 has 4 real genes, head 1 is features 4..7 of FW
    fw = layer.lin(x[0, :4])[:, 4:]
    expected = torch.softmax(fw @ fw.T / 2.0, dim=-1)  # scale 1/sqrt(d_head), d_head = 4
    torch.testing.assert_close(attn[0, 1, :4, :4], expected)


def test_padded_genes_give_and_receive_no_attention():
    layer = GeneSelfAttention(8, heads=2)
    x, mask = _batch()
    out, attn = layer(x, mask, return_attention_weights=True)
    pad = ~mask
    assert torch.all(attn.transpose(1, 2)[pad] == 0)  # padded rows give nothing
    assert torch.all(attn.permute(0, 3, 1, 2)[pad] == 0)  # padded columns receive nothing
    assert torch.all(out[pad] == 0)
    # garbage in the padding does not change the real genes' output
    x2 = x.clone()
    x2[pad] = 100.0
    torch.testing.assert_close(layer(x2, mask)[mask], out[mask])


def test_fused_kernel_matches_explicit_attention():
    layer = GeneSelfAttention(8, heads=4, residual=False)
    x, mask = _batch()
    fused = layer(x, mask)
    explicit, _ = layer(x, mask, return_attention_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_paper_scale_is_supported_and_repr_is_one_line():
    layer = GeneSelfAttention(8, heads=1, scale=1.0)
    x, mask = _batch()
    _, attn = layer(x, mask, return_attention_weights=True)
    fw = layer.lin(x[2])
    expected = torch.softmax(fw @ fw.T, dim=-1)  # Eq. 4 exactly, no 1/sqrt(d)
    torch.testing.assert_close(attn[2, 0], expected)
    assert "\n" not in repr(layer) and "heads=1" in repr(layer)


def test_reset_parameters_changes_weights():
    layer = GeneSelfAttention(8)
    before = layer.lin.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.lin.weight)


def test_attention_without_autograd_matches_with_it():
    """The in-place path of inference gives the attention of the training path."""
    torch.manual_seed(0)
    layer = GeneSelfAttention(8, heads=2).eval()
    x = torch.randn(4, 6, 8)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 5])[:, None]
    out, attn = layer(x, mask, return_attention_weights=True)
    with torch.no_grad():
        out_ng, attn_ng = layer(x, mask, return_attention_weights=True)
    torch.testing.assert_close(attn_ng, attn.detach())
    torch.testing.assert_close(out_ng, out.detach())
    assert torch.all(attn_ng.transpose(1, 2)[~mask] == 0)  # padded rows give nothing
    torch.testing.assert_close(out_ng, layer(x, mask).detach(), rtol=1e-5, atol=1e-5)  # SDPA

from __future__ import annotations

import numpy as np
import pytest
import torch

from scbignn_tools.module import AttentionAccumulator, importance_table


def brute_force(genes, lengths, attentions, n_genes):
    """Each gene pair's attention averaged over heads, layers and the cells holding both."""
    total = np.zeros((n_genes, n_genes))
    count = np.zeros((n_genes, n_genes))
    for layer in attentions:
        for b, n in enumerate(lengths):
            g = genes[b, :n].numpy()
            total[np.ix_(g, g)] += layer[b, :, :n, :n].mean(0).numpy()
            count[np.ix_(g, g)] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def batch(rng, n_cells, n_genes, width, heads=2, layers=2):
    lengths = rng.integers(2, width + 1, n_cells)
    genes = torch.stack([torch.as_tensor(rng.permutation(n_genes)[:width]) for _ in lengths])
    mask = torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]
    attentions = []
    for _ in range(layers):
        a = torch.rand(n_cells, heads, width, width)
        a = a.masked_fill(~mask[:, None, None, :], 0)  # padded keys get no attention
        a.transpose(1, 2)[~mask] = float("nan")  # padded query rows hold anything
        attentions.append(a / a.nansum(-1, keepdim=True))
    return genes, mask, lengths, attentions


def test_accumulator_equals_the_average_over_cells_holding_both_genes():
    rng = np.random.default_rng(0)
    acc = AttentionAccumulator(12)
    expected_total = []
    for _ in range(5):  # several batches, padded to different widths, added in a thread
        genes, mask, lengths, attentions = batch(rng, 5, 12, int(rng.integers(3, 8)))
        acc(None, genes, mask, attentions)
        expected_total.append((genes, lengths, attentions))
    # brute force over all batches at once
    total, count = np.zeros((12, 12)), np.zeros((12, 12))
    for genes, lengths, attentions in expected_total:
        m = brute_force(genes, lengths, attentions, 12)
        seen = np.zeros((12, 12))
        for b, n in enumerate(lengths):
            g = genes[b, :n].numpy()
            seen[np.ix_(g, g)] += len(attentions)
        total += m * seen
        count += seen
    expected = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    np.testing.assert_allclose(acc.matrix(), expected, rtol=1e-5, atol=1e-7)
    assert not np.isnan(acc.matrix()).any()  # padding never leaks in
    np.testing.assert_allclose(acc.importance(), expected.sum(0), rtol=1e-5)


def test_groups_are_accumulated_apart_in_one_pass():
    rng = np.random.default_rng(1)
    genes, mask, lengths, attentions = batch(rng, 6, 12, 5)
    codes = np.array([0, 1, 0, -1, 1, 0], np.int8)  # as pandas codes; the fourth: no group
    grouped = AttentionAccumulator(12, groups=["a", "b"])
    grouped(None, genes, mask, attentions, codes)
    for code in range(2):
        alone = AttentionAccumulator(12)
        cells = torch.as_tensor(np.flatnonzero(codes == code))
        alone(None, genes[cells], mask[cells], [a[cells] for a in attentions])
        np.testing.assert_allclose(grouped.matrix(code), alone.matrix(), rtol=1e-6)
    pooled = AttentionAccumulator(12)
    cells = torch.as_tensor(np.flatnonzero(codes >= 0))
    pooled(None, genes[cells], mask[cells], [a[cells] for a in attentions])
    np.testing.assert_allclose(grouped.importance(None), pooled.importance(), rtol=1e-5)
    table = importance_table(grouped, [f"g{i}" for i in range(12)])
    assert list(table.columns) == ["a", "b"] and table.index.name == "gene"
    assert table["b"].to_numpy() == pytest.approx(grouped.importance(1))


def test_pairs_counted_from_the_gene_sets_equal_the_batch_counts():
    rng = np.random.default_rng(2)
    genes, mask, lengths, attentions = batch(rng, 8, 12, 6)
    codes = np.array([0, 1, 0, -1, 1, 0, 1, 1])
    by_batch = AttentionAccumulator(12, groups=["a", "b"])
    by_batch(None, genes, mask, attentions, codes)
    by_sets = AttentionAccumulator(12, groups=["a", "b"], count_pairs=False)
    by_sets(None, genes, mask, attentions, codes)
    x = np.zeros((8, 12), np.float32)  # the cells' expression: non-zero where a gene is held
    for b, n in enumerate(lengths):
        x[b, genes[b, :n].numpy()] = rng.random(n) + 0.1
    by_sets.count_pairs(x, codes)
    for g in range(2):
        np.testing.assert_allclose(by_sets.matrix(g), by_batch.matrix(g), rtol=1e-6)
    np.testing.assert_allclose(by_sets.importance(None), by_batch.importance(None), rtol=1e-5)

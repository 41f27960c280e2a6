"""GeneSets batching: n_batches counts what batches yields; sorted_batches keeps its limits."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from scbignn_tools.data import GeneSets


def test_n_batches_counts_the_batches_shuffled_or_not():
    sets = GeneSets(sparse.random(300, 20, density=0.3, format="csr", random_state=0))
    rng = np.random.default_rng(0)
    for n_rows, size, bucket in [(300, 7, 3), (300, 64, 32), (21, 7, 3), (0, 5, 2), (250, 10, 4)]:
        rows = np.arange(n_rows)
        expected = GeneSets.n_batches(n_rows, size, bucket)
        assert len(list(sets.batches(rows, size, None, bucket))) == expected
        assert len(list(sets.batches(rows, size, rng, bucket))) == expected


def test_sorted_batches_keep_cell_and_attention_limits_and_cover_every_cell_once():
    rng = np.random.default_rng(0)
    x = sparse.csr_matrix(rng.random((500, 80)) < rng.random((500, 1)) * 0.7, dtype=np.float32)
    sets = GeneSets(x)
    rows = rng.permutation(500)[:400]
    parts = list(sets.sorted_batches(rows, 64, 4_000))
    positions = np.concatenate(parts)
    assert np.array_equal(np.sort(positions), np.arange(400))
    assert (np.diff(sets.lengths[rows[positions]]) >= 0).all()  # sorted by length
    for part in parts:
        longest = max(int(sets.lengths[rows[part]].max()), 1)
        assert len(part) <= 64
        assert len(part) == 1 or len(part) * longest**2 <= 4_000
    assert len(parts) > len(list(sets.sorted_batches(rows, 64))) == 7

"""GeneSets.n_batches counts what GeneSets.batches yields."""

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

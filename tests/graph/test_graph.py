from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from scbignn_tools.data import GeneSets
from scbignn_tools.graph import (
    expression_basis,
    extend_graph,
    homophily,
    knn_graph,
    novelty,
    project,
    query_shift,
    row_normalized_adjacency,
)


def test_knn_graph_links_nearest_points_and_self():
    h = np.array([[0.0], [0.1], [0.25], [10.0], [10.1]], dtype=np.float32)
    adj = knn_graph(h, n_neighbors=1).toarray()
    assert np.all(np.diag(adj) == 1)
    assert adj[0, 1] == 1 and adj[3, 4] == 1 and adj[4, 3] == 1 and adj[2, 1] == 1
    assert adj[:3, 3:].sum() == 0
    assert homophily(adj, np.array([0, 0, 0, 1, 1])) == 1.0
    dense = row_normalized_adjacency(adj).to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(5))


def test_homophily_counts_only_edges_leaving_the_given_cells():
    # 0-1 and 1-0 join one label, 2-3 and 3-2 join two labels; self-loops never count
    adj = sparse.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=np.float32)
    )
    labels = np.array([0, 0, 0, 1])
    assert homophily(adj, labels) == 0.5
    assert homophily(adj, labels, np.array([0, 1])) == 1.0
    assert homophily(adj, labels, np.array([3])) == 0.0


def test_gene_sets_pad_and_mask():
    X = sparse.csr_matrix(
        np.array([[0, 2.0, 0, 1.0], [3.0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    )
    genes, values, mask = GeneSets(X).batch(np.array([0, 1, 2]))
    assert genes.shape == (3, 2)
    assert genes[0].tolist() == [1, 3] and values[0].tolist() == [2.0, 1.0]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    sets = GeneSets(X)
    batches = list(sets.batches(np.arange(3), 2, np.random.default_rng(0)))
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2]


def test_gene_sets_subsample_keeps_real_genes_of_each_cell():
    rng = np.random.default_rng(0)
    dense = (rng.random((6, 30)) < 0.6) * rng.integers(1, 5, (6, 30))
    sets = GeneSets(sparse.csr_matrix(dense.astype(np.float32)))
    genes, values, mask = sets.batch(np.arange(6), max_genes=5, rng=rng)
    assert genes.shape[1] == 5 and mask.sum(1).tolist() == [min(5, n) for n in (dense > 0).sum(1)]
    for i in range(6):
        g = genes[i][mask[i]].numpy()
        assert len(set(g)) == len(g)  # no gene twice
        np.testing.assert_array_equal(values[i][mask[i]].numpy(), dense[i, g])


def test_expression_basis_projects_new_cells_onto_the_reference_axes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 20)).astype(np.float32)
    x[:40, :5] += 4  # two groups
    basis = expression_basis(x, n_comps=5)
    assert basis[0].shape == (20,) and basis[1].shape == (5, 20)
    coords = project(x, basis)
    # the first axis separates the groups, and a new cell lands beside its group
    assert (
        np.sign(coords[:40, 0]).std() == 0
        and np.sign(coords[:40, 0])[0] != np.sign(coords[40:, 0])[0]
    )
    new = project(x[:1] + 0.01, basis)
    np.testing.assert_allclose(new, coords[:1], atol=0.1)
    adj = extend_graph(knn_graph(coords, 3), coords, new, 3)
    assert adj.shape == (81, 81) and adj[80, :40].sum() == 3 and adj[:80, 80].sum() == 0


def test_query_shift_measures_a_shared_shift_not_a_change_of_composition():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 10.0]])
    kinds = np.repeat([0, 1], 200)
    h_graph = centres[kinds] + rng.normal(size=(400, 2))
    x_graph = np.zeros((400, 3))
    x_graph[:, 0] = 5.0 * kinds  # gene 0 marks kind 1
    x_graph += rng.normal(scale=0.1, size=x_graph.shape)
    new = rng.choice(np.flatnonzero(kinds == 1), 50)  # only kind 1: composition differs
    h_new = h_graph[new] + rng.normal(scale=0.1, size=(50, 2))
    x_new = x_graph[new] + np.array([0.0, 2.0, 0.0])  # the query's own shift is on gene 1

    delta = query_shift(
        torch.as_tensor(x_new), h_new, torch.as_tensor(x_graph), h_graph, n_neighbors=10
    )

    assert delta.shape == (3,)
    np.testing.assert_allclose(delta.numpy(), [0.0, 2.0, 0.0], atol=0.1)
    naive = x_new.mean(0) - x_graph.mean(0)  # confounded by composition on gene 0
    assert naive[0] > 2.0


def test_novelty_is_near_one_only_for_cells_away_from_the_reference():
    rng = np.random.default_rng(0)
    h_ref = rng.normal(size=(500, 4))
    same = rng.normal(size=(200, 4))  # unseen cells of the reference's kind
    far = rng.normal(size=(50, 4)) + 6.0  # a kind the reference lacks
    scores = novelty(h_ref, np.vstack([same, far]), n_neighbors=10)
    assert scores.shape == (250,) and np.all((scores >= 0) & (scores <= 1))
    assert np.mean(scores[:200] > 0.99) < 0.05
    assert np.all(scores[200:] == 1.0)
    assert 0.3 < np.median(scores[:200]) < 0.8  # ranked like reference cells


def test_reference_graph_measures_its_own_distances_once(monkeypatch):
    from scbignn_tools.graph import ReferenceGraph, _reference

    rng = np.random.default_rng(0)
    n = 300
    h = rng.normal(size=(n, 4))
    labels = np.where(rng.random(n) < 0.2, -1, rng.integers(0, 3, n))
    graph = ReferenceGraph(
        x=sparse.csr_matrix((n, 5)), h=h, coords=h, basis=None, adj=sparse.identity(n, format="csr"),
        labels=labels, obs_names=np.arange(n).astype(str), n_neighbors=10,
    )  # fmt: skip
    calls = []
    original = _reference.neighbour_distances

    def counted(h_reference, h_new, *args, **kwargs):
        calls.append(h_new is None)
        return original(h_reference, h_new, *args, **kwargs)

    monkeypatch.setattr(_reference, "neighbour_distances", counted)
    new = rng.normal(size=(40, 4))
    first, second = graph.novelty(new), graph.novelty(new[:10])
    assert calls == [True, False, False]  # the reference's own distances once, then cached
    np.testing.assert_array_equal(first[:10], second)
    np.testing.assert_array_equal(first, novelty(h[labels >= 0], new, n_neighbors=10))

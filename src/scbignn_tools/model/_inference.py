"""Both GNNs over cells given as arrays, against a model's frozen reference graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from scbignn_tools.data import GeneSets, StandardizedExpression
from scbignn_tools.graph import ReferenceGraph, match_cells
from scbignn_tools.graph import row_normalized_adjacency as normalized
from scbignn_tools.module import (
    AttentionAccumulator,
    SCBiGNNModule,
    p_inference,
    q_inference,
    softmax,
)
from scbignn_tools.train import Calibration

from ._anndata import Cells

MIN_SHIFT_CELLS = 50  # fewer new cells than this: no shift correction


def standardize(module: SCBiGNNModule, x) -> StandardizedExpression:
    """Standardised expression of normalised expression ``x``, kept sparse, on the module's device."""
    return module.expression(x)


@dataclass
class Inference:
    """Outputs of both GNNs for a set of cells (``probs_p`` and ``h_prime`` only with p_theta)."""

    sets: GeneSets
    x: StandardizedExpression  # before any shift removal
    h: np.ndarray
    probs_q: np.ndarray
    probs_p: np.ndarray | None = None
    h_prime: np.ndarray | None = None
    query_shift: float = 0.0  # root mean square of the shift removed from the new cells
    shift: torch.Tensor | None = None
    model: str = "p_theta"  # "q_phi" when a model saved without reference cells falls back
    own: OwnQuery | None = None  # the query model's own cells, when some of these are
    own_rows: np.ndarray | None = None  # each cell's row in own.cells, -1 if not there


@dataclass
class OwnQuery:
    """A query model's own cells outside its graph, and the shift measured on all of them."""

    cells: Cells
    shift: torch.Tensor
    logits_q: np.ndarray
    h: np.ndarray
    attention: AttentionAccumulator | None = None  # grouped by q_phi's label (class index)


class Predictor:
    """q_phi and p_theta over :class:`Cells`, against a frozen :class:`ReferenceGraph`.

    Cells of the graph (same name and same expression) take the graph's p_theta output; the
    others join the graph inductively (:meth:`ReferenceGraph.extend`) after the expression
    shift they share against the graph cells is removed. The graph cells' q_phi outputs come
    from the graph's ``h``; their p_theta outputs and standardised expression (sparse, needed by
    every inductive call) are computed once and kept while the predictor lives, that is until
    the model trains again.

    Parameters
    ----------
    module
        The trained module.
    graph
        Its reference graph; ``None`` for q_phi only.
    calibration
        Temperatures applied to both GNNs' logits.
    graph_outputs
        p_theta's logits and ``h_prime`` for the graph cells, when training just computed them.
    """

    def __init__(
        self,
        module: SCBiGNNModule,
        graph: ReferenceGraph | None,
        calibration: Calibration,
        graph_outputs: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.module, self.graph, self.calibration = module, graph, calibration
        self._graph_outputs = graph_outputs  # p_theta on the graph, if the caller has it
        self._x_graph: StandardizedExpression | None = None

    @property
    def device(self) -> torch.device:
        return self.module.device

    def standardize(self, x) -> StandardizedExpression:
        """:func:`standardize` with this predictor's module."""
        return standardize(self.module, x)

    def infer(
        self,
        cells: Cells,
        with_p: bool,
        remove_shift: bool = True,
        batch_size: int = 256,
        own: OwnQuery | None = None,
    ) -> Inference:
        """q_phi over the cells and, with ``with_p``, p_theta.

        New cells that all belong to ``own`` take its shift; other new cells are measured on
        their own (:meth:`shift`).
        """
        sets, x = GeneSets(cells.x), self.standardize(cells.x)
        rows = None if self.graph is None else self.graph.contains(cells.names, cells.x)
        logits_q, h, own_rows = self._q(cells, sets, x, batch_size, own, rows)
        in_own = own_rows >= 0
        cal = self.calibration
        out = Inference(sets, x, h, softmax(logits_q / cal.temperature_q))
        if in_own.any():
            out.own, out.own_rows = own, own_rows
        if not with_p:
            return out
        graph = self.graph
        if graph is None:  # saved with reference_cells="none": nothing to place new cells among
            out.probs_p, out.model = out.probs_q, "q_phi"
            return out
        inside, new = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
        parts = []  # (cells, logits, h_prime)
        if len(inside):  # cells of the graph: its own outputs
            logits, h_prime = self.graph_outputs()
            parts.append((inside, logits[rows[inside]], h_prime[rows[inside]]))
        if len(new):  # the others join the graph, each linked to its nearest graph cells
            x_new, h_new = x[new], h[new]
            shift = torch.zeros(x.shape[1], device=self.device)
            if remove_shift:
                shift = own.shift if np.all(in_own[new]) else self.shift(x_new, h_new)
            x_new = x_new - shift
            adj = graph.extend(graph.coords_of(x_new, h_new))
            logits, h_prime = p_inference(
                self.module,
                StandardizedExpression.concat([self.x_graph(), x_new]),
                np.vstack([graph.h, h_new]),
                normalized(adj, self.device),
            )
            parts.append((new, logits[-len(new) :], h_prime[-len(new) :]))
            out.shift, out.query_shift = shift, float(shift.square().mean().sqrt())
        logits = np.empty((len(cells), parts[0][1].shape[1]), np.float32)
        h_prime = np.empty((len(cells), parts[0][2].shape[1]), np.float32)
        for index, part_logits, part_h_prime in parts:
            logits[index], h_prime[index] = part_logits, part_h_prime
        out.probs_p, out.h_prime = softmax(logits / cal.temperature_p), h_prime
        return out

    def _q(self, cells: Cells, sets, x, batch_size: int, own, rows: np.ndarray | None):
        """q_phi's logits and ``h``, and each cell's row in ``own`` (-1 if not there).

        Cells of the graph (``rows`` >= 0) take the graph's ``h``, and cells of ``own`` (same
        name and expression) its pass: only the others go through q_phi's attention.
        """
        n = len(cells)
        logits = np.empty((n, self.module.n_labels), np.float32)
        h = np.empty((n, self.module.n_h), np.float32)
        done = np.zeros(n, bool) if rows is None else rows >= 0
        if done.any():
            h[done] = self.graph.h[rows[done]]
            with torch.no_grad():
                self.module.eval()
                hb = torch.as_tensor(h[done], device=self.device)
                logits[done] = self.module.q.classifier(hb).cpu().numpy()
        own_rows = np.full(n, -1, np.int64)
        if own is not None and not done.all():
            todo = np.flatnonzero(~done)
            found = match_cells(cells.names[todo], cells.x[todo], own.cells.names, own.cells.x)
            hit = todo[found >= 0]
            logits[hit], h[hit] = own.logits_q[found[found >= 0]], own.h[found[found >= 0]]
            own_rows[hit] = found[found >= 0]
            done[hit] = True
        rest = np.flatnonzero(~done)
        if len(rest):
            logits[rest], h[rest] = q_inference(self.module, sets, x, rest, batch_size, self.device)
        return logits, h, own_rows

    def x_graph(self) -> StandardizedExpression:
        """The graph cells' standardised expression (kept once computed)."""
        if self._x_graph is None:
            self._x_graph = self.standardize(self.graph.x)
        return self._x_graph

    def graph_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """p_theta's logits and ``h_prime`` for the cells of the graph (computed once)."""
        if self._graph_outputs is None:
            adj = normalized(self.graph.adj, self.device)
            self._graph_outputs = p_inference(self.module, self.x_graph(), self.graph.h, adj)
        return self._graph_outputs

    def shift(self, x_new: StandardizedExpression, h_new: np.ndarray) -> torch.Tensor:
        """The shift of new cells against the graph; zero under ``MIN_SHIFT_CELLS`` cells."""
        if len(x_new) < MIN_SHIFT_CELLS:
            return torch.zeros(x_new.shape[1], device=self.device)
        return self.graph.shift(x_new, h_new, self.x_graph())

    def own_query(self, cells: Cells, attention: bool = False) -> OwnQuery | None:
        """The cells outside the graph among ``cells`` and their shift; ``None`` if there are none.

        A query model (:meth:`SCBiGNN.load_query_data`) measures the shift once on its whole
        query, so that a query cell's annotation does not depend on the other cells passed
        with it. With ``attention``, the same pass also sums q_phi's attention per q_phi label
        (:meth:`attention` then needs a pass over only the cells that p_theta labels otherwise).
        """
        if self.graph is None:
            return None
        cells = cells.subset(np.flatnonzero(self.graph.contains(cells.names, cells.x) < 0))
        if not len(cells):
            return None
        x = self.standardize(cells.x)
        acc, hook = None, None
        if attention:
            n_genes, classes = self.module.n_genes, range(self.module.n_labels)
            acc = AttentionAccumulator(n_genes, self.device, [str(c) for c in classes], False)

            def hook(rows, genes, mask, attentions, logits):
                acc(rows, genes, mask, attentions, logits.argmax(1).cpu().numpy())

        logits_q, h = q_inference(
            self.module, GeneSets(cells.x), x, device=self.device, attention_hook=hook
        )
        if acc is not None:
            acc.release()  # kept with the query model: without its batch buffers
        return OwnQuery(cells, self.shift(x, h), logits_q, h, acc)

    def attention(
        self,
        out: Inference,
        groups: np.ndarray,
        batch_size: int = 256,
        classes: list[str] | None = None,
    ) -> AttentionAccumulator:
        """An :class:`~scbignn_tools.module.AttentionAccumulator` of the groups.

        Its groups are the distinct values of ``groups`` (missing values left out), in the
        order of ``classes`` when they all are classes, else sorted. One pass over the cells,
        or, when ``out`` holds all of a query model's own cells and their attention summed per
        q_phi label (:meth:`own_query` with ``attention``) and every group is one of
        ``classes``, a pass over only the cells whose group is not their q_phi label (moved
        from one sum to the other) and the cells outside the query. That sum is used up (and
        taken as it is when every class is a group).
        """
        group_of = pd.Categorical(groups)
        n_genes, categories = self.module.n_genes, list(group_of.categories)
        present = set(categories)
        of_classes = classes is not None and present <= set(classes)
        if of_classes:  # in the model's order
            categories = [c for c in classes if c in present]
            group_of = pd.Categorical(groups, categories=categories)
        codes = group_of.codes
        own = out.own
        if (
            of_classes
            and own is not None
            and own.attention is not None
            and _holds_all(out.own_rows, len(own.cells))
        ):
            acc, own.attention = own.attention, None
            index = {c: i for i, c in enumerate(classes)}
            to_class = np.array([index[c] for c in categories] + [-1])
            target = to_class[codes]  # each cell's group as a class index (code -1: -1)
            in_own = out.own_rows >= 0
            q_label = np.full(len(codes), -1)
            q_label[in_own] = own.logits_q[out.own_rows[in_own]].argmax(1)
            rows = np.flatnonzero(~in_own | (target != q_label))

            def hook(rows, genes, mask, attentions, logits):
                acc(rows, genes, mask, attentions, target[rows])
                if in_own[rows].any():  # take them out of their q_phi label's sum
                    acc(rows, genes, mask, [-a for a in attentions], q_label[rows])

            if len(rows):
                q_inference(self.module, out.sets, out.x, rows, batch_size, self.device, hook)
            if len(categories) == len(classes):
                acc.groups = categories  # every class, in its order: the sums as they are
            else:
                acc = acc.select(to_class[:-1], categories)
        else:
            acc = AttentionAccumulator(n_genes, self.device, categories, count_pairs=False)

            def hook(rows, genes, mask, attentions, logits):
                acc(rows, genes, mask, attentions, codes[rows])

            q_inference(self.module, out.sets, out.x, None, batch_size, self.device, hook)
        sets = out.sets
        held = sparse.csr_matrix((sets.data, sets.indices, sets.indptr), (len(sets), n_genes))
        acc.count_pairs(held, codes)
        return acc


def _holds_all(rows: np.ndarray | None, n: int) -> bool:
    """Whether ``rows`` (-1: none) name each of ``0 .. n - 1`` exactly once."""
    if rows is None:
        return False
    rows = rows[rows >= 0]
    return len(rows) == n and np.array_equal(np.sort(rows), np.arange(n))

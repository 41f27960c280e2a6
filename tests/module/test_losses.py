from __future__ import annotations

import numpy as np
import torch

from scbignn_tools.module import SCBiGNNModule, class_weights, confident_weights, draw_targets


def test_confident_weights_keep_labelled_and_confident_cells():
    probs = np.array([[0.5, 0.5], [0.97, 0.03], [0.2, 0.8], [0.01, 0.99]], dtype=np.float32)
    labels = np.array([0, -1, -1, -1])
    np.testing.assert_array_equal(confident_weights(probs, labels, 0.95), [1, 1, 0, 1])
    np.testing.assert_array_equal(confident_weights(probs, labels, 0.0), [1, 1, 1, 1])
    np.testing.assert_array_equal(confident_weights(probs, labels, 1.01), [1, 0, 0, 0])


def test_draw_targets_keeps_true_labels():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    labels = np.array([1, -1, -1])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        draw_targets(probs, labels, "argmax", rng), [[0, 1], [0, 1], [1, 0]]
    )
    soft = draw_targets(probs, labels, "soft", rng)
    np.testing.assert_allclose(soft[1:], probs[1:])
    assert soft[0].tolist() == [0, 1]
    sampled = draw_targets(probs, labels, "sample", rng)
    assert sampled.sum(1).tolist() == [1, 1, 1] and sampled[0].tolist() == [0, 1]


def test_class_weights_balance_the_loss_of_each_type():
    labels = np.array([0] * 8 + [1] * 2 + [-1] * 5)  # 8 cells of type 0, 2 of type 1
    np.testing.assert_allclose(class_weights(labels, 2, 0.0), [1, 1])
    v = class_weights(labels, 2, 1.0)
    assert v[1] / v[0] == 4 and (8 * v[0] + 2 * v[1]) / 10 == 1  # balanced, mean 1
    np.testing.assert_allclose(
        class_weights(labels, 2, 0.5)[1] / class_weights(labels, 2, 0.5)[0], 2
    )
    absent = class_weights(labels, 3, 1.0)  # a third type without labelled cells
    assert absent[2] == absent[1]
    # in the loss, each type then weighs the same: the rare type's error costs 4 times more
    logits = torch.zeros(10, 2)
    targets = torch.as_tensor(np.eye(2, dtype=np.float32)[labels[:10]])
    logits[:8, 0] = 5.0  # type 0 right, type 1 wrong
    plain = SCBiGNNModule.loss(logits, targets, torch.ones(10))
    balanced = SCBiGNNModule.loss(logits, targets, torch.ones(10), torch.as_tensor(v))
    assert balanced > 2 * plain

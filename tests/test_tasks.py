"""Tests for robult_jax.tasks.

The Task objects are checked against the functions they stand for (losses,
metrics, positive weights) and against hand-computed numpy; the weight rules
themselves are tested in test_task_weights.py.

Shape legend: B batch, M modalities, P projection width, C classes (or outputs).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_losses import make_task_batch

from robult_jax import losses, metrics, tasks

TASK_BATCH = {  # (logits_BxC, labels) of each task, B = 3
    "multiclass": (
        np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 0.0, 0.0]]),
        np.array([1, 0, 0]),
    ),
    "multilabel": (
        np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]]),
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    ),
    "regression": (np.array([[0.5], [-2.0], [1.0]]), np.array([1.5, -1.0, 1.0])),
}


# ----------------------------------------------------------------------------- Task objects


@pytest.mark.parametrize("name", tasks.NAMES)
def test_get_returns_the_named_task(name):
    task = tasks.get(name)
    assert isinstance(task, tasks.Task) and task.name == name
    want = {"multiclass": "accuracy", "multilabel": "macro_f1", "regression": "mae"}[name]
    assert task.primary_metric == want
    assert task.higher_is_better == (name != "regression")
    assert task.uses_centroids == (name == "multiclass")
    # Hashable and equal to itself, so a static jit argument compiles once per task.
    f = jax.jit(lambda t, x: t.probs(x), static_argnums=0)
    chex.assert_shape(f(task, jnp.zeros((2, 1))), (2, 1))


def test_get_unknown_name_lists_the_names():
    with pytest.raises(
        ValueError, match=r"'ranking'.*\('multiclass', 'multilabel', 'regression'\)"
    ):
        tasks.get("ranking")


@pytest.mark.parametrize("name", tasks.NAMES)
def test_loss_beliefs_probs(name):
    task = tasks.get(name)
    logits, labels = (jnp.asarray(x) for x in TASK_BATCH[name])
    loss = task.loss(logits, labels)
    chex.assert_shape(loss, (3,))
    np.testing.assert_array_equal(loss, losses.supervised_loss(logits, labels, task=name))
    probs, beliefs = task.probs(logits), task.beliefs(logits)
    chex.assert_shape((probs, beliefs), logits.shape)
    np.testing.assert_array_equal(probs, beliefs)
    hand = {
        "multiclass": np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
        "multilabel": 1 / (1 + np.exp(-np.asarray(logits))),
        "regression": logits,
    }[name]
    np.testing.assert_allclose(probs, hand, rtol=1e-6)
    # probs is differentiable, beliefs are targets (stop_gradient inside).
    weights = jnp.arange(logits.size, dtype=logits.dtype).reshape(logits.shape)
    assert np.any(jax.grad(lambda x: jnp.sum(task.probs(x) * weights))(logits))
    assert not np.any(jax.grad(lambda x: jnp.sum(task.beliefs(x) * weights))(logits))


def _sweep_probs(rng, c):
    """(N, C) probability rows: random, one-hot, uniform, with zeros and near ties."""
    rows = [rng.dirichlet(np.full(c, a), size=20) for a in (0.1, 1.0, 10.0)]
    rows += [np.eye(c), np.full((1, c), 1 / c), np.zeros((1, c))]
    ties = rng.dirichlet(np.ones(c), size=20).astype(np.float32)
    top = ties.max(-1)
    # The winner, last, one float above column 0: log() rounds many such pairs to a tie.
    ties[:, 0], ties[:, -1] = top, np.nextafter(top, np.float32(1))
    return np.concatenate([np.concatenate(rows).astype(np.float32), ties])


@pytest.mark.parametrize("c", [1, 2, 5, 10])
def test_multiclass_logits_from_probs_round_trip(c):
    task, rng = tasks.get("multiclass"), np.random.default_rng(c)
    p = _sweep_probs(rng, c)
    x = np.asarray(jax.jit(task.logits_from_probs)(p))
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(np.argmax(x, -1), np.argmax(p, -1))
    valid = p.sum(-1) > 0
    np.testing.assert_allclose(
        task.probs(x)[valid], p[valid] / p[valid].sum(-1, keepdims=True), rtol=1e-5, atol=1e-7
    )


def test_multilabel_logits_from_probs_round_trip():
    task, rng = tasks.get("multilabel"), np.random.default_rng(40)
    near = [np.float32(0.5)]
    for direction in (0.0, 1.0):
        v = np.float32(0.5)
        for _ in range(30):
            near.append(v := np.nextafter(v, np.float32(direction)))
    p = np.concatenate([rng.random(200), near, [0.0, 1.0, 1e-30, 1 - 1e-7, 1e-7, 0.75]]).astype(
        np.float32
    )
    p = p.reshape(-1, 3)
    x = np.asarray(jax.jit(task.logits_from_probs)(p))
    assert np.isfinite(x).all()
    # The metrics decide by logit > 0, predictions by p > 0.5: they must agree.
    np.testing.assert_array_equal(x > 0, p > 0.5)
    np.testing.assert_array_equal(x == 0, p == 0.5)
    np.testing.assert_allclose(task.probs(x), p, atol=2e-7)
    np.testing.assert_array_equal(task.outputs(x)[1], task.outputs(task.logits_from_probs(p))[1])


def test_regression_logits_from_probs_is_identity():
    v = jnp.array([[-3.5], [0.0], [2.25]])
    np.testing.assert_array_equal(tasks.get("regression").logits_from_probs(v), v)


def test_outputs_match_hand_computed():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    probs, pred = tasks.get("multiclass").outputs(logits)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1e-6)
    np.testing.assert_array_equal(pred, [1, 2])
    assert probs.dtype == np.float32 and pred.dtype == np.int32
    probs, pred = tasks.get("multilabel").outputs(logits)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    np.testing.assert_array_equal(pred, [[1, 1, 1], [0, 0, 1]])
    assert probs.dtype == np.float32 and pred.dtype == np.int32
    values, pred = tasks.get("regression").outputs(np.array([[0.5], [-2.0]]))
    np.testing.assert_array_equal(values, [[0.5], [-2.0]])
    np.testing.assert_array_equal(pred, [0.5, -2.0])
    assert values.dtype == np.float32 and pred.dtype == np.float32


@pytest.mark.parametrize("name", tasks.NAMES)
def test_metrics_are_the_metrics_functions(name):
    fn = {
        "multiclass": metrics.classification_metrics,
        "multilabel": metrics.multilabel_metrics,
        "regression": metrics.regression_metrics,
    }[name]
    outputs, labels = TASK_BATCH[name]
    task = tasks.get(name)
    got = task.metrics(outputs, labels)
    assert got == fn(outputs, labels)
    assert task.primary_metric in got and set(got) <= set(metrics.HIGHER_IS_BETTER)


def test_train_metrics():
    logits, labels = (jnp.asarray(x) for x in TASK_BATCH["multiclass"])
    out = tasks.get("multiclass").train_metrics(logits, labels, jnp.array([True, True, False]))
    assert set(out) == {"labeled_accuracy"}
    np.testing.assert_allclose(out["labeled_accuracy"], 0.5)  # argmax 1, 2 vs labels 1, 0
    for name in ("multilabel", "regression"):
        logits, labels = (jnp.asarray(x) for x in TASK_BATCH[name])
        assert tasks.get(name).train_metrics(logits, labels, jnp.ones(3, bool)) == {}


@pytest.mark.parametrize("name", tasks.NAMES)
@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_positive_weights_equal_losses_positive_weights(name, mode):
    d = make_task_batch(name, seed=41)
    kw = dict(mode=mode, sigma=0.6, threshold=0.3, label_sigma=0.7)
    # Every task takes the centroids; only multiclass reads them.
    cent = dict(centroids_CxP=jnp.ones((3, 4)), centroid_valid_C=jnp.array([1, 0, 1], bool))
    args = (d["labels"], d["is_lab"], d["probs"], d["s"])
    got = tasks.get(name).positive_weights(*args, **kw, **cent)
    np.testing.assert_array_equal(got, losses.positive_weights(*args, task=name, **kw, **cent))
    if name != "multiclass":
        np.testing.assert_array_equal(got, tasks.get(name).positive_weights(*args, **kw))

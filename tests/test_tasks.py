"""Tests for robult_jax.tasks and the multi-label and regression weight rules.

The Task objects are checked against the functions they stand for (losses,
metrics, positive weights) and against hand-computed numpy; the multi-label and
regression rules of task_weights (docs/task_types.md) against plain loops.

Shape legend: B batch, M modalities, P projection width, C classes (or outputs).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_losses import make_batch, make_task_batch, np_contrastive

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


@pytest.mark.parametrize("name", tasks.NAMES)
def test_garbage_row_without_modalities_equals_slicing_it_out(name):
    # A row with no modality and no label (e.g. no fused embedding) may hold nan
    # in s: it is no rho reference, so the other rows' weights and losses are
    # those of the batch without it.
    d = make_task_batch(name, seed=42)
    d["s"][7], d["mask"][7] = np.nan, False
    kw = dict(task=name, threshold=0.2)
    w = losses.positive_weights(d["labels"], d["is_lab"], d["probs"], d["s"], **kw)
    keep = {k: v[:7] for k, v in d.items()}
    w_keep = losses.positive_weights(keep["labels"], keep["is_lab"], keep["probs"], keep["s"], **kw)
    np.testing.assert_array_equal(w[:7, :7], w_keep)
    args = ("s", "z", "labels", "is_lab", "probs", "mask")
    loss, _ = losses.soft_pu_contrastive_loss(*(d[k] for k in args), **kw)
    loss_keep, _ = losses.soft_pu_contrastive_loss(*(keep[k] for k in args), **kw)
    np.testing.assert_allclose(loss[:7], loss_keep, rtol=1e-6)
    np.testing.assert_array_equal(loss[7], 0.0)


# --------------------------------------------------------------- multilabel, regression weights


def np_task_weights(labels, is_lab, preds, s, task, mode, sigma=0.5, threshold=0.0, lsig=0.5):
    b = len(is_lab)

    def q(j):
        if task == "multilabel":
            return labels[j] if is_lab[j] else preds[j]
        return labels[j] if is_lab[j] else preds[j, 0]

    def agree(j, k):
        if task == "regression":
            return np.exp(-((q(j) - q(k)) ** 2) / (2 * lsig**2))
        inter = np.sum(q(j) * q(k))
        union = np.sum(q(j)) + np.sum(q(k)) - inter
        return inter / union if union > 0 else 1.0

    def passes(j):
        if is_lab[j] or task == "regression":
            return True
        return np.mean(np.maximum(preds[j], 1 - preds[j])) >= threshold

    def target(j):
        return tuple(q(j) > 0.5) if task == "multilabel" else q(j) > 0

    rho = np.ones(b)
    for j in range(b):
        if not is_lab[j]:
            refs = [r for r in range(b) if is_lab[r]]
            den = sum(agree(j, r) for r in refs)
            num = sum(
                agree(j, r) * np.exp(-np.sum((s[j] - s[r]) ** 2) / (2 * sigma**2)) for r in refs
            )
            rho[j] = num / den if den > 0 else 0.0
    w = np.eye(b)
    for j in range(b):
        for k in range(b):
            if j == k or mode == "none":
                continue
            ok = passes(j) and passes(k)
            if mode == "hard":
                w[j, k] = float(target(j) == target(k) and ok)
            else:
                w[j, k] = agree(j, k) * rho[j] * rho[k] * ok
    return w


_jit_weights_t = jax.jit(losses.positive_weights, static_argnames=("mode", "task"))
_jit_loss_t = jax.jit(losses.soft_pu_contrastive_loss, static_argnames=("mode", "task"))


def call_weights_t(d, **kw):
    return _jit_weights_t(d["labels"], d["is_lab"], d["probs"], d["s"], **kw)


def call_loss_t(d, **kw):
    return _jit_loss_t(d["s"], d["z"], d["labels"], d["is_lab"], d["probs"], d["mask"], **kw)


def test_task_weights_explicit_tiny_cases():
    # Rows 0, 1 labeled; row 2 unlabeled. s_2 is at squared distance 1 from s_0 and 2 from s_1.
    s = jnp.array([[0.0, 0.0], [1.0, 2.0], [0.0, 1.0]])
    is_lab = jnp.array([True, True, False])
    k0, k1 = np.exp(-0.5), np.exp(-1.0)  # RBF with sigma = 1
    # multilabel: y_0 = {0}, y_1 = {0, 1}, p_2 = (0.9, 0.2).
    # Jaccard: a_01 = 1/2; a_20 = .9 / (1 + 1.1 - .9) = .75; a_21 = 1.1 / (2 + 1.1 - 1.1) = .55.
    y = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    p = jnp.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.2]])
    rho = (0.75 * k0 + 0.55 * k1) / (0.75 + 0.55)
    w = _jit_weights_t(y, is_lab, p, s, sigma=1.0, task="multilabel")
    np.testing.assert_allclose(
        w, [[1, 0.5, 0.75 * rho], [0.5, 1, 0.55 * rho], [0.75 * rho, 0.55 * rho, 1]], rtol=1e-5
    )
    # Confidence of row 2 = mean(0.9, 0.8) = 0.85: kept at 0.85, dropped above.
    w = _jit_weights_t(y, is_lab, p, s, sigma=1.0, threshold=0.85, task="multilabel")
    np.testing.assert_allclose(w[2], [0.75 * rho, 0.55 * rho, 1], rtol=1e-5)
    w = _jit_weights_t(y, is_lab, p, s, sigma=1.0, threshold=0.86, task="multilabel")
    np.testing.assert_allclose(w, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]], rtol=1e-6)
    # hard: thresholded sets {0}, {0, 1}, {0}: rows 0 and 2 agree.
    w = _jit_weights_t(y, is_lab, p, s, mode="hard", task="multilabel")
    np.testing.assert_array_equal(w, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])

    # regression, label_sigma = 1: y_0 = 1, y_1 = -1, prediction of row 2 = 0.5 (label ignored).
    y = jnp.array([1.0, -1.0, 99.0])
    pred = jnp.array([[0.0], [0.0], [0.5]])
    a01, a20, a21 = np.exp(-2.0), np.exp(-0.125), np.exp(-1.125)
    rho = (a20 * k0 + a21 * k1) / (a20 + a21)
    w = _jit_weights_t(y, is_lab, pred, s, sigma=1.0, label_sigma=1.0, task="regression")
    want = [[1, a01, a20 * rho], [a01, 1, a21 * rho], [a20 * rho, a21 * rho, 1]]
    np.testing.assert_allclose(w, want, rtol=1e-5)
    # The threshold has no meaning (no confidence) for regression and is ignored.
    w2 = _jit_weights_t(
        y, is_lab, pred, s, sigma=1.0, label_sigma=1.0, threshold=1.0, task="regression"
    )
    np.testing.assert_array_equal(w, w2)
    w = _jit_weights_t(y, is_lab, pred, s, mode="hard", task="regression")
    np.testing.assert_array_equal(w, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])  # signs +, -, +


@pytest.mark.parametrize("task", ["multilabel", "regression"])
@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_task_weights_match_loop_reference(task, mode):
    d = make_task_batch(task, seed=20)
    for threshold in (0.0, 0.7):
        got = call_weights_t(
            d, mode=mode, task=task, sigma=0.7, threshold=threshold, label_sigma=0.8
        )
        want = np_task_weights(
            d["labels"], d["is_lab"], d["probs"], d["s"], task, mode, 0.7, threshold, 0.8
        )
        chex.assert_shape(got, (8, 8))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        if mode != "none":  # the case must exercise off-diagonal positives
            assert np.sum(want - np.eye(8)) > 0
    if task == "multilabel" and mode == "soft":  # the threshold must bite somewhere
        w0 = np_task_weights(d["labels"], d["is_lab"], d["probs"], d["s"], task, mode)
        assert not np.allclose(w0, want)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_multilabel_one_hot_equals_multiclass(mode):
    # One-hot labels and predictions: the Jaccard index is 1[y_j == y_k] and the
    # a-weighted rho is the mean over labeled samples of the predicted class.
    d = make_batch(seed=21)
    onehot = np.eye(3, dtype=np.float32)
    pred = np.argmax(d["probs"], axis=-1)
    probs = onehot[pred]
    w_mc = _jit_weights_t(d["labels"], d["is_lab"], probs, d["s"], mode=mode)
    w_ml = _jit_weights_t(
        onehot[d["labels"]], d["is_lab"], probs, d["s"], mode=mode, task="multilabel"
    )
    np.testing.assert_allclose(w_ml, w_mc, rtol=1e-6, atol=1e-7)
    assert np.sum(np.asarray(w_mc) - np.eye(8)) > 0


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_task_labels_of_unlabeled_rows_are_ignored(task):
    d = make_task_batch(task, seed=22)
    d2 = dict(d, labels=np.where(
        d["is_lab"].reshape((-1,) + (1,) * (d["labels"].ndim - 1)), d["labels"], np.nan
    ).astype(np.float32))  # fmt: skip
    for mode in ("soft", "hard"):
        np.testing.assert_array_equal(
            call_weights_t(d, mode=mode, task=task), call_weights_t(d2, mode=mode, task=task)
        )
    np.testing.assert_array_equal(call_loss_t(d, task=task)[0], call_loss_t(d2, task=task)[0])


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_task_contrastive_matches_reference_and_is_finite(task):
    d = make_task_batch(task, seed=23)
    d["mask"][1:, 2] = False
    d["z"][1:, 2] = np.nan  # garbage in absent rows must not leak
    w = np_task_weights(d["labels"], d["is_lab"], d["probs"], d["s"], task, "soft")
    want = np_contrastive(d["s"], np.nan_to_num(d["z"]), w, d["mask"], 0.1)

    def f(s, z):
        loss, _ = losses.soft_pu_contrastive_loss(
            s, z, d["labels"], d["is_lab"], d["probs"], d["mask"], task=task
        )
        return jnp.sum(loss), loss

    (total, loss), grads = jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))(d["s"], d["z"])
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(total) and all(np.isfinite(g).all() for g in grads)
    assert np.any(grads[0]) and np.any(grads[1])


def test_regression_contrastive_gradients():
    d = make_task_batch("regression", seed=24)
    s, z = d["s"].astype(np.float64), d["z"].astype(np.float64)

    # s is held fixed: it enters rho under stop_gradient (see test_contrastive_gradients).
    @jax.jit
    def f(z):
        args = (d["labels"], d["is_lab"], d["probs"], d["mask"])
        loss, _ = losses.soft_pu_contrastive_loss(s, z, *args, task="regression", temperature=0.5)
        return jnp.sum(loss)

    with jax.enable_x64(True):
        check_grads(f, (z,), order=1, modes=["rev"])


def test_task_weights_errors():
    d = make_task_batch("multilabel")
    with pytest.raises(ValueError, match="allowed values"):
        losses.positive_weights(d["labels"], d["is_lab"], d["probs"], d["s"], task="ranking")
    with pytest.raises(ValueError, match=r"labels_B.*\(8,\).*\(8, 3\)"):
        losses.positive_weights(
            d["labels"][:, 0], d["is_lab"], d["probs"], d["s"], task="multilabel"
        )
    r = make_task_batch("regression")
    with pytest.raises(ValueError, match=r"regression.*\(B, 1\)"):
        losses.positive_weights(r["labels"], r["is_lab"], d["probs"], r["s"], task="regression")

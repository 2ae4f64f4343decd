"""Tests for robult_jax.task_weights, the positive-weight rules of the soft PU loss.

Each rule is checked against hand-computed tiny cases and against a numpy
reference written with plain loops, independently of the vectorised code: the
multi-class rule from docs/method.md 3.2, the multi-label and regression rules
from docs/task_types.md; and, inside the contrastive loss, against test_losses.py's
loop reference of the weighted loss.

Shape legend: B batch, M modalities, P projection width, C classes (or outputs).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_losses import (
    call_loss,
    call_weights,
    jit_weights,
    make_batch,
    make_task_batch,
    np_contrastive,
)

from robult_jax import losses, tasks

# ----------------------------------------------------------------------------- references


def np_positive_weights(
    labels, is_lab, probs, s, mode, sigma=0.5, threshold=0.0, cent=None, cvalid=None
):
    b, c = probs.shape
    w = np.zeros((b, b))
    p = [np.eye(c)[labels[j]] if is_lab[j] else probs[j] for j in range(b)]
    yhat = [labels[j] if is_lab[j] else int(np.argmax(probs[j])) for j in range(b)]
    passes = [bool(is_lab[j]) or probs[j].max() >= threshold for j in range(b)]
    rho = np.ones(b)
    for j in range(b):
        if is_lab[j]:
            continue
        cls = int(np.argmax(probs[j]))
        refs = [r for r in range(b) if is_lab[r] and labels[r] == cls]
        if refs:
            rho[j] = np.mean([np.exp(-np.sum((s[j] - s[r]) ** 2) / (2 * sigma**2)) for r in refs])
        elif cent is not None and (cvalid is None or cvalid[cls]):
            rho[j] = np.exp(-np.sum((s[j] - cent[cls]) ** 2) / (2 * sigma**2))
        else:
            rho[j] = 0.0
    for j in range(b):
        for k in range(b):
            if j == k or mode == "none":
                w[j, k] = float(j == k)
            elif mode == "hard":
                w[j, k] = float(yhat[j] == yhat[k] and passes[j] and passes[k])
            elif is_lab[j] and is_lab[k]:
                w[j, k] = float(labels[j] == labels[k])
            else:
                w[j, k] = np.dot(p[j], p[k]) * rho[j] * rho[k] * (passes[j] and passes[k])
    return w


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


# ----------------------------------------------------------------------------- multiclass


def test_soft_weights_explicit_tiny_case():
    # Rows 0, 1 labeled (classes 0, 1); row 2 unlabeled, predicted class 0.
    # rho_2 = kernel to the single labeled class-0 sample: ||s2 - s0||^2 = 1, sigma = 1.
    s = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    probs = jnp.array([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]])
    w = jit_weights(jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s, sigma=1.0)
    r = np.exp(-0.5)
    expected = [[1, 0, 0.8 * r], [0, 1, 0.2 * r], [0.8 * r, 0.2 * r, 1]]
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    # Threshold 0.9 > max p_2 = 0.8: row 2 drops out of every off-diagonal pair.
    w = jit_weights(
        jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s, sigma=1.0, threshold=0.9
    )
    np.testing.assert_allclose(w, np.eye(3), atol=1e-7)


def test_centroid_fallback_and_conservative_zero():
    # Row 2 is unlabeled with predicted class 2, which no labeled row has.
    s = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    probs = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0.1, 0.2, 0.7]])
    args = (jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s)
    cent = jnp.array([[9.0, 9.0], [9.0, 9.0], [0.0, 1.0]])  # ||s2 - c2||^2 = 1
    w = jit_weights(*args, sigma=1.0, centroids_CxP=cent)
    r = np.exp(-0.5)
    np.testing.assert_allclose(w[2], [0.1 * r, 0.2 * r, 1.0], rtol=1e-6)
    # Invalid centroid (or none at all): rho_2 = 0, so row 2 has only its diagonal.
    invalid = jnp.array([True, True, False])
    for kw in ({"centroids_CxP": cent, "centroid_valid_C": invalid}, {}):
        w = jit_weights(*args, sigma=1.0, **kw)
        np.testing.assert_allclose(w[2], [0, 0, 1], atol=1e-7)
        np.testing.assert_allclose(w[:, 2], [0, 0, 1], atol=1e-7)


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
@pytest.mark.parametrize("threshold", [0.0, 0.6])
def test_positive_weights_match_loop_reference(mode, threshold):
    d = make_batch(seed=1, b=9, c=4, n_lab=4)
    cent = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    cvalid = np.array([True, False, True, True])
    got = jit_weights(
        d["labels"], d["is_lab"], d["probs"], d["s"], mode=mode, sigma=0.7,
        threshold=threshold, centroids_CxP=cent, centroid_valid_C=cvalid,
    )  # fmt: skip
    want = np_positive_weights(
        d["labels"], d["is_lab"], d["probs"], d["s"], mode, 0.7, threshold, cent, cvalid
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    chex.assert_shape(got, (9, 9))
    if mode != "none":  # the case must exercise off-diagonal positives
        assert np.sum(want - np.eye(9)) > 0


def test_hard_weights_threshold():
    probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    w = jit_weights(
        jnp.array([0, 0, 0]), jnp.zeros(3, bool), probs, jnp.zeros((3, 2)), mode="hard",
        threshold=0.6,
    )  # fmt: skip
    np.testing.assert_allclose(w, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_labels_of_unlabeled_rows_are_ignored(mode):
    d = make_batch(seed=3, n_lab=3)
    d2 = dict(d, labels=np.where(d["is_lab"], d["labels"], np.arange(8) % 3).astype(np.int32))
    assert not np.array_equal(d["labels"], d2["labels"])
    for batch_kw in ({}, {"centroids_CxP": jnp.ones((3, 4))}):
        w1 = jit_weights(d["labels"], d["is_lab"], d["probs"], d["s"], mode=mode, **batch_kw)
        w2 = jit_weights(d2["labels"], d["is_lab"], d["probs"], d["s"], mode=mode, **batch_kw)
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(call_loss(d, mode=mode)[0], call_loss(d2, mode=mode)[0])


def test_weights_have_no_gradient():
    d = make_batch(seed=4)
    g = jax.jit(jax.grad(lambda s, p: jit_weights(d["labels"], d["is_lab"], p, s).sum(), (0, 1)))(
        d["s"], d["probs"]
    )
    assert all(not np.any(x) for x in g)


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_contrastive_matches_loop_reference(mode):
    d = make_batch(seed=5, drop=0.35)
    assert not d["mask"].all()
    loss, valid = call_loss(d, mode=mode, temperature=0.2, sigma=0.8, threshold=0.4)
    w = np_positive_weights(d["labels"], d["is_lab"], d["probs"], d["s"], mode, 0.8, 0.4)
    want = np_contrastive(d["s"], d["z"], w, d["mask"], 0.2)
    chex.assert_shape((loss, valid), (8, 3))
    np.testing.assert_array_equal(valid, d["mask"])
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- multilabel, regression, all


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
    w = jit_weights(y, is_lab, p, s, sigma=1.0, task="multilabel")
    np.testing.assert_allclose(
        w, [[1, 0.5, 0.75 * rho], [0.5, 1, 0.55 * rho], [0.75 * rho, 0.55 * rho, 1]], rtol=1e-5
    )
    # Confidence of row 2 = mean(0.9, 0.8) = 0.85: kept at 0.85, dropped above.
    w = jit_weights(y, is_lab, p, s, sigma=1.0, threshold=0.85, task="multilabel")
    np.testing.assert_allclose(w[2], [0.75 * rho, 0.55 * rho, 1], rtol=1e-5)
    w = jit_weights(y, is_lab, p, s, sigma=1.0, threshold=0.86, task="multilabel")
    np.testing.assert_allclose(w, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]], rtol=1e-6)
    # hard: thresholded sets {0}, {0, 1}, {0}: rows 0 and 2 agree.
    w = jit_weights(y, is_lab, p, s, mode="hard", task="multilabel")
    np.testing.assert_array_equal(w, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])

    # regression, label_sigma = 1: y_0 = 1, y_1 = -1, prediction of row 2 = 0.5 (label ignored).
    y = jnp.array([1.0, -1.0, 99.0])
    pred = jnp.array([[0.0], [0.0], [0.5]])
    a01, a20, a21 = np.exp(-2.0), np.exp(-0.125), np.exp(-1.125)
    rho = (a20 * k0 + a21 * k1) / (a20 + a21)
    w = jit_weights(y, is_lab, pred, s, sigma=1.0, label_sigma=1.0, task="regression")
    want = [[1, a01, a20 * rho], [a01, 1, a21 * rho], [a20 * rho, a21 * rho, 1]]
    np.testing.assert_allclose(w, want, rtol=1e-5)
    # The threshold has no meaning (no confidence) for regression and is ignored.
    w2 = jit_weights(
        y, is_lab, pred, s, sigma=1.0, label_sigma=1.0, threshold=1.0, task="regression"
    )
    np.testing.assert_array_equal(w, w2)
    w = jit_weights(y, is_lab, pred, s, mode="hard", task="regression")
    np.testing.assert_array_equal(w, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])  # signs +, -, +


@pytest.mark.parametrize("task", ["multilabel", "regression"])
@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_task_weights_match_loop_reference(task, mode):
    d = make_task_batch(task, seed=20)
    for threshold in (0.0, 0.7):
        got = call_weights(d, mode=mode, task=task, sigma=0.7, threshold=threshold, label_sigma=0.8)
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
    w_mc = jit_weights(d["labels"], d["is_lab"], probs, d["s"], mode=mode)
    w_ml = jit_weights(
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
            call_weights(d, mode=mode, task=task), call_weights(d2, mode=mode, task=task)
        )
    np.testing.assert_array_equal(call_loss(d, task=task)[0], call_loss(d2, task=task)[0])


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

    # s is held fixed: it enters rho under stop_gradient (see test_contrastive_gradients
    # in test_losses.py).
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
    # Equal up to float32 rounding (the distances are one matmul, whose blocking, and
    # so its last bit, depends on the shape); a leak of the nan would be nan, not 1 ulp.
    assert np.isfinite(w[:7, :7]).all()
    np.testing.assert_allclose(w[:7, :7], w_keep, rtol=1e-6, atol=0)
    args = ("s", "z", "labels", "is_lab", "probs", "mask")
    loss, _ = losses.soft_pu_contrastive_loss(*(d[k] for k in args), **kw)
    loss_keep, _ = losses.soft_pu_contrastive_loss(*(keep[k] for k in args), **kw)
    np.testing.assert_allclose(loss[:7], loss_keep, rtol=1e-6)
    np.testing.assert_array_equal(loss[7], 0.0)

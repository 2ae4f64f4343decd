"""Tests for robult_jax.losses: hand values, numpy loop references, gradients, masks.

The numpy references below are written from method.md 3.2 with plain loops,
independently of the vectorised implementation.

Shape legend: B batch, M modalities, D latent width, P projection width, C classes.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from robult_jax import losses

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


def np_contrastive(s, z, w, mask, tau):
    b, m, _ = z.shape
    loss = np.zeros((b, m))
    for i in range(m):
        cands = [k for k in range(b) if mask[k, i]]
        for j in range(b):
            if not mask[j, i]:
                continue
            logits = np.array([s[j] @ z[k, i] / tau for k in cands])
            logsm = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
            ws = np.array([w[j, k] for k in cands])
            loss[j, i] = -np.sum(ws * logsm) / np.sum(ws)
    return loss


def make_batch(seed=0, b=8, m=3, p=4, c=3, n_lab=4, drop=0.3):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(b, p)).astype(np.float32)
    s /= np.linalg.norm(s, axis=-1, keepdims=True)
    z = rng.normal(size=(b, m, p)).astype(np.float32)
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    is_lab = np.arange(b) < n_lab
    labels = np.where(is_lab, rng.integers(0, c, size=b), 0).astype(np.int32)
    logits = 2 * rng.normal(size=(b, c))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    mask = rng.random((b, m)) > drop
    mask[np.arange(b), rng.integers(0, m, size=b)] = True  # at least one modality per row
    return dict(s=s, z=z, labels=labels, is_lab=is_lab, probs=probs, mask=mask)


# Jitted once per signature: eager op-by-op dispatch would dominate test time.
_jit_loss = jax.jit(losses.soft_pu_contrastive_loss, static_argnames="mode")


_jit_weights = jax.jit(losses.positive_weights, static_argnames="mode")


def call_loss(d, **kw):
    return _jit_loss(d["s"], d["z"], d["labels"], d["is_lab"], d["probs"], d["mask"], **kw)


# ----------------------------------------------------------------------------- supervised


def test_supervised_loss_hand_values():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    y = np.array([1, 0], np.int32)
    expected = [-np.log(np.exp(r[t]) / np.exp(r).sum()) for r, t in zip(logits, y, strict=True)]
    np.testing.assert_allclose(losses.supervised_loss(logits, jnp.asarray(y)), expected, rtol=1e-5)

    y_ml = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    sig = 1 / (1 + np.exp(-logits))
    bce = -(y_ml * np.log(sig) + (1 - y_ml) * np.log(1 - sig)).mean(-1)
    got = losses.supervised_loss(logits, jnp.asarray(y_ml), task="multilabel")
    np.testing.assert_allclose(got, bce, rtol=1e-5)

    got = losses.supervised_loss(
        jnp.array([[0.5], [-2.0]]), jnp.array([1.5, -1.0]), task="regression"
    )
    np.testing.assert_allclose(got, [1.0, 1.0], rtol=1e-6)


def test_supervised_loss_errors():
    with pytest.raises(ValueError, match="allowed values"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), task="ranking")
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 3\)"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="integers"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, 1\)"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.zeros(2), task="regression")
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        losses.supervised_loss(jnp.zeros((2, 3)), jnp.zeros((2, 2)), task="multilabel")


# ----------------------------------------------------------------------------- weights


def test_soft_weights_explicit_tiny_case():
    # Rows 0, 1 labeled (classes 0, 1); row 2 unlabeled, predicted class 0.
    # rho_2 = kernel to the single labeled class-0 sample: ||s2 - s0||^2 = 1, sigma = 1.
    s = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    probs = jnp.array([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]])
    w = _jit_weights(jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s, sigma=1.0)
    r = np.exp(-0.5)
    expected = [[1, 0, 0.8 * r], [0, 1, 0.2 * r], [0.8 * r, 0.2 * r, 1]]
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    # Threshold 0.9 > max p_2 = 0.8: row 2 drops out of every off-diagonal pair.
    w = _jit_weights(
        jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s, sigma=1.0, threshold=0.9
    )
    np.testing.assert_allclose(w, np.eye(3), atol=1e-7)


def test_centroid_fallback_and_conservative_zero():
    # Row 2 is unlabeled with predicted class 2, which no labeled row has.
    s = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    probs = jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0.1, 0.2, 0.7]])
    args = (jnp.array([0, 1, 0]), jnp.array([True, True, False]), probs, s)
    cent = jnp.array([[9.0, 9.0], [9.0, 9.0], [0.0, 1.0]])  # ||s2 - c2||^2 = 1
    w = _jit_weights(*args, sigma=1.0, centroids_CxP=cent)
    r = np.exp(-0.5)
    np.testing.assert_allclose(w[2], [0.1 * r, 0.2 * r, 1.0], rtol=1e-6)
    # Invalid centroid (or none at all): rho_2 = 0, so row 2 has only its diagonal.
    invalid = jnp.array([True, True, False])
    for kw in ({"centroids_CxP": cent, "centroid_valid_C": invalid}, {}):
        w = _jit_weights(*args, sigma=1.0, **kw)
        np.testing.assert_allclose(w[2], [0, 0, 1], atol=1e-7)
        np.testing.assert_allclose(w[:, 2], [0, 0, 1], atol=1e-7)


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
@pytest.mark.parametrize("threshold", [0.0, 0.6])
def test_positive_weights_match_loop_reference(mode, threshold):
    d = make_batch(seed=1, b=9, c=4, n_lab=4)
    cent = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    cvalid = np.array([True, False, True, True])
    got = _jit_weights(
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
    w = _jit_weights(
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
        w1 = _jit_weights(d["labels"], d["is_lab"], d["probs"], d["s"], mode=mode, **batch_kw)
        w2 = _jit_weights(d2["labels"], d["is_lab"], d["probs"], d["s"], mode=mode, **batch_kw)
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(call_loss(d, mode=mode)[0], call_loss(d2, mode=mode)[0])


def test_weights_have_no_gradient():
    d = make_batch(seed=4)
    g = jax.jit(jax.grad(lambda s, p: _jit_weights(d["labels"], d["is_lab"], p, s).sum(), (0, 1)))(
        d["s"], d["probs"]
    )
    assert all(not np.any(x) for x in g)


# ----------------------------------------------------------------------------- contrastive


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


def test_fully_labeled_soft_equals_supcon():
    d = make_batch(seed=6, n_lab=8, drop=0.0)
    assert len(set(d["labels"])) < 8  # some anchors have several positives
    loss, _ = call_loss(d, mode="soft", temperature=0.1)
    s, z, y = d["s"], d["z"], d["labels"]
    for i in range(3):
        logits = s @ z[:, i].T / 0.1
        logsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        for j in range(8):
            pos = y == y[j]
            np.testing.assert_allclose(loss[j, i], -logsm[j, pos].mean(), rtol=1e-5)


def test_none_equals_cross_modal_infonce():
    d = make_batch(seed=7, drop=0.0)
    loss, _ = call_loss(d, mode="none", temperature=0.5)
    for i in range(3):
        logits = d["s"] @ d["z"][:, i].T / 0.5
        want = -np.diag(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
        np.testing.assert_allclose(loss[:, i], want, rtol=1e-5)


@pytest.mark.parametrize("mode", ["soft", "none"])
def test_masked_equals_sliced(mode):
    d = make_batch(seed=8, n_lab=4, drop=0.0)
    absent = np.array([4, 6])  # unlabeled rows, so they are no rho references either
    d["mask"][absent, 1] = False
    keep = np.setdiff1d(np.arange(8), absent)
    loss, _ = call_loss(d, mode=mode, threshold=0.3)
    sliced = {k: v[keep] for k, v in d.items()}
    sliced["z"] = sliced["z"][:, 1:2]
    sliced["mask"] = np.ones((6, 1), bool)
    loss_sliced, _ = call_loss(sliced, mode=mode, threshold=0.3)
    np.testing.assert_allclose(loss[keep, 1], loss_sliced[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(loss[absent, 1], 0.0)


@pytest.mark.parametrize(("mode", "n_lab"), [("soft", 8), ("soft", 4)])
def test_contrastive_gradients(mode, n_lab):
    d = make_batch(seed=9, drop=0.3, n_lab=n_lab)
    s, z = d["s"].astype(np.float64), d["z"].astype(np.float64)
    # With unlabeled rows, "soft" weights depend on s through rho under
    # stop_gradient: finite differences in s would see that, autodiff must not,
    # so s is then held fixed and only z is checked.
    s_fixed = mode == "soft" and n_lab < 8

    @jax.jit
    def f(s, z):
        args = (d["labels"], d["is_lab"], d["probs"], d["mask"])
        loss, _ = losses.soft_pu_contrastive_loss(s, z, *args, mode=mode, temperature=0.5)
        return jnp.sum(loss)

    with jax.enable_x64(True):
        if s_fixed:
            check_grads(lambda z: f(s, z), (z,), order=1, modes=["rev"])
        else:
            check_grads(f, (s, z), order=1, modes=["rev"])


def test_finite_when_modality_nearly_all_absent():
    d = make_batch(seed=10, drop=0.0)
    d["mask"][1:, 2] = False
    d["z"][1:, 2] = np.nan  # garbage in absent rows must not leak

    def f(s, z):
        loss, _ = losses.soft_pu_contrastive_loss(
            s, z, d["labels"], d["is_lab"], d["probs"], d["mask"]
        )
        return jnp.sum(loss), loss

    (total, loss), grads = jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))(d["s"], d["z"])
    assert np.isfinite(total) and all(np.isfinite(g).all() for g in grads)
    # The only candidate of modality 2 is anchor 0 itself: loss -log 1 = 0.
    np.testing.assert_allclose(loss[:, 2], 0.0, atol=1e-6)
    assert np.all(np.asarray(loss[:, :2]) > 0)


def test_reduce_pu_losses():
    loss = jnp.array([[1.0, 2.0], [3.0, jnp.nan], [5.0, 7.0]])
    valid = jnp.array([[True, True], [True, False], [False, True]])
    l_lb, l_ulb = losses.reduce_pu_losses(loss, valid, jnp.array([True, True, False]))
    np.testing.assert_allclose([l_lb, l_ulb], [2.0, 7.0])
    l_lb, l_ulb = losses.reduce_pu_losses(loss, valid, jnp.zeros(3, bool))
    np.testing.assert_allclose([l_lb, l_ulb], [0.0, 13.0 / 4])


def test_contrastive_jit_traces_once():
    d = make_batch(seed=11)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(*args):
        return losses.soft_pu_contrastive_loss(*args, mode="soft", temperature=0.1)

    first, _ = fn(d["s"], d["z"], d["labels"], d["is_lab"], d["probs"], d["mask"])
    d2 = make_batch(seed=12)
    fn(d2["s"], d2["z"], d2["labels"], d2["is_lab"], d2["probs"], d2["mask"])
    np.testing.assert_allclose(first, call_loss(d)[0], rtol=1e-6)


def test_contrastive_errors():
    d = make_batch()
    with pytest.raises(ValueError, match="allowed values"):
        call_loss(d, mode="fuzzy")
    with pytest.raises(ValueError, match=r"mask_BxM.*\(8, 2\).*\(8, 3, 4\)"):
        call_loss(dict(d, mask=d["mask"][:, :2]))
    with pytest.raises(ValueError, match=r"z_BxMxP.*\(8, 3, 5\).*\(8, 4\)"):
        call_loss(dict(d, z=np.zeros((8, 3, 5), np.float32)))
    with pytest.raises(ValueError, match=r"labels_B.*\(7,\).*\(8, 3\)"):
        call_loss(dict(d, labels=d["labels"][:7]))
    with pytest.raises(ValueError, match=r"centroids_CxP.*\(2, 4\)"):
        call_loss(d, centroids_CxP=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="temperature"):  # Python floats are checked eagerly
        losses.soft_pu_contrastive_loss(
            *(d[k] for k in ("s", "z", "labels", "is_lab", "probs", "mask")), temperature=0.0
        )
    with pytest.raises(ValueError, match="threshold"):
        losses.positive_weights(d["labels"], d["is_lab"], d["probs"], d["s"], threshold=1.5)
    with pytest.raises(ValueError, match="centroid_valid_C was given without"):
        call_loss(d, centroid_valid_C=jnp.ones(3, bool))


# ----------------------------------------------------------------------------- reconstruction


def test_latent_reconstruction_values_and_mask():
    rng = np.random.default_rng(13)
    h_hat, h = rng.normal(size=(2, 3, 2, 5)).astype(np.float32)
    mask = np.array([[True, False], [True, True], [False, True]])
    h[~mask] = np.nan  # garbage in absent rows
    loss = losses.latent_reconstruction_loss(h_hat, h, mask)
    chex.assert_shape(loss, (3, 2))
    for b in range(3):
        for m in range(2):
            want = np.mean((h_hat[b, m] - h[b, m]) ** 2) if mask[b, m] else 0.0
            np.testing.assert_allclose(loss[b, m], want, rtol=1e-5)


def test_latent_reconstruction_gradients():
    rng = np.random.default_rng(14)
    h_hat, h = rng.normal(size=(2, 3, 2, 4))
    mask = np.array([[True, False], [True, True], [False, True]])

    def f(stop):
        return lambda a, b: jnp.sum(
            losses.latent_reconstruction_loss(a, b, mask, stop_gradient=stop)
        )

    with jax.enable_x64(True):
        check_grads(jax.jit(f(False)), (h_hat, h), order=1, modes=["rev"])
        g_hat, g_h = jax.grad(f(True), (0, 1))(h_hat, h)
    np.testing.assert_allclose(g_hat, np.where(mask[..., None], 2 * (h_hat - h) / 4, 0), rtol=1e-6)
    assert not np.any(g_h)


def test_latent_reconstruction_errors():
    with pytest.raises(ValueError, match=r"h_BxMxD.*\(2, 3, 5\).*\(2, 3, 4\)"):
        losses.latent_reconstruction_loss(
            jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)), jnp.ones((2, 3))
        )
    with pytest.raises(ValueError, match=r"mask_BxM.*\(3, 2\).*\(2, 3, 4\)"):
        losses.latent_reconstruction_loss(
            jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), jnp.ones((3, 2))
        )


# ----------------------------------------------------------------------------- other tasks
# multilabel and regression weights (docs/task_types.md), checked against loops.


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


def make_task_batch(task, seed=0, b=8, c=3, n_lab=4):
    """make_batch's shapes with multilabel (B, C) or regression (B,) labels and predictions."""
    d = make_batch(seed=seed, b=b, c=c, n_lab=n_lab)
    rng = np.random.default_rng(seed + 100)
    if task == "multilabel":
        d["labels"] = (rng.random((b, c)) < 0.5).astype(np.float32)
        d["probs"] = (1 / (1 + np.exp(-2 * rng.normal(size=(b, c))))).astype(np.float32)
    else:
        d["labels"] = rng.uniform(-3, 3, size=b).astype(np.float32)
        d["probs"] = rng.uniform(-3, 3, size=(b, 1)).astype(np.float32)
    return d


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
    w_mc = _jit_weights(d["labels"], d["is_lab"], probs, d["s"], mode=mode)
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
    with pytest.raises(ValueError, match="label_sigma"):
        losses.positive_weights(
            r["labels"], r["is_lab"], r["probs"], r["s"], task="regression", label_sigma=0.0
        )

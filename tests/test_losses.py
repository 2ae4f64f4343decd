"""Tests for robult_jax.losses: hand values, numpy loop references, gradients, masks.

The numpy reference below is written from docs/method.md 3.2 with plain loops,
independently of the vectorised implementation. The positive-weight rules
(robult_jax.task_weights) are tested in test_task_weights.py, with the batches
and jitted calls defined here.

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


def make_task_batch(task, seed=0, b=8, c=3, n_lab=4):
    """make_batch's shapes with the labels and beliefs of `task`."""
    d = make_batch(seed=seed, b=b, c=c, n_lab=n_lab)
    rng = np.random.default_rng(seed + 100)
    if task == "multilabel":
        d["labels"] = (rng.random((b, c)) < 0.5).astype(np.float32)
        d["probs"] = (1 / (1 + np.exp(-2 * rng.normal(size=(b, c))))).astype(np.float32)
    elif task == "regression":
        d["labels"] = rng.uniform(-3, 3, size=b).astype(np.float32)
        d["probs"] = rng.uniform(-3, 3, size=(b, 1)).astype(np.float32)
    return d


# Jitted once per signature (and shared with test_task_weights.py): eager op-by-op
# dispatch would dominate test time.
_jit_loss = jax.jit(losses.soft_pu_contrastive_loss, static_argnames=("mode", "task"))
jit_weights = jax.jit(losses.positive_weights, static_argnames=("mode", "task"))
_jit_weighted = jax.jit(losses.weighted_contrastive_loss)


def call_loss(d, **kw):
    return _jit_loss(d["s"], d["z"], d["labels"], d["is_lab"], d["probs"], d["mask"], **kw)


def call_weights(d, **kw):
    return jit_weights(d["labels"], d["is_lab"], d["probs"], d["s"], **kw)


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

    np.testing.assert_allclose(losses.multilabel_loss(logits, jnp.asarray(y_ml)), bce, rtol=1e-5)
    # Large |logits|: optax's log_sigmoid form stays finite where log(sigmoid) would not.
    big = losses.multilabel_loss(jnp.array([[100.0, -100.0]]), jnp.array([[0.0, 1.0]]))
    np.testing.assert_allclose(big, [100.0], rtol=1e-6)

    got = losses.supervised_loss(
        jnp.array([[0.5], [-2.0]]), jnp.array([1.5, -1.0]), task="regression"
    )
    np.testing.assert_allclose(got, [1.0, 1.0], rtol=1e-6)


def test_multiclass_out_of_range_labels():
    # As documented in multiclass_loss: y >= C gives nan (JAX's gather fills),
    # -C <= y < 0 wraps like numpy indexing; a masked mean keeps the nan out.
    logits = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.2, 0.1]])
    loss = jax.jit(losses.multiclass_loss)(logits, jnp.array([3, -1, 0]))
    assert np.isnan(loss[0])
    np.testing.assert_allclose(loss[1], losses.multiclass_loss(logits, jnp.array([0, 2, 0]))[1])
    where = jnp.array([False, True, True])
    value, grad = jax.value_and_grad(
        lambda x: losses.masked_mean(losses.multiclass_loss(x, jnp.array([3, -1, 0])), where)
    )(logits)
    assert np.isfinite(value) and np.isfinite(grad).all() and not np.any(grad[0])


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
    with pytest.raises(ValueError, match=r"logits_BxC.*\(B, C\)"):
        losses.supervised_loss(jnp.zeros(3), jnp.zeros(3, jnp.int32))


# ----------------------------------------------------------------------------- contrastive


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
    with pytest.raises(ValueError, match="centroid_valid_C was given without"):
        call_loss(d, centroid_valid_C=jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"allowed values.*multiclass"):
        call_loss(d, task="ranking")
    with pytest.raises(ValueError, match=r"w_BxB.*\(8, 7\).*\(8, 4\)"):
        losses.weighted_contrastive_loss(
            d["s"], d["z"], jnp.ones((8, 7)), d["mask"], temperature=0.1
        )
    with pytest.raises(ValueError, match="integer class labels_B"):
        call_loss(dict(d, labels=d["labels"].astype(np.float32)))


# ----------------------------------------------------------------------------- weighted loss


def test_weighted_contrastive_matches_loop_reference_for_random_w():
    d = make_batch(seed=30, drop=0.35)
    assert not d["mask"].all()
    w = np.random.default_rng(31).random((8, 8)).astype(np.float32)
    loss, valid = _jit_weighted(d["s"], d["z"], w, d["mask"], temperature=0.3)
    chex.assert_shape((loss, valid), (8, 3))
    np.testing.assert_array_equal(valid, d["mask"])
    want = np_contrastive(d["s"], d["z"], w, d["mask"], 0.3)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


def test_weighted_identity_equals_cross_modal_infonce():
    d = make_batch(seed=32, drop=0.0)
    loss, _ = _jit_weighted(d["s"], d["z"], jnp.eye(8), d["mask"], temperature=0.5)
    for i in range(3):
        logits = d["s"] @ d["z"][:, i].T / 0.5
        want = -np.diag(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
        np.testing.assert_allclose(loss[:, i], want, rtol=1e-5)


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_soft_pu_is_the_composition(task, mode):
    d = make_task_batch(task, seed=33)
    kw = dict(mode=mode, sigma=0.6, threshold=0.3, task=task, label_sigma=0.7)
    if task == "multiclass":
        kw.update(centroids_CxP=jnp.ones((3, 4)), centroid_valid_C=jnp.array([1, 0, 1], bool))
    got = call_loss(d, temperature=0.2, **kw)
    w = call_weights(d, **kw)
    want = _jit_weighted(d["s"], d["z"], w, d["mask"], temperature=0.2)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_no_gradient_flows_into_w():
    d = make_batch(seed=34)
    w = np.random.default_rng(35).random((8, 8)).astype(np.float32)

    def f(w, s):
        return jnp.sum(
            losses.weighted_contrastive_loss(s, d["z"], w, d["mask"], temperature=0.2)[0]
        )

    g_w, g_s = jax.jit(jax.grad(f, (0, 1)))(w, d["s"])
    assert not np.any(g_w) and np.any(g_s)


def test_weighted_nan_in_absent_rows_does_not_leak():
    d = make_batch(seed=36, drop=0.4)
    d["mask"][7] = False  # row 7 has no modality: s_7 and w's row and column 7 are garbage
    z_nan = np.where(d["mask"][..., None], d["z"], np.nan).astype(np.float32)
    w_clean = np.random.default_rng(37).random((8, 8)).astype(np.float32)
    w = w_clean.copy()
    w[7, :] = w[:, 7] = np.nan

    def f(s, z, clean):
        loss, _ = losses.weighted_contrastive_loss(
            s, z, w_clean if clean else w, d["mask"], temperature=0.2
        )
        return jnp.sum(loss), loss

    vg = jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True), static_argnums=2)
    s_nan = d["s"].copy()
    s_nan[7] = np.nan
    (total, loss), (g_s, g_z) = vg(s_nan, z_nan, False)
    (_, loss_clean), (g_s_clean, g_z_clean) = vg(d["s"], np.nan_to_num(z_nan), True)
    assert np.isfinite(total) and np.isfinite(g_s).all() and np.isfinite(g_z).all()
    np.testing.assert_array_equal(loss, loss_clean)
    np.testing.assert_array_equal(g_s, g_s_clean)
    np.testing.assert_array_equal(g_z, g_z_clean)
    assert not np.any(np.asarray(g_z)[~d["mask"]]) and not np.any(g_s[7])


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

"""Tests for `contrastive.FactoredWeights`: the multi-class PU weights without a B x B array.

`task_weights.multiclass_weights(..., factored=True)` returns the factor F of
w (w_jk = <F_j, F_k> off the diagonal, 1 on it) and the contrastive loss
multiplies by w through F. Here: the factor's weights equal the dense rule's
in every mode (the RBF proximity reduced in blocks of rows, with padding, and
the centroid fallback), the loss and its gradients equal the dense weights'
(junk in rows without a modality included), and the compiled program keeps
no B x B array. The train step uses this form (objective.compute_losses).

Shape legend: B batch, M modalities, P projection width, C classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_losses import make_batch

from robult_jax import contrastive, losses, tasks

MULTICLASS = tasks.get("multiclass")


def _weights(d, factored, **kw):
    args = dict(mode="soft", sigma=0.5, threshold=0.0, label_sigma=0.5, factored=factored)
    return MULTICLASS.positive_weights(
        d["labels"], d["is_lab"], d["probs"], d["s"], **{**args, **kw}
    )


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
@pytest.mark.parametrize("threshold", [0.0, 0.6])
@pytest.mark.parametrize("rows", [None, 5])
def test_factored_weights_equal_the_dense_rule(mode, threshold, rows, monkeypatch):
    if rows is not None:  # rho's kernel in blocks of 5 rows: 23 rows need padding
        monkeypatch.setattr(contrastive, "row_block", lambda b, m, backend=None: rows)
    d = make_batch(seed=4, b=23, m=2, p=5, c=4, n_lab=9)
    d["labels"][d["labels"] == 3] = 0  # no labeled row of class 3: its rows use the fallback
    c, p = d["probs"].shape[1], d["s"].shape[1]
    centroids = dict(
        centroids_CxP=np.random.default_rng(0).normal(size=(c, p)).astype(np.float32),
        centroid_valid_C=np.array([True, True, False, True]),
    )
    for extra in ({}, centroids):
        kw = dict(mode=mode, threshold=threshold, **extra)
        dense = _weights(d, False, **kw)
        factored = _weights(d, True, **kw)
        assert isinstance(factored, contrastive.FactoredWeights)
        assert factored.shape == dense.shape == (23, 23)
        np.testing.assert_allclose(factored.dense(), dense, rtol=1e-6, atol=1e-7)
        jitted = jax.jit(lambda d, kw=kw: _weights(d, True, **kw).dense())(d)
        np.testing.assert_allclose(jitted, dense, rtol=1e-6, atol=1e-7)
    # The fallback is exercised: some unlabeled row is predicted as class 3.
    pred_3 = (np.argmax(d["probs"], -1) == 3) & ~d["is_lab"]
    assert pred_3.any()


def test_other_tasks_return_the_dense_array_when_asked_for_factors():
    d = make_batch(seed=5, b=6, c=3)
    for name in ("multilabel", "regression"):
        task = tasks.get(name)
        labels = np.abs(d["probs"]).round() if name == "multilabel" else d["probs"][:, 0]
        beliefs = d["probs"] if name == "multilabel" else d["probs"][:, :1]
        kw = dict(mode="soft", sigma=0.5, threshold=0.0, label_sigma=0.5)
        dense = task.positive_weights(labels, d["is_lab"], beliefs, d["s"], **kw)
        asked = task.positive_weights(labels, d["is_lab"], beliefs, d["s"], factored=True, **kw)
        np.testing.assert_array_equal(asked, dense)


@pytest.mark.parametrize("row_block", [None, 4])
def test_loss_with_factored_weights_equals_the_dense_weights(row_block):
    d = make_batch(seed=6, b=19, m=3, p=6, c=4, n_lab=7, drop=0.4)
    mask = d["mask"].copy()
    mask[-2:] = False  # unlabeled rows without a modality: junk in s, z, beliefs and so in F
    s, z, probs = d["s"].copy(), d["z"].copy(), d["probs"].copy()
    s[-2:], z[-2:], probs[-2:] = np.nan, np.inf, np.nan
    z[~mask] = np.nan  # absent candidates
    d = {**d, "s": s, "probs": probs}
    dense = _weights(d, False)
    np.testing.assert_allclose(_weights(d, True).dense()[:-2, :-2], dense[:-2, :-2], rtol=1e-6)
    # Junk in the factor's rows without a modality, and in the dense weights' pairs.
    factored = contrastive.FactoredWeights(_weights(d, True).factor_BxC.at[-2:].set(np.nan))
    dense = dense.at[-2:].set(np.nan).at[:, -2:].set(np.nan)
    cotangent = jnp.arange(1.0, 4.0)  # a different one per modality

    def total(s, z, w):
        loss, valid = losses.weighted_contrastive_loss(
            s, z, w, mask, temperature=0.2, row_block=row_block
        )
        return jnp.sum(jnp.where(valid, loss, 0) * cotangent)

    grad = jax.jit(jax.value_and_grad(total, (0, 1)))
    got, (gs, gz) = grad(s, z, factored)
    want, (ws, wz) = grad(s, z, dense)
    assert np.isfinite(got) and np.isfinite(gs).all() and np.isfinite(gz).all()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(gs, ws, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gz, wz, rtol=1e-4, atol=1e-5)


def test_factored_weights_keep_no_b_by_b_array():
    """Weights and loss, value and gradient: less scratch than one B x B float32 array."""
    b = 2048
    d = make_batch(seed=7, b=b, m=2, p=16, c=6, n_lab=b // 4)

    def scratch(factored):
        def total(s, z):
            w = _weights({**d, "s": s}, factored)
            loss, valid = losses.weighted_contrastive_loss(s, z, w, d["mask"], temperature=0.1)
            return jnp.sum(jnp.where(valid, loss, 0))

        compiled = jax.jit(jax.grad(total, (0, 1))).lower(d["s"], d["z"]).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert scratch(True) < b * b * 4 < scratch(False)


def test_factored_weights_check_their_shape():
    d = make_batch(seed=8, b=6, m=2, p=4)
    w = contrastive.FactoredWeights(jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"factor_BxC has shape \(5, 3\), expected \(6, \?\)"):
        losses.weighted_contrastive_loss(d["s"], d["z"], w, d["mask"], temperature=0.1)

"""Tests for robult_jax.contrastive: the weighted contrastive loss's own backward pass.

test_losses.py and test_fuzz_losses.py check the loss through
`losses.weighted_contrastive_loss` against numpy loops, finite differences and
junk inputs at small batches, where the whole batch is one block. Here: the
same values and gradients in blocks of anchor rows (with padding), against
automatic differentiation of the textbook formula; the temperature's
gradient; and that no M x B x B tensor is kept.

Shape legend: B batch, M modalities, P projection width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_losses import make_batch

from robult_jax import contrastive, losses


def autodiff_reference(s_BxP, z_BxMxP, w_BxB, mask_BxM, tau):
    """docs/method.md 3.2 as automatic differentiation sees it: M x B x B log-softmax."""
    logits_MxBxB = jnp.einsum("jp,kmp->mjk", s_BxP, z_BxMxP) / tau
    cand_Mx1xB = mask_BxM.T[:, None, :]
    logsm = jax.nn.log_softmax(jnp.where(cand_Mx1xB, logits_MxBxB, -1e9), axis=-1)
    wm_MxBxB = jnp.where(cand_Mx1xB & mask_BxM.T[:, :, None], w_BxB[None], 0)
    loss_MxB = -jnp.sum(wm_MxBxB * jnp.where(cand_Mx1xB, logsm, 0), -1) / jnp.maximum(
        wm_MxBxB.sum(-1), 1e-30
    )
    return jnp.where(mask_BxM.T, loss_MxB, 0).T


def _batch(seed, b, m, p):
    d = make_batch(seed=seed, b=b, m=m, p=p, drop=0.4)
    w = np.random.default_rng(seed).random((b, b)).astype(np.float32)
    np.fill_diagonal(w, 1.0)
    return d["s"], d["z"], w, d["mask"]


def _loss_and_grads(fn, s, z, w, mask, tau):
    weights = jnp.arange(1.0, z.shape[1] + 1)  # a different cotangent per modality

    def total(s, z, tau):
        loss_BxM = fn(s, z, w, mask, tau)
        return jnp.sum(loss_BxM * weights), loss_BxM

    return jax.jit(jax.value_and_grad(total, (0, 1, 2), has_aux=True))(s, z, tau)


@pytest.mark.parametrize("row_block", [None, 1, 5, 8, 64])
def test_blocks_of_rows_equal_automatic_differentiation(row_block):
    s, z, w, mask = _batch(seed=1, b=21, m=3, p=6)  # 21 rows: blocks of 5 and 8 need padding

    def kernel(s, z, w, mask, tau):
        kw = dict(temperature=tau, row_block=row_block)
        return losses.weighted_contrastive_loss(s, z, w, mask, **kw)[0]

    (_, got), got_grads = _loss_and_grads(kernel, s, z, w, mask, 0.3)
    (_, want), want_grads = _loss_and_grads(autodiff_reference, s, z, w, mask, 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for g, g_want in zip(got_grads, want_grads, strict=True):  # s, z and the temperature
        np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-5)


def test_gradients_in_blocks_match_finite_differences():
    s, z, w, mask = (
        x.astype(np.float64) if x.dtype == np.float32 else x for x in _batch(2, 11, 2, 4)
    )

    def f(s, z, tau):
        loss, _ = losses.weighted_contrastive_loss(s, z, w, mask, temperature=tau, row_block=4)
        return jnp.sum(loss * jnp.array([1.0, -2.0]))

    with jax.enable_x64(True):
        check_grads(f, (s, z, 0.4), order=1, modes=["rev"])


def test_row_block_keeps_blocks_in_cache_on_cpu_only():
    assert contrastive.row_block(8192, 2, "cpu") == 128  # at least 128 rows
    assert contrastive.row_block(2048, 4, "cpu") == 128
    assert contrastive.row_block(2048, 2, "cpu") == 128  # 2 MiB of logits
    assert contrastive.row_block(1024, 2, "cpu") == 256
    assert contrastive.row_block(512, 2, "cpu") == 512  # M x B x B fits: one block
    assert contrastive.row_block(100, 8, "cpu") == 100
    assert contrastive.row_block(16384, 2, "gpu") == contrastive.row_block(16384, 2, "tpu") == 16384
    for b, m in [(1000, 3), (5000, 2), (3000, 7)]:
        rows = contrastive.row_block(b, m, "cpu")
        assert rows * b * m <= 2**19 or rows == 128


def test_no_m_by_b_by_b_tensor_is_kept():
    """The compiled value and gradient need less scratch memory than one M x B x B tensor."""
    b, m, p = 1024, 2, 16
    s, z, w, mask = _batch(seed=3, b=b, m=m, p=p)

    def total(s, z, fn):
        return jnp.sum(fn(s, z, w, mask, 0.1))

    def kernel(s, z, w, mask, tau):
        return losses.weighted_contrastive_loss(s, z, w, mask, temperature=tau)[0]

    def scratch(fn):
        compiled = jax.jit(jax.grad(lambda s, z: total(s, z, fn), (0, 1))).lower(s, z).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    one_tensor = m * b * b * 4
    assert scratch(kernel) < one_tensor < scratch(autodiff_reference)

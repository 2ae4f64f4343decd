"""Tests for robult_jax.sequence_encoders: shapes, padding, validity channel, empty rows.

Shape legend: B batch, T time steps, F features (validity channel excluded), D latent.
Each encoder compiles once: one jitted function returns the outputs and the
gradients, and every test of that encoder calls it with the same shapes.
"""

import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robult_jax import encoders as enc
from robult_jax import sequence_encoders as seq

B, T, F, D = 4, 6, 3, 5
LENGTHS_B = np.array([6, 3, 1, 0])  # full, partial, one step, absent (all padding)


def make_sequences(lengths_B=LENGTHS_B, seed=0):
    """(B, T, F + 1) right-padded sequences: random valid steps, zeros after, validity last."""
    rng = np.random.default_rng(seed)
    valid_BxT = np.arange(T)[None, :] < np.asarray(lengths_B)[:, None]
    features_BxTxF = rng.normal(size=(len(lengths_B), T, F)) * valid_BxT[..., None]
    return np.concatenate([features_BxTxF, valid_BxT[..., None]], axis=-1).astype(np.float32)


@functools.cache
def setup(name):
    """(params, jitted f(params, x) -> (out_BxD, (grad_params, grad_x))) for one encoder."""
    widths = types.SimpleNamespace(
        latent_dim=D,
        hidden_dim=8,
        dropout_rate=0.0,
        cnn1d_features=(4,),
        cnn2d_features=(4,),
        seq_width=8,
        seq_layers=2,  # two layers: exercises stacking at no extra compile
        num_heads=2,
        compute_dtype="float32",
    )
    module = enc.make_encoder(name, widths)
    x = make_sequences()
    # Random params without compiling init (compiles are the slow part on CPU).
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(s.dtype), shapes)
    weights_BxD = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)

    @jax.jit
    def forward_and_grads(params, x_BxTxF1):
        def loss(params, x_BxTxF1):
            out_BxD = module.apply({"params": params}, x_BxTxF1)
            return jnp.sum(out_BxD * weights_BxD), out_BxD

        grad_fn = jax.grad(loss, argnums=(0, 1), has_aux=True)
        grads, out_BxD = grad_fn(params, x_BxTxF1)
        return out_BxD, grads

    return params, forward_and_grads


NAMES = seq.SEQUENCE_ENCODER_NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_finite_including_all_padding_row(name):
    params, f = setup(name)
    out_BxD, (grad_params, grad_x) = f(params, make_sequences())
    chex.assert_shape(out_BxD, (B, D))
    assert np.all(np.isfinite(out_BxD))
    for g in jax.tree.leaves(grad_params):
        assert np.all(np.isfinite(g))
    assert np.all(np.isfinite(grad_x))
    # The gradient is not trivially zero: parameters do get a signal.
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grad_params)) > 0
    # Only valid steps' features receive gradient; the all-padding row receives none.
    valid_BxT = np.arange(T)[None, :] < LENGTHS_B[:, None]
    grad_features = np.asarray(grad_x)[..., :-1]
    assert np.all(grad_features[~valid_BxT] == 0.0)
    assert np.all(np.abs(grad_features[valid_BxT]).sum(-1) > 0)


@pytest.mark.parametrize("name", NAMES)
def test_values_at_padded_steps_do_not_matter(name):
    params, f = setup(name)
    x = make_sequences()
    out_BxD, _ = f(params, x)
    junk = x.copy()
    padded_BxT = junk[..., -1] == 0.0
    rng = np.random.default_rng(5)
    junk[..., :-1][padded_BxT] = 100.0 * rng.normal(size=(padded_BxT.sum(), F))
    junk[1, 4, 0] = np.nan  # a NaN left at a padded step by a loader must not leak
    out_junk, (grad_params, _) = f(params, junk)
    np.testing.assert_allclose(out_junk, out_BxD, atol=1e-5)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad_params))
    # An all-padding row (absent modality) gives the same output whatever it holds.
    assert np.all(np.isfinite(out_junk[3]))

    # Sanity check that the comparison can fail: a valid step's change is seen.
    changed = x.copy()
    changed[1, 2, 0] += 1.0
    out_changed, _ = f(params, changed)
    assert not np.allclose(out_changed[1], out_BxD[1], atol=1e-4)
    np.testing.assert_allclose(out_changed[0], out_BxD[0], atol=1e-6)  # rows independent


@pytest.mark.parametrize("name", NAMES)
def test_validity_channel_is_respected(name):
    params, f = setup(name)
    x = make_sequences(lengths_B=[6, 6, 6, 6])
    # Same feature values everywhere; only the validity channel marks shorter sequences.
    shorter = x.copy()
    for row, length in enumerate([6, 5, 3, 0]):
        shorter[row, length:, -1] = 0.0
    out_full, _ = f(params, x)
    out_shorter, _ = f(params, shorter)
    np.testing.assert_allclose(out_shorter[0], out_full[0], atol=1e-6)
    for row in (1, 2, 3):
        assert not np.allclose(out_shorter[row], out_full[row], atol=1e-4), row
    # Zeroing the features beyond the new lengths is what the mask already implies.
    explicit = make_sequences(lengths_B=[6, 5, 3, 0])
    explicit[..., :-1] = np.where(explicit[..., -1:] > 0, x[..., :-1], 0.0)
    out_explicit, _ = f(params, explicit)
    np.testing.assert_allclose(out_explicit, out_shorter, atol=1e-5)


def test_split_validity_and_masked_mean():
    x = make_sequences()
    features_BxTxF, valid_BxT = seq.split_validity(jnp.asarray(x))
    chex.assert_shape(features_BxTxF, (B, T, F))
    np.testing.assert_array_equal(valid_BxT.sum(axis=1), LENGTHS_B)
    mean_BxF = seq.masked_mean_over_time(features_BxTxF, valid_BxT)
    np.testing.assert_allclose(mean_BxF[1], x[1, :3, :-1].mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(mean_BxF[3], np.zeros(F))  # no valid step: zeros, not NaN
    with pytest.raises(ValueError, match=r"\(B, T, F \+ 1\)"):
        seq.split_validity(jnp.zeros((B, T, 1)))


@pytest.mark.parametrize("name", NAMES)
def test_absent_row_encodes_to_the_output_bias(name):
    # An all-padding row carries no information, so its h_i must not depend on
    # anything but the parameters: the pooled / last state is exactly zero.
    params, f = setup(name)
    out_BxD, _ = f(params, make_sequences())
    np.testing.assert_allclose(out_BxD[3], params["output"]["bias"], atol=1e-6)
    assert not np.allclose(out_BxD[2], params["output"]["bias"], atol=1e-4)


def test_transformer_valid_steps_do_not_attend_to_padding():
    # Padded steps still hold a positional embedding; with the key mask, changing
    # the embedding of positions 3.. leaves every row of length <= 3 unchanged.
    params, f = setup("transformer")
    x = make_sequences()
    out_BxD, _ = f(params, x)
    pos_TxW = np.asarray(params["pos_embed_TxW"]).copy()
    # Random, not a constant shift: LayerNorm would erase a constant per step.
    pos_TxW[3:] += 3.0 * np.random.default_rng(2).normal(size=pos_TxW[3:].shape)
    moved = dict(params, pos_embed_TxW=jnp.asarray(pos_TxW))
    out_moved, _ = f(moved, x)
    np.testing.assert_allclose(out_moved[1:], out_BxD[1:], atol=1e-5)  # lengths 3, 1, 0
    assert not np.allclose(out_moved[0], out_BxD[0], atol=1e-4)  # length 6 sees them


def test_gru_reads_the_state_at_the_last_valid_step():
    # Appending padding steps changes nothing (the GRU has no T-sized parameter).
    # One extra compile (T + 2), so only here.
    params, f = setup("gru")
    x = make_sequences()
    out_BxD, _ = f(params, x)
    longer = np.pad(x, ((0, 0), (0, 2), (0, 0)))
    out_longer, _ = f(params, longer)
    np.testing.assert_allclose(out_longer, out_BxD, atol=1e-5)

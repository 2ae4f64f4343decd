"""`fused.layer_norm_gelu` gives flax's LayerNorm + GELU values, and their gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from robult_jax import encoders, fused


def _reference(x, scale, bias):
    """What the encoders computed before: flax's modules, differentiated automatically."""
    ln = nn.LayerNorm(dtype=x.dtype)
    y = ln.apply({"params": {"scale": scale, "bias": bias}}, x)
    return nn.gelu(y)


def _inputs(shape, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape) * 3 + 1, dtype)  # off-centre, not unit scale
    f = shape[-1]
    scale = jnp.asarray(1 + 0.3 * rng.normal(size=f), jnp.float32)
    bias = jnp.asarray(0.2 * rng.normal(size=f), jnp.float32)
    return x, scale, bias


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 6), (2, 3, 4, 5)])
def test_values_and_gradients_equal_flax(shape):
    x, scale, bias = _inputs(shape)
    np.testing.assert_array_equal(fused.layer_norm_gelu(x, scale, bias), _reference(x, scale, bias))
    # A loss that weighs every output differently, so no gradient term cancels.
    w = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    grads = [
        jax.grad(lambda *a, f=f: jnp.sum(w * jnp.sin(f(*a))), argnums=(0, 1, 2))(x, scale, bias)
        for f in (fused.layer_norm_gelu, _reference)
    ]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_gradients_match_finite_differences():
    with jax.enable_x64():
        x, scale, bias = (a.astype(jnp.float64) for a in _inputs((3, 4, 6)))
        check_grads(fused.layer_norm_gelu, (x, scale, bias), order=1, modes=["rev"])


def test_constant_rows_and_jit():
    """A constant row (variance 0, e.g. a zeroed absent modality) stays finite, gradients too."""
    x, scale, bias = _inputs((3, 8))
    x = x.at[1].set(2.5)
    out, grads = jax.jit(jax.value_and_grad(lambda *a: fused.layer_norm_gelu(*a).sum(), (0, 1, 2)))(
        x, scale, bias
    )
    assert np.isfinite(out) and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(fused.layer_norm_gelu(x, scale, bias), _reference(x, scale, bias))


def test_bfloat16_keeps_dtype_and_is_close():
    x, scale, bias = _inputs((4, 5, 16))
    out = fused.layer_norm_gelu(x.astype(jnp.bfloat16), scale, bias)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), _reference(x, scale, bias), atol=0.05)
    g = jax.grad(lambda x: fused.layer_norm_gelu(x, scale, bias).astype(jnp.float32).sum())(
        x.astype(jnp.bfloat16)
    )
    assert g.dtype == jnp.bfloat16


class _FlaxConvEncoder(nn.Module):
    """encoders.ConvEncoder as written with flax's LayerNorm and gelu."""

    @nn.compact
    def __call__(self, x):
        for width in (4, 6):
            x = nn.gelu(nn.LayerNorm()(nn.Conv(width, (5,), strides=2, padding="SAME")(x)))
        return nn.Dense(3)(x.mean(axis=1))


def test_conv_encoder_keeps_its_parameters_and_outputs():
    """Same parameter tree, init values and outputs as the flax LayerNorm + gelu blocks,
    so checkpoints written before `fused` existed load and predict unchanged."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 20, 3)), jnp.float32)
    ours = encoders.ConvEncoder(3, (4, 6), 0.0, (5,))
    params = ours.init(jax.random.key(0), x)
    reference = _FlaxConvEncoder().init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    params = jax.tree.map(lambda p: p + 0.1, params)  # LayerNorm scale != 1, bias != 0
    np.testing.assert_allclose(
        ours.apply(params, x), _FlaxConvEncoder().apply(params, x), rtol=1e-6, atol=1e-6
    )


def test_gradients_under_shard_map_equal_the_global_ones():
    """Rows split over devices, parameters replicated: the parameters' gradients are
    the sums over every device's rows, as autodiff of flax's LayerNorm gives them."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    x, scale, bias = _inputs((4 * len(jax.devices()), 6))

    def loss(x, scale, bias):
        return jnp.sum(jnp.sin(fused.layer_norm_gelu(x, scale, bias)))

    def per_device(x, scale, bias):
        grads = jax.grad(lambda s, b: loss(x, s, b), argnums=(0, 1))(scale, bias)
        return grads, jax.grad(loss)(x, scale, bias)

    mapped = jax.shard_map(
        per_device, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=((P(), P()), P("data"))
    )
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    (d_scale, d_bias), d_x = jax.jit(mapped)(x_sharded, scale, bias)
    want = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)
    for got, expected in zip((d_x, d_scale, d_bias), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
